"""The CPU profile: plausible measured numbers, cached after the first call."""
from __future__ import annotations

import json
import time

import pytest

from gpuforge.hardware import cpu


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    # One measurement for the module (it costs a few seconds), in a private cache folder.
    mp = pytest.MonkeyPatch()
    cache_home = tmp_path_factory.mktemp("xdg-cache")
    mp.setenv("XDG_CACHE_HOME", str(cache_home))
    cpu._memo.clear()
    t0 = time.perf_counter()
    profile = cpu.cpu_profile()
    elapsed = time.perf_counter() - t0
    yield profile, elapsed, cache_home
    cpu._memo.clear()
    mp.undo()


def test_numbers_are_plausible(measured):
    profile, elapsed, _ = measured
    assert profile["model"] and profile["logical_cores"] >= 1
    assert 1 <= profile["memory_bandwidth_gbs"] <= 500
    assert profile["fp32_flops"] > 1e9
    assert elapsed < 10
    json.dumps(profile)


def test_cached_on_disk_and_in_process(measured):
    profile, _, cache_home = measured
    path = cache_home / "gpuforge" / "cpu-profile.json"
    assert cpu.cache_path() == path
    on_disk = json.loads(path.read_text())
    assert on_disk[f"{profile['model']}|{profile['logical_cores']}"] == profile

    t0 = time.perf_counter()
    assert cpu.cpu_profile() == profile
    cpu._memo.clear()  # force the file path too
    assert cpu.cpu_profile() == profile
    assert time.perf_counter() - t0 < 0.5


def test_corrupt_cache_is_remeasured(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cpu, "measure_cpu", lambda: {"version": cpu.CACHE_VERSION, "fake": True})
    cpu._memo.clear()
    (tmp_path / "gpuforge").mkdir()
    (tmp_path / "gpuforge" / "cpu-profile.json").write_text("{not json")
    assert cpu.cpu_profile()["fake"] is True
    assert json.loads((tmp_path / "gpuforge" / "cpu-profile.json").read_text())
    cpu._memo.clear()


def test_profile_carries_hw_bench_results_when_cached(monkeypatch):
    from gpuforge.hardware import bench, cpu

    fake = {"measures": [{"name": "triad", "value": 9.5, "unit": "GB/s", "share": 0.8}]}
    monkeypatch.setattr(bench, "cached_cpu_result", lambda: fake)
    prof = cpu.cpu_profile()
    assert prof["hw_bench"] == {"triad": {"value": 9.5, "unit": "GB/s", "share": 0.8}}
    monkeypatch.setattr(bench, "cached_cpu_result", lambda: None)
    assert "hw_bench" not in cpu.cpu_profile()


def test_simd_features_and_bench_machine():
    from gpuforge.hardware.cpu import SIMD_FLAGS, bench_machine, simd_features

    feats = simd_features()
    assert feats == [f for f in SIMD_FLAGS if f in feats]          # known names, in table order
    import platform
    if platform.machine() in ("x86_64", "AMD64"):
        assert "sse4_2" in feats or not feats
    m = bench_machine()
    assert m["cpu"] and m["simd"] == " ".join(feats) and m["cores"] >= 1
    assert m["load_1m"] is None or m["load_1m"] >= 0
