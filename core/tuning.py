"""Per-GPU launch parameters from a plugin's ``tuning.toml``.

Lookup order, later wins: ``[default]``, ``[arch.<architecture>]``,
``[cc."<major.minor>"]``, ``[gpu.<profile id>]``; each holds one table per kernel:

```toml
[default."kernels.pairwise_topk"]
threads_per_block = 128
tile = 32

[gpu.h100-sxm."kernels.pairwise_topk"]
threads_per_block = 256
```

The merged parameters are checked against the device's limits before launch.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterator

from gpuforge.core.errors import BadInputError, UnsupportedError
from gpuforge.core.tomlread import read_toml

_KNOWN_KEYS = {"threads_per_block", "tile", "shared_mem_bytes", "blocks_per_sm", "rows_per_block", "items_per_thread"}


@lru_cache(maxsize=None)
def _read(path: str) -> dict[str, Any]:
    data = read_toml(path, "tuning file")
    for section in data:
        if section not in ("default", "arch", "cc", "gpu"):
            raise BadInputError(f"tuning file {path}: unknown section [{section}] (use default, arch, cc, gpu)")
    return data


def check_file(path: str) -> None:
    """Raise :class:`BadInputError` when a tuning file cannot be read or holds a
    parameter no launch knows (the plugin manager calls this when a plugin loads)."""
    from pathlib import Path

    if not Path(path).is_file():
        raise BadInputError(f"tuning file {path} does not exist")
    data = _read(str(path))
    tables = [data.get("default", {})]
    for section in ("arch", "cc", "gpu"):
        tables += [t for t in data.get(section, {}).values() if isinstance(t, dict)]
    for table in tables:
        for kernel, params in table.items():
            if not isinstance(params, dict):
                raise BadInputError(f"tuning file {path}: {kernel!r} must be a table of launch parameters")
            unknown = set(params) - _KNOWN_KEYS
            if unknown:
                raise BadInputError(f"tuning file {path}: unknown parameters {sorted(unknown)} for {kernel} "
                                    f"(known: {', '.join(sorted(_KNOWN_KEYS))})")


def _layers(data: dict[str, Any], profile: Any | None) -> list[dict[str, Any]]:
    layers = [data.get("default", {})]
    if profile is not None:
        layers.append(data.get("arch", {}).get(getattr(profile, "architecture", ""), {}))
        layers.append(data.get("cc", {}).get(str(getattr(profile, "compute_capability", "")), {}))
        layers.append(data.get("gpu", {}).get(getattr(profile, "id", ""), {}))
    return layers


def lookup(path: str, kernel: str, profile: Any | None = None) -> dict[str, Any]:
    """Merged launch parameters of ``kernel`` for ``profile`` (None: defaults only)."""
    params: dict[str, Any] = {}
    for layer in _layers(_read(str(path)), profile):
        params.update(layer.get(kernel, {}))
    unknown = set(params) - _KNOWN_KEYS
    if unknown:
        raise BadInputError(f"tuning file {path}: unknown parameters {sorted(unknown)} for {kernel}")
    if profile is not None:
        validate(params, profile, kernel)
    return params


def validate(params: dict[str, Any], profile: Any, kernel: str = "kernel") -> None:
    """Raise :class:`UnsupportedError` when launch parameters exceed the device's limits."""
    where = f"{kernel} on {getattr(profile, 'id', 'this GPU')}"
    tpb = params.get("threads_per_block")
    if tpb is not None:
        warp = getattr(profile, "warp_size", 32)
        if tpb <= 0 or tpb > profile.max_threads_per_block:
            raise UnsupportedError(f"{where}: threads_per_block={tpb} exceeds the limit {profile.max_threads_per_block}")
        if tpb % warp:
            raise UnsupportedError(f"{where}: threads_per_block={tpb} is not a multiple of the warp size {warp}")
    smem = params.get("shared_mem_bytes")
    if smem is not None:
        limit = int(profile.shared_mem_per_block_kib * 1024)
        if smem > limit:
            raise UnsupportedError(f"{where}: shared_mem_bytes={smem} exceeds the per-block limit {limit}")


