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

from functools import lru_cache
from typing import Any

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
