"""Hook implementations of the fraud plugin; imports nothing heavy."""
from __future__ import annotations

from pathlib import Path

from gpuforge.core.hookspecs import hookimpl
from gpuforge.core.specs import (BenchmarkSpec, CommandSpec, DemoSpec, EstimateSpec, KernelSpec,
                                 TuningSpec, three_backends)

_PKG = "gpuforge.plugins.fraud"

_KERNELS = {
    "core_distances": ("core_cases", "distance of each row to its min_samples-th nearest other row "
                       "(hdbscan convention), from the tiled pairwise top-k", {"rtol": 1e-5, "atol": 1e-5}),
    "knn_min_edge": ("min_edge_cases", "Boruvka step: lightest mutual-reachability kNN edge leaving each "
                     "component (ties to the smaller point)", {}),
    "union_find_merge": ("merge_cases", "merge components joined by edges; label = smallest representative", {}),
}


@hookimpl
def register_commands(register):
    register(CommandSpec("fraud", f"{_PKG}.cli:app",
                         "Behavioural sequence clustering for fraud (FinDeepBehaviorCluster) with a fast HDBSCAN."))


@hookimpl
def register_kernels(register):
    for name, (cases, summary, extra) in _KERNELS.items():
        register(KernelSpec(
            name=f"fraud.{name}", summary=summary,
            backends=three_backends(f"{_PKG}.kernels", name),
            cases=f"{_PKG}.kernels:{cases}",
            ptx=f"{_PKG}.kernels_cuda:{name}_ptx",
            **extra,
        ))


@hookimpl
def register_hardware(register):
    register(TuningSpec("fraud", str(Path(__file__).with_name("tuning.toml"))))


@hookimpl
def register_benchmarks(register):
    register(BenchmarkSpec("fraud", f"{_PKG}.bench:run",
                           "HDBSCAN exact/approx vs hdbscan and fast_hdbscan; 1M x 8 approx"))


@hookimpl
def register_demos(register):
    register(DemoSpec("fraud", f"{_PKG}.demo:run",
                      "simulate click streams, cluster sessions, explain the risky clusters", order=60))


@hookimpl
def register_estimates(register):
    register(EstimateSpec("fraud", "cluster", f"{_PKG}.estimate:estimate_cluster",
                          "memory and work of `fraud cluster` for N rows x D columns"))
