"""``gpuforge run job.toml``: steps in order, a state file, resume after a failure."""
from __future__ import annotations

import json


def _job(path, second_gpu: str):
    path.write_text(
        f"""
[job]
name = "demo-job"

[[step]]
name = "profiles"
args = ["--json", "hw", "list"]

[[step]]
name = "one-gpu"
args = "hw show {second_gpu} --json"

[[step]]
name = "detect"
args = ["hw", "detect"]
"""
    )


def test_job_stops_at_a_failing_step_and_resumes(run_cli, tmp_path):
    job = tmp_path / "job.toml"
    _job(job, "no-such-gpu")
    r = run_cli("run", str(job))
    assert r.code == 3, r  # the failing step's exit code
    assert "step 'one-gpu' failed (exit 3)" in r.stderr
    state = json.loads((tmp_path / "job.state.json").read_text())
    assert state["steps"]["profiles"]["status"] == "done"
    assert state["steps"]["one-gpu"]["status"] == "failed"
    assert "detect" not in state["steps"]
    first_run = state["steps"]["profiles"]["started"]

    _job(job, "h100-sxm")  # fix the step, run again
    r = run_cli("--json", "run", str(job))
    assert r.code == 0, r
    state = r.json()
    assert state["steps"]["profiles"]["started"] == first_run  # not run again
    assert state["steps"]["profiles"]["skipped_on_rerun"] is True
    assert state["steps"]["one-gpu"]["status"] == "done"
    assert state["steps"]["detect"]["status"] == "done"
    assert "H100" in state["steps"]["one-gpu"]["stdout_tail"]

    r = run_cli("--json", "run", str(job), "--restart")
    assert r.code == 0
    assert r.json()["steps"]["profiles"]["started"] >= first_run
    assert not r.json()["steps"]["profiles"].get("skipped_on_rerun")


def test_job_without_steps_is_bad_input(run_cli, tmp_path):
    job = tmp_path / "empty.toml"
    job.write_text("[job]\nname = 'x'\n")
    r = run_cli("run", str(job))
    assert r.code == 3 and "no [[step]] entries" in r.stderr
