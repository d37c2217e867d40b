"""Profiles from the built-in folder plus every folder a plugin registered."""
from __future__ import annotations

from gpuforge.hardware.profiles import GpuProfile, load_profiles


def all_profiles() -> dict[str, GpuProfile]:
    from gpuforge.core.plugins import get_registry

    extra = tuple(spec.path for _plugin, spec in get_registry().profile_dirs)
    return load_profiles(extra)
