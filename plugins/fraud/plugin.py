"""Hook implementations of the fraud plugin; imports nothing heavy."""
from __future__ import annotations

from pathlib import Path

from gpuforge.core.hookspecs import hookimpl
from gpuforge.core.specs import (BenchmarkSpec, CommandSpec, DemoSpec, EstimateSpec, KernelSpec,
                                 TuningSpec, three_backends)

_PKG = "gpuforge.plugins.fraud"

_HDB = f"{_PKG}.hdbscan"

# "<module>:<name>" of each reference -> summary. The CPU backend is ``<module>:<name>_cpu``,
# the CUDA one ``<module>_cuda:<name>_cuda`` (as three_backends names them), the cases
# ``<module>:<name>_cases`` and the PTX list ``<module>_cuda:<name>_ptx``.
_KERNELS = {
    "knn:knn": "exact k nearest other rows (squared distances, ties to the smaller row); core distances",
    "approx:knn_local": "approx mode: k nearest among the rows of each row's neighbour cells",
    "approx:knn_refine": "approx mode: one NN-descent join (k nearest among the lists of the listed rows)",
    "kruskal:knn_forest": "minimum spanning forest of the kNN mutual-reachability graph (edge order: w2, min row, max row)",
    "boruvka:mst": "exact minimum spanning tree of the mutual-reachability graph (Boruvka), containing a given forest",
    "prim:prim": "Prim's MST with the hdbscan library's tie rules (exact mode above 60 columns)",
}


@hookimpl
def register_commands(register):
    register(CommandSpec("fraud", f"{_PKG}.cli:app",
                         "Behavioural sequence clustering for fraud (FinDeepBehaviorCluster) with a fast HDBSCAN."))


@hookimpl
def register_kernels(register):
    for reference, summary in _KERNELS.items():
        module, name = reference.split(":")
        register(KernelSpec(
            name=f"fraud.{name}", summary=summary,
            backends=three_backends(f"{_HDB}.{module}", name),
            cases=f"{_HDB}.{module}:{name}_cases",
            ptx=f"{_HDB}.{module}_cuda:{name}_ptx",
            rtol=0.0, atol=0.0,  # every backend computes the same bits
        ))


@hookimpl
def register_hardware(register):
    register(TuningSpec("fraud", str(Path(__file__).with_name("tuning.toml"))))


@hookimpl
def register_benchmarks(register):
    register(BenchmarkSpec("fraud", f"{_PKG}.bench:run",
                           "HDBSCAN exact/approx vs hdbscan and fast_hdbscan; 1M x 8 approx"))
    register(BenchmarkSpec("scaling", f"{_PKG}.bench_scaling:run",
                           "approx HDBSCAN on a local Dask cluster of 1, 2, ... workers vs one process"))
    register(BenchmarkSpec("fraud.scale", f"{_PKG}.scale_bench:run",
                           "simulate, features, embed and approx cluster on 100k/1M/10M sessions: peak RSS and time",
                           suite="scale"))


@hookimpl
def register_demos(register):
    register(DemoSpec("fraud", f"{_PKG}.demo:run",
                      "simulate click streams, cluster sessions, explain the risky clusters", order=60))


@hookimpl
def register_estimates(register):
    register(EstimateSpec("fraud", "cluster", f"{_PKG}.estimate:estimate_cluster",
                          "memory and work of `fraud cluster` for N rows x D columns"))