def plugin_tuning_path(plugin: str) -> str | None:
    from gpuforge.core.plugins import get_registry

    spec = get_registry().tuning.get(plugin)
    return spec.path if spec else None


@lru_cache(maxsize=1)
def current_gpu_profile() -> Any | None:
    """The hardware profile of the current CUDA device, or None (no GPU, simulator,
    or a GPU without a profile: defaults are used then)."""
    try:
        from numba import cuda

        if not cuda.is_available():
            return None
        name = cuda.get_current_device().name
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return None
    from gpuforge.hardware.profiles import match_device_name
    from gpuforge.hardware.registry import all_profiles

    return match_device_name(name, all_profiles())  # plugins' profiles too


def launch_params(plugin: str, kernel: str, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a CUDA host wrapper calls: the plugin's tuning for the current device,
    over ``defaults``."""
    params = dict(defaults or {})
    path = plugin_tuning_path(plugin)
    if path:
        params.update(lookup(path, kernel, current_gpu_profile()))
    return params


# ----------------------------------------------------------------------------- launch config
# The one place a CUDA host wrapper gets its launch size from: the kernel's tuning.toml
# entry for the current GPU over the wrapper's defaults, then any override a test or a
# benchmark sweep has set. Backends keep the reference's signature: launch parameters are
# never keyword arguments of a backend.

MAX_GRID_BLOCKS = 65535 * 32
"""Default cap of grid-stride launches: past it, each thread loops over more items."""

_overrides: dict[str, dict[str, Any]] = {}


@dataclass(frozen=True)
class Launch:
    """A kernel's launch parameters: ``threads`` per block, the other tuned keys in
    ``params`` (e.g. ``tile``), and :meth:`blocks` for a grid over ``n`` items."""

    kernel: str
    threads: int
    params: dict[str, Any]

    def blocks(self, n: int, per_block: int | None = None) -> int:
        """Blocks covering ``n`` items at ``per_block`` items a block (default: one item per
        thread): for kernels where each thread handles its own item and checks the bound."""
        return -(-int(n) // (per_block or self.threads))

    def stride_blocks(self, n: int, cap: int = MAX_GRID_BLOCKS) -> int:
        """Blocks for a grid-stride kernel over ``n`` items: one item per thread up to
        ``cap`` blocks, past which each thread loops over several."""
        return max(1, min(self.blocks(n), cap))

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)


def launch_config(kernel: str, defaults: dict[str, Any] | None = None, *, power_of_two: bool = False,
                  max_threads: int = 1024) -> Launch:
    """Launch parameters of ``kernel`` (``"<plugin>.<name>"``) on the current device:
    ``{"threads_per_block": 256}`` and ``defaults``, then the plugin's ``tuning.toml``
    (checked against the GPU's limits), then :func:`override_launch`."""
    plugin = kernel.split(".", 1)[0]
    params = launch_params(plugin, kernel, {"threads_per_block": 256, **(defaults or {})})
    params.update(_overrides.get(kernel, {}))
    tpb = params.pop("threads_per_block")
    if not isinstance(tpb, int) or isinstance(tpb, bool) or not 1 <= tpb <= max_threads:
        raise UnsupportedError(f"{kernel}: threads_per_block must be an integer in 1..{max_threads}, got {tpb!r}")
    if power_of_two and tpb & (tpb - 1):
        raise UnsupportedError(f"{kernel}: threads_per_block must be a power of two, got {tpb}")
    return Launch(kernel, tpb, params)


@contextmanager
def override_launch(kernel: str, **params: Any) -> Iterator[None]:
    """Within the block, ``kernel`` launches with ``params`` over its tuned values: for
    tests of odd block sizes and for benchmark sweeps, never for product code."""
    unknown = set(params) - _KNOWN_KEYS
    if unknown:
        raise ValueError(f"unknown launch parameters {sorted(unknown)} (known: {', '.join(sorted(_KNOWN_KEYS))})")
    before = _overrides.get(kernel)
    _overrides[kernel] = {**(before or {}), **params}
    try:
        yield
    finally:
        if before is None:
            _overrides.pop(kernel, None)
        else:
            _overrides[kernel] = before
