"""requirements.lock is fresh: made from pyproject.toml's current dependency ranges."""
from __future__ import annotations

import shutil
from pathlib import Path

from gpuforge.core import lockfile

ROOT = Path(__file__).resolve().parents[1]


def test_lock_matches_pyproject():
    assert lockfile.check(ROOT) is None


def test_lock_pins_what_the_project_needs():
    pins = lockfile.pins(ROOT / lockfile.LOCK)
    for name in ("torch", "numba", "numba-cuda", "transformers", "typer", "pluggy", "safetensors", "bitsandbytes"):
        assert name in pins, name
    assert pins["torch"] == "2.13.0"          # the CPU build, local label dropped
    assert "gpuforge" not in pins


def test_a_changed_dependency_range_makes_the_lock_stale(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copy(ROOT / lockfile.LOCK, tmp_path / lockfile.LOCK)
    assert lockfile.check(tmp_path) is None
    text = (tmp_path / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(text.replace('"pluggy>=1.5"', '"pluggy>=1.6"'))
    problem = lockfile.check(tmp_path)
    assert problem is not None and "make lock" in problem


def test_an_unrelated_pyproject_edit_keeps_the_lock(tmp_path):
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copy(ROOT / lockfile.LOCK, tmp_path / lockfile.LOCK)
    text = (tmp_path / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(text.replace('addopts = "-ra"', 'addopts = "-ra -q"'))
    assert lockfile.check(tmp_path) is None


def test_render_drops_local_labels_and_tools():
    text = lockfile.render(["torch==2.13.0+cpu", "pip==26.0", "numpy==2.3.1", "-e git+x#egg=gpuforge"], "abc")
    body = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert body == ["numpy==2.3.1", "torch==2.13.0"]
    assert lockfile.DIGEST_LINE + "abc" in text
