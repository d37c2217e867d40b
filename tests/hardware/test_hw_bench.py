"""`gpuforge hw bench` on this CPU: plausible figures, shares of the CPU profile, cache."""
from __future__ import annotations

import json

import pytest

from gpuforge.hardware import bench


@pytest.fixture(scope="module")
def cpu_bench(run_cli, tmp_path_factory):
    cache = tmp_path_factory.mktemp("xdg-cache")
    r = run_cli("hw", "bench", "--quick", "--json", env={"XDG_CACHE_HOME": str(cache)}, timeout=600)
    assert r.code == 0, r
    return r.json(), cache


def test_cpu_figures_are_plausible(cpu_bench):
    data, _ = cpu_bench
    assert data["device"] == "cpu"
    m = {x["name"]: x for x in data["measures"]}
    assert {"copy", "triad", "fma"} <= set(m)
    # Ranges for any machine this runs on: a loaded 2-core VM streams >= 0.5 GB/s,
    # no CPU socket streams 500 GB/s from one process's arrays here.
    for name in ("copy", "triad"):
        assert m[name]["unit"] == "GB/s" and 0.5 <= m[name]["value"] <= 500, m[name]
        assert m[name]["peak"] > 0 and m[name]["share"] == pytest.approx(m[name]["value"] / m[name]["peak"])
    for name in ("fma", "matmul"):
        if name in m:
            assert m[name]["unit"] == "GFLOP/s" and 0.5 <= m[name]["value"] <= 20_000, m[name]
            assert m[name]["share"] > 0
    assert all(x["method"] for x in data["measures"])


def test_result_is_cached_with_the_fingerprint(cpu_bench):
    data, cache = cpu_bench
    stored = json.loads((cache / "gpuforge" / "hw-bench.json").read_text())
    assert data["key"] in stored and data["key"].startswith("cpu:")
    assert len(stored[data["key"]]["fingerprint"]["sha256"]) == 64


def test_measured_efficiencies_come_from_cached_gpu_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = bench.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({
        "gpu:h100-sxm": {"version": bench.CACHE_VERSION, "measures": [
            {"name": "triad", "share": 0.9}, {"name": "matmul", "share": 0.7}, {"name": "copy", "share": 0.88}]},
        "gpu:old": {"version": -1, "measures": [{"name": "triad", "share": 0.5}]},
        "cpu:x|2": {"version": bench.CACHE_VERSION, "measures": [{"name": "triad", "share": 0.5}]},
    }))
    assert bench.measured_efficiencies() == {"h100-sxm": {"bandwidth_efficiency": 0.9, "compute_efficiency": 0.7}}


def test_corrupt_cache_reads_as_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    bench.cache_path().parent.mkdir(parents=True)
    bench.cache_path().write_text("{not json")
    assert bench.read_cache() == {} and bench.measured_efficiencies() == {}


@pytest.mark.gpu
def test_gpu_bench_against_the_datasheet(run_cli, tmp_path):  # pragma: no cover - needs a GPU
    r = run_cli("--device", "cuda", "hw", "bench", "--quick", "--json", env={"XDG_CACHE_HOME": str(tmp_path)})
    assert r.code == 0, r
    m = {x["name"]: x for x in r.json()["measures"]}
    for name in ("copy", "triad"):
        assert 0.2 <= m[name]["share"] <= 1.1, m[name]
    assert 0 < m["launch_latency"]["value"] < 1000
    assert m["shared_memory"]["share"] > 0.05


def test_cuda_bench_without_a_gpu_is_unsupported(run_cli):
    from gpuforge.hardware.detect import detect_gpus

    if not detect_gpus().cpu_only:
        pytest.skip("a GPU is present")
    r = run_cli("--device", "cuda", "hw", "bench", "--no-fingerprint")
    assert r.code == 4, r
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1 and r.stdout == ""


def test_gpuforge_bench_rows_compare_with_the_reference():
    from gpuforge.core.bench import BenchContext

    rows = bench.run_benchmarks(BenchContext(quick=True))
    assert [r["name"] for r in rows] == ["hardware.copy", "hardware.triad", "hardware.fma"]
    for r in rows:
        assert r["seconds"] > 0 and r["ratio"] > 0 and r["gbs"] > 0 and r["baseline"] == "reference (NumPy)"
