"""`gpuforge bench scale`: peak RSS of a child process, fitted growth exponents, and the
suite registration other plugins plug into (a BenchmarkSpec with suite="scale")."""
from __future__ import annotations

import json
import sys

import pytest

from gpuforge.core.bench import growth_exponent, measure_command, measure_gpuforge


def test_growth_exponent_recovers_powers():
    sizes = [1e6, 4e6, 16e6]
    assert growth_exponent(sizes, [3.0 * s for s in sizes]) == pytest.approx(1.0)
    assert growth_exponent(sizes, [5.0, 5.0, 5.0]) == pytest.approx(0.0)
    assert growth_exponent(sizes, [s ** 0.5 for s in sizes]) == pytest.approx(0.5)
    assert growth_exponent([1e6], [2.0]) is None


def test_measure_command_reports_the_childs_own_peak():
    small = measure_command([sys.executable, "-c", "pass"])
    big = measure_command([sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"])
    assert small["returncode"] == 0 and big["returncode"] == 0
    assert big["peak_rss_bytes"] - small["peak_rss_bytes"] > 250 * 2**20
    bad = measure_command([sys.executable, "-c", "import sys; print('said'); sys.exit(3)"])
    assert bad["returncode"] == 3 and "stdout" not in bad
    said = measure_command([sys.executable, "-c", "import sys; print('{\"a\": 1}'); print('e', file=sys.stderr)"],
                           stdout=True)
    assert json.loads(said["stdout"]) == {"a": 1} and said["stderr_tail"].strip() == "e"


def test_measure_gpuforge_parses_the_result_and_raises_on_failure(tmp_path):
    """The helper the plugins' scale benches share: a gpuforge command in a fresh process,
    its JSON result parsed; a failing one raises with its exit status and last line."""
    m = measure_gpuforge(["hw", "list"], tmp_path)
    assert m["returncode"] == 0 and m["peak_rss_bytes"] > 0 and m["seconds"] > 0 and m["load_avg"] >= 0
    assert m["result"] == json.loads(m["stdout"]) and m["result"]
    with pytest.raises(RuntimeError, match=r"gpuforge fraud cluster missing.npy --out x exited 3: .*not found"):
        measure_gpuforge(["fraud", "cluster", "missing.npy", "--out", "x"], tmp_path)
    assert not (tmp_path / "x").exists()


def test_bench_scale_quick_runs_the_scale_suite_only(run_cli, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "scale.json"
    r = run_cli("bench", "scale", "--quick", "--cache-dir", str(tmp_path / "cache"), "--out", str(out), timeout=1200)
    assert r.code == 0, r
    res = json.loads(out.read_text())
    rows = res["rows"]
    # quantize's rows, superres's and fraud's (one suite: each plugin registers its scale bench into it)
    assert rows and {row["bench"] for row in rows} == {"quantize.scale", "scale", "fraud.scale"}
    for bench in ("quantize.scale", "fraud.scale"):
        mine = [row for row in rows if row["bench"] == bench]
        assert all(row["peak_rss_bytes"] > 0 and row["seconds"] > 0 and row["size"] > 0 for row in mine)
    fraud = {(row["series"], row["size_label"]): row for row in rows if row["bench"] == "fraud.scale"}
    assert set(fraud) == {(s, n) for s in ("fraud simulate", "fraud features", "fraud embed (inference)",
                                           "fraud cluster approx") for n in ("2k", "20k")}
    assert fraud["fraud simulate", "20k"]["events"] == fraud["fraud features", "20k"]["events"] > 20_000
    assert fraud["fraud cluster approx", "20k"]["n_clusters"] > 0 and fraud["fraud embed (inference)", "2k"]["dim"] == 64
    growth = {g["series"]: g for g in res["growth"]}
    assert {"quantize nf4", "quantize int8", "quantize gptq by depth", "superres upscale x2 image",
            "fraud simulate", "fraud cluster approx"} <= set(growth)
    # generated inputs are gone after their rows
    assert not any((tmp_path / "cache").rglob("*.safetensors"))
    assert not any((tmp_path / "cache").rglob("*.parquet"))


def test_scale_benchmarks_stay_out_of_the_speed_suite_unless_named():
    from gpuforge.cli.bench import select_benchmarks
    from gpuforge.core.specs import BenchmarkSpec

    reg = [("superres", BenchmarkSpec("frame", "m:f")), ("superres", BenchmarkSpec("scale", "m:s", suite="scale")),
           ("quantize", BenchmarkSpec("quantize", "m:q")),
           ("quantize", BenchmarkSpec("quantize.scale", "m:qs", suite="scale"))]

    def names(*a):
        return [b.name for _, b in select_benchmarks(reg, *a)]

    assert names("superres", None, "speed") == ["frame"]   # `bench superres`: no 12-minute scale run
    assert names(None, None, "speed") == ["frame", "quantize"]
    assert names("superres", ["scale"], "speed") == ["scale"]   # `bench superres --only scale`
    assert names(None, None, "scale") == ["scale", "quantize.scale"]   # `bench scale`: every plugin's
    assert names(None, ["quantize.scale"], "scale") == ["quantize.scale"]
