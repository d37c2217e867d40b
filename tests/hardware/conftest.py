"""Fixtures for the hardware tests: a valid profile as a dict, and a writer for TOML."""
from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest

from gpuforge.hardware.profiles import BUILTIN_DIR

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def dump_profile(data: dict) -> str:
    """Minimal TOML writer for flat profiles with one [sources] table (no tomli_w here)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="session")
def h100_data() -> dict:
    with (BUILTIN_DIR / "h100-sxm.toml").open("rb") as fh:
        return tomllib.load(fh)


@pytest.fixture
def profile_data(h100_data) -> dict:
    """A fresh, valid copy of the H100 SXM profile, to break in a test."""
    return copy.deepcopy(h100_data)


@pytest.fixture
def write_profile(tmp_path):
    def write(data: dict, name: str | None = None, folder: Path | None = None) -> Path:
        folder = folder or tmp_path
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name or data['id']}.toml"
        path.write_text(dump_profile(data))
        return path

    return write
