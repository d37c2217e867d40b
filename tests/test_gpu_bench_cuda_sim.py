"""The GPU benchmarks' plumbing in Numba's simulator (tiny inputs, no torch CUDA): every
benchmark must run to its rows here, or the lent GPU's minutes are lost to a typo."""
from __future__ import annotations

import json

from gpuforge.core import gpu_bench


def test_every_benchmark_runs_in_the_simulator(tmp_path):
    out = tmp_path / "bench.json"
    doc = gpu_bench.run(out, simulate=True)
    assert doc["errors"] == [], doc["errors"]
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(doc["rows"]))
    benches = {r["bench"] for r in doc["rows"]}
    # copy and the batched W4A16 product need torch CUDA; everything else ran
    assert benches == set(gpu_bench.BENCHES) - {"copy", "w4a16_matmul"}
    for r in doc["rows"]:
        assert r["simulated"] and r["seconds"] > 0
        assert "gbs" in r or "gflops" in r, r
