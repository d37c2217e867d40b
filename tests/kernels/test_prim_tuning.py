"""kernels/tuning.toml names real kernels and launch parameters their CUDA wrappers read
(through core.tuning.launch_config, by the kernel's name). (PTX compilation of every kernel is tests/test_kernels_ptx.py.)"""
from __future__ import annotations

import importlib
import inspect
import os
import tomllib
from pathlib import Path

import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
    pytest.skip("compile_ptx does not work under the CUDA simulator", allow_module_level=True)

from gpuforge.core.lazy import resolve  # noqa: E402
from gpuforge.kernels.specs import kernel_specs  # noqa: E402

TUNING = Path(importlib.import_module("gpuforge.kernels").__file__).with_name("tuning.toml")


def test_tuning_toml_names_real_kernels_and_keywords():
    tuning = tomllib.loads(TUNING.read_text())
    specs = {spec.name: spec for spec in kernel_specs()}
    tables = [tuning["default"]]
    for level in ("arch", "cc", "gpu"):
        tables += list(tuning.get(level, {}).values())
    assert set(tuning) <= {"default", "arch", "cc", "gpu"}
    assert set(tuning["default"]) == set(specs)
    from gpuforge.core.tuning import _KNOWN_KEYS

    for table in tables:
        for name, params in table.items():
            wrapper = resolve(specs[name].backends["numba-cuda"])
            source = inspect.getsource(inspect.getmodule(wrapper))
            assert f'launch_config("{name}"' in source or f'"{name}"' in source, name
            assert params and set(params) <= _KNOWN_KEYS, (name, params)
            assert all(isinstance(v, int) and v > 0 for v in params.values()), (name, params)
