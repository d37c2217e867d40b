"""The plugin contract: every hook gpuforge calls, typed and documented.

Each hook receives a ``register`` callback and calls it once per thing it
contributes; nothing is returned. What is registered is a small dataclass from
:mod:`gpuforge.core.specs` holding metadata and ``"module:attr"`` strings, so
registering imports nothing heavy. Every hook is called once per plugin, in its
own ``try``: a hook that raises marks only its plugin as failed.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    from gpuforge.core.specs import (
        BenchmarkSpec,
        CommandSpec,
        DemoSpec,
        DoctorCheck,
        EstimateSpec,
        KernelSpec,
        ProfileDir,
        TuningSpec,
    )

PROJECT = "gpuforge"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_commands(register: Callable[["CommandSpec"], None]) -> None:
    """Add command groups, mounted as ``gpuforge <name> ...``."""


@hookspec
def register_kernels(register: Callable[["KernelSpec"], None]) -> None:
    """Add kernels (a reference and faster backends) to the kernel registry."""


@hookspec
def register_hardware(register: Callable[["ProfileDir | TuningSpec"], None]) -> None:
    """Add GPU profile folders (:class:`ProfileDir`) and per-GPU launch tuning (:class:`TuningSpec`)."""


@hookspec
def register_benchmarks(register: Callable[["BenchmarkSpec"], None]) -> None:
    """Add benchmarks run by ``gpuforge bench``."""


@hookspec
def register_demos(register: Callable[["DemoSpec"], None]) -> None:
    """Add demos run by ``gpuforge demo`` on built-in data."""


@hookspec
def register_estimates(register: Callable[["EstimateSpec"], None]) -> None:
    """Add resource estimates (memory, FLOPs, bytes) used by ``gpuforge plan``."""


@hookspec
def register_doctor_checks(register: Callable[["DoctorCheck"], None]) -> None:
    """Add checks shown by ``gpuforge doctor``."""


HOOKS: dict[str, str] = {
    "register_commands": "CommandSpec",
    "register_kernels": "KernelSpec",
    "register_hardware": "ProfileDir | TuningSpec",
    "register_benchmarks": "BenchmarkSpec",
    "register_demos": "DemoSpec",
    "register_estimates": "EstimateSpec",
    "register_doctor_checks": "DoctorCheck",
}
"""Hook name -> the spec type(s) its ``register`` callback accepts."""
