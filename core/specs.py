"""What a plugin hands to the core through its hooks.

Every spec is a small frozen dataclass holding metadata and ``"module:attr"``
strings; nothing heavy is imported until a command resolves one of them
(:func:`gpuforge.core.lazy.resolve`). The plugin manager checks each object
with ``isinstance`` when it is registered.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

BACKENDS = ("reference", "numba-cpu", "numba-cuda")
"""The built-in kernel backends, slowest and most obviously correct first. Plugins add
more with :class:`BackendSpec`; ``gpuforge.core.kernels.known_backends()`` lists all."""


@dataclass(frozen=True)
class CommandSpec:
    """A typer sub-app mounted as ``gpuforge <name> ...``."""

    name: str
    """The command group's name on the command line."""
    app: str
    """``"module:attr"`` of a ``typer.Typer`` instance."""
    help: str = ""
    """One line shown in ``gpuforge --help`` without importing ``app``."""
    aliases: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)
    """Old names scripts may still call, each for a command of this group:
    ``{"lora": "train"}`` makes ``gpuforge finetune lora`` and ``gpuforge finetune train``
    the same command, whichever of the two the app defines; the value is the canonical
    name (DESIGN.md's shared verbs), the key is kept working and listed as its alias."""


@dataclass(frozen=True)
class KernelCase:
    """One generated input for the conformance harness."""

    name: str
    args: tuple = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    simulator: bool = True
    """Small enough for Numba's CUDA simulator (about 4k elements for kernels
    that use ``syncthreads``)."""


@dataclass(frozen=True)
class KernelSpec:
    """One kernel: one name, a reference, and faster backends of the same function.

    Every backend callable takes the same arguments as the reference and returns
    the same result (NumPy arrays, or a tuple of them). ``numba-cuda`` callables
    accept host arrays (and return host arrays) as well as device arrays or CUDA
    torch tensors (and then return device data).
    """

    name: str
    """``"<plugin>.<kernel>"``, e.g. ``"quantize.nf4_encode"``."""
    summary: str
    backends: Mapping[str, str]
    """backend name -> ``"module:attr"``; must contain ``"reference"``."""
    cases: str | None = None
    """``"module:attr"`` of a callable returning an iterable of :class:`KernelCase`."""
    ptx: str | None = None
    """``"module:attr"`` of a callable returning ``[(python_function, signature), ...]``:
    the raw CUDA kernels and the Numba signatures to compile them to PTX with. An entry
    may carry a third item, a dict for ``gpuforge kernels inspect``: ``threads_per_block``
    when the wrapper launches that kernel with a fixed block size rather than the tuned
    one, ``variant`` to label one of several compiled variants."""
    rtol: float = 1e-6
    atol: float = 1e-6
    """Tolerances for floating outputs; integer and boolean outputs must match exactly."""
    compare: str | None = None
    """Optional ``"module:attr"`` comparator ``(expected, actual, case) -> None`` that
    raises ``AssertionError``; replaces the default element-wise comparison."""


@dataclass(frozen=True)
class BackendSpec:
    """A kernel backend a plugin adds (a name other plugins' kernels can be implemented
    for), registered through ``register_kernels``. The core's own are ``reference``,
    ``numba-cpu`` and ``numba-cuda``."""

    name: str
    device: str
    """Where its data lives: ``cpu``, ``cuda`` or ``any``."""
    summary: str = ""
    priority: int = 0
    """Automatic choice takes the available backend of the data's device with the highest
    priority (numba-cpu and numba-cuda have 10; reference is only the fallback); a tie
    keeps the built-in one. ``--backend NAME`` picks it explicitly whatever its priority."""
    available: str | None = None
    """``"module:attr"`` of ``() -> (bool, reason)``: whether it can run here (default: yes)."""


@dataclass(frozen=True)
class KernelImpl:
    """One backend's implementation of a kernel, registered on its own: a plugin adds a
    backend to any kernel (its own or another plugin's) without touching its KernelSpec.
    It must take the reference's arguments and return the same result."""

    kernel: str
    backend: str
    impl: str
    """``"module:attr"``."""


BUILTIN_BACKENDS = (
    BackendSpec("reference", "any", "plain NumPy/torch: the specification", priority=0),
    BackendSpec("numba-cpu", "cpu", "Numba @njit(parallel=True) on the CPU", priority=10),
    BackendSpec("numba-cuda", "cuda", "numba.cuda kernels on NVIDIA GPUs (or Numba's simulator)", priority=10),
)


def three_backends(module: str, function: str, cuda_module: str | None = None) -> dict[str, str]:
    """:attr:`KernelSpec.backends` by the naming convention the built-in plugins follow:
    the reference ``module:function``, numba-cpu ``module:function_cpu``, numba-cuda
    ``cuda_module:function_cuda`` (``cuda_module`` defaults to ``module + "_cuda"``)."""
    cuda_module = cuda_module or f"{module}_cuda"
    return {"reference": f"{module}:{function}", "numba-cpu": f"{module}:{function}_cpu",
            "numba-cuda": f"{cuda_module}:{function}_cuda"}


@dataclass(frozen=True)
class TuningSpec:
    """Where a plugin's per-GPU launch parameters live."""

    plugin: str
    path: str
    """Absolute path of the plugin's ``tuning.toml``."""


@dataclass(frozen=True)
class ProfileDir:
    """A folder of GPU profile TOML files a plugin contributes."""

    path: str


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark run by ``gpuforge bench [PLUGIN]``.

    ``run`` is ``"module:attr"`` of ``run(ctx) -> list[dict]``; each dict is one row
    with at least ``name``, ``backend`` (or ``impl``), ``seconds`` and, where a
    baseline was run in the same process, ``baseline`` and ``ratio``.
    """

    name: str
    run: str
    summary: str = ""
    suite: str = "speed"
    """``speed``: run by ``gpuforge bench [PLUGIN]`` (times and ratios). ``scale``: run only
    by ``gpuforge bench scale`` (peak memory and time against input size; rows also carry
    ``series``, ``size`` and ``peak_rss_bytes``, see :func:`gpuforge.core.bench.measure_command`)."""


@dataclass(frozen=True)
class DemoSpec:
    """A demo run by ``gpuforge demo``: ``run(ctx, out_dir) -> str`` returns markdown."""

    name: str
    run: str
    summary: str = ""
    order: int = 100


@dataclass(frozen=True)
class EstimateSpec:
    """A resource estimate for ``gpuforge plan PLUGIN VERB ...``.

    ``run`` is ``"module:attr"`` of ``estimate(args: list[str]) -> Estimate``
    (see :mod:`gpuforge.hardware.estimates`).
    """

    plugin: str
    verb: str
    run: str
    summary: str = ""


@dataclass(frozen=True)
class DoctorCheck:
    """A check shown by ``gpuforge doctor``: ``run() -> (ok: bool | None, detail, fix)``.

    ``None`` for ok means "not applicable here" (e.g. no GPU).
    """

    name: str
    run: str
