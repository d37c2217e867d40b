"""The built-in ``hardware`` plugin: the ``hw`` command group, the top-level ``plan``
command, the built-in GPU profiles, the microbenchmark kernels of ``hw bench`` and the
core's own demo (detection, CPU profile)."""
from __future__ import annotations

from pathlib import Path

from gpuforge.core.hookspecs import hookimpl
from gpuforge.core.specs import BenchmarkSpec, CommandSpec, DemoSpec, DoctorCheck, KernelSpec, TuningSpec

_MK = "gpuforge.hardware.microkernels"


@hookimpl
def register_commands(register):
    register(CommandSpec("hw", "gpuforge.hardware.cli:app", "GPU profiles, detection, roofline, planning and device benchmarks."))
    register(CommandSpec("plan", "gpuforge.hardware.plan_cli:app",
                         "Will PLUGIN VERB fit, how long, what does it cost: per GPU profile (gpuforge plan PLUGIN VERB ...)."))


@hookimpl
def register_kernels(register):
    for name, summary, extra in (
        ("copy", "STREAM copy: a float32 copy of x (hw bench memory bandwidth)", {}),
        ("triad", "STREAM triad: b + scalar * c in float32 (hw bench memory bandwidth)", {"rtol": 1e-5, "atol": 1e-5}),
        ("fma", "iters x (y = y * a + b) from y = x in float32 (hw bench FP32 rate)", {"rtol": 1e-4, "atol": 1e-5}),
    ):
        register(KernelSpec(
            name=f"hardware.{name}", summary=summary,
            backends={"reference": f"{_MK}:{name}", "numba-cpu": f"{_MK}:{name}_cpu",
                      "numba-cuda": f"{_MK}_cuda:{name}_cuda"},
            cases=f"{_MK}:{name}_cases", ptx=f"{_MK}_cuda:{name}_ptx", **extra,
        ))


@hookimpl
def register_hardware(register):
    register(TuningSpec("hardware", str(Path(__file__).with_name("tuning.toml"))))


@hookimpl
def register_benchmarks(register):
    register(BenchmarkSpec("microkernels", "gpuforge.hardware.bench:run_benchmarks",
                           "hw bench kernels (copy, triad, fma): numba-cpu against the NumPy reference."))


@hookimpl
def register_demos(register):
    register(DemoSpec("hardware", "gpuforge.hardware.demo:run", "What this machine is: GPUs found, the CPU's measured profile.", order=0))


@hookimpl
def register_doctor_checks(register):
    register(DoctorCheck("hardware profiles", "gpuforge.hardware.demo:doctor_profiles"))
