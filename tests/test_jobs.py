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


# ------------------------------------------------ steps die with their job; recursion

import os
import signal
import subprocess
import time

import pytest

from gpuforge.core.safepath import python_argv


def _slow_job(folder, seconds: float = 60.0):
    job = folder / "slow.toml"
    job.write_text(f'[[step]]\nname = "slow"\nargs = ["steps", "slow", "--out", "result.txt", "--seconds", "{seconds}", '
                   f'"--pid-file", "step.pid"]\n')
    return job


def _start_job(job, env):
    proc = subprocess.Popen([*python_argv(), "-m", "gpuforge.cli", "run", str(job)], env=env, cwd=job.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    pid_file = job.parent / "step.pid"
    deadline = time.monotonic() + 120
    while not (pid_file.exists() and pid_file.read_text()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.1)
    return proc, int(pid_file.read_text())


def _gone(pid: int, within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # a zombie of a dead parent counts as gone once init reaps it
            with open(f"/proc/{pid}/stat") as fh:
                if fh.read().split(") ")[1].startswith("Z"):
                    return True
        except OSError:
            return True
        time.sleep(0.1)
    return False


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".result.txt") or p.name == "result.txt")


@pytest.fixture
def job_env(isolated_env, fixture_plugins):
    return {**isolated_env, "PYTHONPATH": os.pathsep.join([str(fixture_plugins), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="parent-death signal: Linux")
def test_kill_9_of_the_job_takes_its_step_along_and_the_rerun_is_clean(tmp_path, job_env, run_cli):
    """The step used to keep running as an orphan and finish its output; the rerun then
    failed with "output ... already exists"."""
    job = _slow_job(tmp_path)
    proc, step = _start_job(job, job_env)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert _gone(step), "the step outlived its job"
    assert _leftovers(tmp_path) == [], "an interrupted step left output behind"
    (tmp_path / "step.pid").unlink()
    _slow_job(tmp_path, seconds=0)
    r = run_cli("run", str(job), env=job_env)
    assert r.code == 0, r
    assert (tmp_path / "result.txt").read_text() == "first half\nsecond half\n"


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_ctrl_c_and_sigterm_stop_the_step_and_record_it(tmp_path, job_env, sig, code):
    job = _slow_job(tmp_path)
    proc, step = _start_job(job, job_env)
    try:
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=60)
    finally:  # a failed run must not leave the job and its 60-second step behind
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == code, err
    assert _gone(step, within=5)
    assert _leftovers(tmp_path) == []
    state = json.loads((tmp_path / "slow.state.json").read_text())
    assert state["steps"]["slow"]["status"] == "interrupted"
    assert "Traceback" not in err


def test_a_job_that_runs_itself_is_refused(run_cli, tmp_path):
    job = tmp_path / "recursive.toml"
    job.write_text('[[step]]\nargs = ["--json", "--device", "cpu", "run", "recursive.toml"]\n')
    r = run_cli("run", str(job))
    assert r.code == 3 and "runs another job" in r.stderr, r
    # However a step reaches it, a job already running further up is refused.
    job.write_text('[[step]]\nargs = ["hw", "list"]\n')
    r = run_cli("run", str(job), env={"GPUFORGE_JOB_CHAIN": str(tmp_path / "outer.toml") + os.pathsep + str(job)})
    assert r.code == 3 and "runs itself" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
    assert not (tmp_path / "recursive.state.json").exists()
