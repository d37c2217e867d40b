"""``gpuforge run job.toml``: a list of gpuforge commands run in order, resumable.

```toml
[job]
name = "quantize-minilm"        # optional; default: the file's stem

[[step]]
name = "nf4"
args = ["quantize", "run", "model/", "--method", "nf4", "--out", "out/nf4"]
# or: args = "quantize run model/ --method nf4 --out out/nf4"
```

Each step runs as ``gpuforge <args>`` in its own process, in the job file's folder.
The job's state (``<job>.state.json`` next to the job file) records every finished
step with a hash of its arguments; a rerun skips those and starts at the first step
that has not finished (or whose arguments changed). A failing step stops the job
with that step's exit code and leaves the finished steps as they are.

A step never outlives its job. It runs in a process group of its own: Ctrl-C or SIGTERM
to the job is passed to the whole group (the step cleans up its outputs as any command
does, then the job exits 130 or 143); on Linux the step also gets SIGTERM when the job
process dies without a word (``kill -9``), through the parent-death signal. An
interrupted step left no outputs (the command runtime writes them only on success and
removes a killed run's temporaries), so the rerun runs it again from the start.

A job cannot run itself: each step inherits ``GPUFORGE_JOB_CHAIN`` (the job files being
run, outermost first), and a job already in the chain is refused (exit 3).
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from gpuforge.core.errors import BadInputError, GpuforgeError
from gpuforge.core.files import write_text_atomic
from gpuforge.core.tomlread import read_toml

JOB_CHAIN = "GPUFORGE_JOB_CHAIN"
"""Environment variable: the job files being run (os.pathsep-separated), outermost first."""
STOP_GRACE_S = 30.0
"""How long an interrupted step may take to clean up before its group is killed."""


@dataclass(frozen=True)
class Step:
    name: str
    args: tuple[str, ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps(list(self.args)).encode()).hexdigest()[:16]


class StepFailed(GpuforgeError):
    def __init__(self, step: str, code: int, detail: str):
        super().__init__(f"step {step!r} failed (exit {code}): {detail}")
        self.exit_code = code


def parse_job(path: str | Path) -> tuple[str, list[Step]]:
    path = Path(path)
    data = read_toml(path, "job file")
    steps_raw = data.get("step")
    if not isinstance(steps_raw, list) or not steps_raw:
        raise BadInputError(f"job file {path}: no [[step]] entries")
    steps: list[Step] = []
    seen: set[str] = set()
    for i, raw in enumerate(steps_raw, 1):
        if not isinstance(raw, dict) or "args" not in raw:
            raise BadInputError(f"job file {path}: step {i} has no 'args'")
        args = raw["args"]
        if isinstance(args, str):
            args = shlex.split(args)
        if not isinstance(args, list) or not args or not all(isinstance(a, (str, int, float)) for a in args):
            raise BadInputError(f"job file {path}: step {i} 'args' must be a non-empty list of strings or a string")
        name = str(raw.get("name") or f"step{i}")
        if name in seen:
            raise BadInputError(f"job file {path}: two steps are named {name!r}")
        if _command_of([str(a) for a in args]) == "run":
            raise BadInputError(f"job file {path}: step {name!r} runs another job; nest jobs by listing their steps")
        seen.add(name)
        steps.append(Step(name, tuple(str(a) for a in args)))
    job_name = str(data.get("job", {}).get("name") or path.stem)
    return job_name, steps


def _command_of(args: list[str]) -> str | None:
    """The command a step runs: its first word after the global options."""
    from gpuforge.core.run import GLOBAL_OPTIONS_WITH_VALUE

    i = 0
    while i < len(args):
        a = args[i]
        if a in GLOBAL_OPTIONS_WITH_VALUE:
            i += 2
        elif a.startswith("-"):
            i += 1
        else:
            return a
    return None


def job_chain() -> list[str]:
    return [p for p in os.environ.get(JOB_CHAIN, "").split(os.pathsep) if p]


def check_not_recursive(job_path: Path) -> list[str]:
    """The chain for this job's steps; :class:`BadInputError` when the job is already
    running further up (a step that runs its own job would start it without end)."""
    chain = job_chain()
    if str(job_path) in chain:
        loop = " -> ".join([*chain[chain.index(str(job_path)):], str(job_path)])
        raise BadInputError(f"job {job_path} runs itself ({loop}); a step must not run a job that contains it")
    return [*chain, str(job_path)]


def _parent_death_signal():
    """A ``preexec_fn`` that makes the child receive SIGTERM when this process dies
    (Linux ``prctl(PR_SET_PDEATHSIG)``; None elsewhere). libc is looked up here, before
    the fork: the child only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the job died before the call took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _stop(proc: subprocess.Popen, sig: int) -> None:
    """Pass ``sig`` to the step's whole process group, let it clean up, then make sure
    nothing of it is left."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=STOP_GRACE_S)  # drain its pipes so it can exit
    except BaseException:  # too slow, or a second Ctrl-C: no more waiting
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_step(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run one step; on Ctrl-C or SIGTERM stop its process group first, then re-raise."""
    from gpuforge.core.run import Terminated

    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_parent_death_signal())
    try:
        out, err = proc.communicate()
    except BaseException as exc:
        _stop(proc, signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def state_path(job_path: str | Path) -> Path:
    job_path = Path(job_path)
    return job_path.with_name(f"{job_path.stem}.state.json")


def _load_state(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"steps": {}}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise BadInputError(f"job state {path} is corrupt; delete it to run every step again") from None


def run_job(job_path: str | Path, *, restart: bool = False, extra_args: list[str] | None = None) -> dict[str, Any]:
    """Run (or resume) a job; returns the final state. ``extra_args`` are global options
    passed to every step (e.g. ``--device cpu``)."""
    from gpuforge.core.log import get_logger
    from gpuforge.core.output import to_json

    log = get_logger("gpuforge.jobs")
    job_path = Path(job_path).resolve()
    name, steps = parse_job(job_path)
    chain = check_not_recursive(job_path)
    spath = state_path(job_path)
    state = {"steps": {}} if restart else _load_state(spath)
    state.update({"job": name, "job_file": str(job_path)})
    for entry in state["steps"].values():
        entry.pop("skipped_on_rerun", None)
    from gpuforge.core.safepath import python_argv, safe_env

    cmd_prefix = [*python_argv(), "-m", "gpuforge.cli", *(extra_args or [])]
    for step in steps:
        prev = state["steps"].get(step.name, {})
        if prev.get("status") == "done" and prev.get("args_sha") == step.digest:
            log.info("step already finished, skipping", step=step.name)
            prev["skipped_on_rerun"] = True
            continue
        log.info("running step", step=step.name, args=" ".join(step.args))
        t0 = time.perf_counter()
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        try:
            proc = run_step([*cmd_prefix, *step.args], job_path.parent,
                            {**safe_env(), "PYTHONUNBUFFERED": "1", JOB_CHAIN: os.pathsep.join(chain)})
        except BaseException:
            state["steps"][step.name] = {"status": "interrupted", "args": list(step.args), "args_sha": step.digest,
                                         "started": started, "seconds": round(time.perf_counter() - t0, 3)}
            write_text_atomic(spath, to_json(state) + "\n")
            raise
        sys.stderr.write(proc.stderr)
        entry = {
            "status": "done" if proc.returncode == 0 else "failed",
            "exit_code": proc.returncode,
            "args": list(step.args),
            "args_sha": step.digest,
            "started": started,
            "seconds": round(time.perf_counter() - t0, 3),
            "stdout_tail": proc.stdout[-2000:],
        }
        if "--out" in step.args[:-1]:
            entry["output"] = step.args[step.args.index("--out") + 1]
        state["steps"][step.name] = entry
        write_text_atomic(spath, to_json(state) + "\n")
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            raise StepFailed(step.name, proc.returncode, lines[-1] if lines else "no error output")
    state["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_text_atomic(spath, to_json(state) + "\n")
    return state
