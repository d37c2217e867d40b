"""Atomic outputs and manifests: whole or nothing, never overwrite without --force."""
from __future__ import annotations

import json

import pytest

from gpuforge.core.errors import OutputExistsError
from gpuforge.core.files import Manifest, atomic_dir, atomic_file, atomic_path


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("crash mid-write")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary left behind
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("done")
    assert (out / "a.txt").read_text() == "done"


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    with pytest.raises(OutputExistsError, match="--force"):
        with atomic_dir(out):
            pass
    assert (out / "keep.txt").read_text() == "old"
    with atomic_dir(out, force=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_file_and_path(tmp_path):
    f = tmp_path / "r.json"
    with pytest.raises(ValueError):
        with atomic_file(f, mode="w") as fh:
            fh.write("{")
            raise ValueError
    assert not f.exists() and list(tmp_path.iterdir()) == []
    with atomic_path(tmp_path / "w.safetensors") as tmp:
        assert tmp.suffix == ".safetensors"
        tmp.write_bytes(b"123")
    assert (tmp_path / "w.safetensors").read_bytes() == b"123"


def test_manifest_records_inputs_params_timings(tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("hello")
    m = Manifest("test cmd", {"bits": 4})
    m.add_input(src)
    with m.timed("work"):
        pass
    m.write(tmp_path)
    data = json.loads((tmp_path / "manifest.json").read_text())
    assert data["command"] == "test cmd" and data["params"] == {"bits": 4}
    assert data["inputs"][0]["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert "work" in data["timings_s"] and "total" in data["timings_s"]
    assert "torch" in data["versions"] or "python" in data["versions"]


def test_outputs_get_the_usual_permissions(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("1")
        with atomic_file(tmp_path / "f.txt", mode="w") as fh:
            fh.write("1")
        with atomic_path(tmp_path / "g.bin") as tmp:
            tmp.write_bytes(b"1")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "g.bin").stat().st_mode) == 0o644
