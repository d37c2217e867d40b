"""`gpuforge bench fraud --scaling strong|weak --workers 1,2` (issue 16 item 6): the
options reach the scaling benchmark, and its rows say what ran and whether the
distributed result equals the one-process one."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("distributed")


@pytest.mark.dist
def test_scaling_rows_per_worker_count(run_cli, tmp_path):
    r = run_cli("--json", "bench", "fraud", "--scaling", "weak", "--workers", "1,2", "--rows", "3000", "--quick",
                cwd=tmp_path, timeout=900)
    assert r.code == 0, r
    rows = json.loads(r.stdout)
    assert [(x["bench"], x["workers"], x["rows"]) for x in rows] == [("scaling", 1, 3000), ("scaling", 2, 6000)]
    for x in rows:
        assert x["labels_equal"] and x["mst_weight_equal"], x
        assert x["baseline"] == "one process" and x["seconds"] > 0 and x["bytes_to_and_from_workers"] > 0
        assert {"cells", "knn_local", "forest"} <= set(x["stage_seconds"]), x["stage_seconds"]
    assert rows[0]["parallel_efficiency"] == pytest.approx(1.0)
    assert rows[1]["parallel_efficiency"] == pytest.approx(rows[0]["seconds"] / rows[1]["seconds"])


@pytest.mark.parametrize("args, words", [
    (["--scaling", "sideways"], "--scaling 'sideways' is not one of"),
    (["--scaling", "strong", "--workers", "0"], "every count must be >= 1"),
    (["--scaling", "strong", "--workers", "one,two"], "worker counts separated by commas"),
    (["--workers", "2"], "go with --scaling"),
])
def test_scaling_options_are_checked_first(run_cli, tmp_path, args, words):
    r = run_cli("bench", "fraud", *args, cwd=tmp_path)
    assert r.code == 2 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
