"""`gpuforge run job.toml` on a Dask cluster: needs and shards, the same outputs as a
run on one machine, and a worker killed mid-run loses nothing and writes nothing twice."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dask_faults import run_killing_a_busy_worker

pytestmark = pytest.mark.dist
pytest.importorskip("dask.distributed")

JOB = """
[job]
name = "batch"

[[step]]
name = "val-photos"
args = ["superres", "photos", "--split", "val", "--out", "val"]
needs = []

[[step]]
name = "upscale"
args = ["superres", "upscale", "{inputs}", "--scale", "2", "--out", "up/part-{shard}"]
shard = 3
over = "imgs"
glob = "*.png"
needs = []

[[step]]
name = "report"
args = ["--json", "hw", "show", "h100-sxm"]
needs = ["upscale", "val-photos"]
"""


def make_job(folder: Path, images: int = 6) -> Path:
    from PIL import Image

    (folder / "imgs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(images):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(folder / "imgs" / f"im{i}.png")
    (folder / "job.toml").write_text(JOB)
    return folder / "job.toml"


def outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted((folder / "up").rglob("*.png"))}


def test_parse_needs_and_shards(tmp_path):
    from gpuforge.core.jobs import parse_job

    _, steps = parse_job(make_job(tmp_path))
    names = [s.name for s in steps]
    assert names == ["val-photos", "upscale[0/3]", "upscale[1/3]", "upscale[2/3]", "report"]
    assert steps[1].args[2:4] == ("imgs/im0.png", "imgs/im3.png") and "up/part-0" in steps[1].args
    assert steps[4].needs == ("upscale", "val-photos") and steps[1].needs == ()


def test_cluster_run_equals_a_local_run(run_cli, tmp_path):
    local, dist = make_job(tmp_path / "local"), make_job(tmp_path / "dist")
    r = run_cli("run", str(local))
    assert r.code == 0, r
    r = run_cli("--cluster", "local:2", "--json", "run", str(dist))
    assert r.code == 0, r
    state = r.json()
    assert all(st["status"] == "done" for st in state["steps"].values())
    assert outputs(tmp_path / "local") == outputs(tmp_path / "dist") != {}
    r = run_cli("--cluster", "local:2", "--json", "run", str(dist))       # a rerun skips everything
    assert all(st.get("skipped_on_rerun") for st in r.json()["steps"].values()), r


def test_a_killed_worker_loses_nothing(tmp_path, monkeypatch):
    from gpuforge.core.cluster import ClusterSpec, connect
    from gpuforge.core.jobs import run_job, state_path

    job = make_job(tmp_path, images=8)
    monkeypatch.setenv("PYTHONSAFEPATH", "1")
    with connect(ClusterSpec("local", workers=2)) as client:
        # settle_s: let the step process start on that worker
        _, error, killed = run_killing_a_busy_worker(client, lambda: run_job(job, client=client), wait_s=120,
                                                     join_s=600, settle_s=1.5, poll_s=0.2)
    assert killed is not None, "no task ever ran"
    assert error is None, error
    state = json.loads(state_path(job).read_text())
    assert all(st["status"] == "done" for st in state["steps"].values()), state
    ups = outputs(tmp_path)
    assert len(ups) == 8
    leftovers = [p.name for p in tmp_path.rglob("*") if ".gpuforge-" in p.name]
    assert leftovers == []
