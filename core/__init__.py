"""gpuforge core: plugin manager, hook specs, kernel registry, config, logging, files, jobs.

Importing this package is cheap: nothing here imports torch or numba at module level.
"""
from __future__ import annotations


def version() -> str:
    from importlib.metadata import PackageNotFoundError, version as _v

    try:
        return _v("gpuforge")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"
