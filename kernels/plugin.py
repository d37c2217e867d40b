"""The built-in ``kernels`` plugin: registers the shared kernel primitives, their
tuning, their benchmarks and the core demo's kernel check."""
from __future__ import annotations

from pathlib import Path

from gpuforge.core.hookspecs import hookimpl
from gpuforge.core.specs import BenchmarkSpec, DemoSpec, TuningSpec


@hookimpl
def register_kernels(register):
    from gpuforge.kernels.specs import kernel_specs

    for spec in kernel_specs():
        register(spec)


@hookimpl
def register_hardware(register):
    register(TuningSpec("kernels", str(Path(__file__).with_name("tuning.toml"))))


@hookimpl
def register_benchmarks(register):
    register(BenchmarkSpec("primitives", "gpuforge.kernels.bench:run", "Shared primitives: numba-cpu against the NumPy reference."))


@hookimpl
def register_demos(register):
    register(DemoSpec("kernels", "gpuforge.kernels.demo:run", "Every shared kernel checked against its reference, and a small benchmark.", order=1))
