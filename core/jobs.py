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

**Dependencies and shards.** A step runs after the step before it, unless it names the
steps it needs (``needs = ["a", "b"]``; ``needs = []``: independent). A step with
``shard = N`` and ``over = "folder"`` runs as N parts over the folder's files (sorted;
``glob`` picks them, default ``*``): ``{inputs}`` in its args stands for the part's files
(as separate arguments) and ``{shard}`` for the part's number, e.g.
``args = ["superres", "upscale", "{inputs}", "--scale", "3", "--out", "up/part-{shard}"]``.
Each part is recorded on its own, so a rerun redoes only unfinished parts.

**On a cluster** (``gpuforge --cluster local:N run job.toml`` or ``--scheduler``), every step
or part whose needs are done runs at once as a Dask task, which starts the step's
process on a worker, in the job's folder (a remote cluster needs the job's folder on a
shared filesystem, and gpuforge installed on its workers). The state is written by this
process as tasks finish. A task whose worker dies is run again on another worker by
Dask (up to ``RETRIES`` times); its step process dies with the worker (parent-death
signal) and its outputs were never moved into place, so nothing is written twice — and a
part whose outputs are already in place, with a manifest naming the same arguments, is
taken as done instead of run again. Steps do not get ``--cluster`` themselves.
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
RETRIES = 3
"""On a cluster: how often a task lost with its worker is run again."""


@dataclass(frozen=True)
class Step:
    name: str
    args: tuple[str, ...]
    needs: tuple[str, ...] = ()
    """Names of the steps (or of sharded steps, all their parts) that must finish first."""

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
        if "needs" in raw:
            needs = raw["needs"]
            if not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
                raise BadInputError(f"job file {path}: step {name!r} 'needs' must be a list of step names")
            unknown = [n for n in needs if n not in seen]
            if unknown:
                raise BadInputError(f"job file {path}: step {name!r} needs {unknown[0]!r}, which is not a step "
                                    "listed before it")
        else:
            needs = [steps[-1].name.split("[")[0]] if steps else []
        parts = _shards(path, name, raw, [str(a) for a in args])
        seen.add(name)
        steps.extend(Step(n, a, tuple(needs)) for n, a in parts)
    job_name = str(data.get("job", {}).get("name") or path.stem)
    return job_name, steps


def _shards(path: Path, name: str, raw: dict, args: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """One (name, args) per part of a sharded step, or the step itself."""
    if "shard" not in raw and "over" not in raw:
        if any("{inputs}" in a or "{shard}" in a for a in args):
            raise BadInputError(f"job file {path}: step {name!r} uses {{inputs}}/{{shard}} without shard/over")
        return [(name, tuple(args))]
    n, over = raw.get("shard"), raw.get("over")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1 or not isinstance(over, str):
        raise BadInputError(f"job file {path}: step {name!r} needs shard = N (N >= 1) and over = \"folder\"")
    if "{inputs}" not in args:
        raise BadInputError(f"job file {path}: sharded step {name!r} must use {{inputs}} in its args")
    folder = (path.parent / over)
    if not folder.is_dir():
        raise BadInputError(f"job file {path}: step {name!r}: over = {over!r} is not a folder")
    files = sorted(p for p in folder.glob(str(raw.get("glob", "*"))) if p.is_file() and not p.name.startswith("."))
    if not files:
        raise BadInputError(f"job file {path}: step {name!r}: no files in {over!r} match {raw.get('glob', '*')!r}")
    n = min(n, len(files))
    out = []
    for k in range(n):
        chunk = [str(f.relative_to(path.parent)) for f in files[k::n]]
        argv: list[str] = []
        for a in args:
            if a == "{inputs}":
                argv += chunk
            else:
                argv.append(a.replace("{shard}", str(k)))
        out.append((f"{name}[{k}/{n}]", tuple(argv)))
    return out


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


def run_job(job_path: str | Path, *, restart: bool = False, extra_args: list[str] | None = None,
            client: Any = None) -> dict[str, Any]:
    """Run (or resume) a job; returns the final state. ``extra_args`` are global options
    passed to every step (e.g. ``--device cpu``); with a Dask ``client`` the steps run as
    tasks on its cluster, as their needs allow (see the module doc)."""
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
    job_env = {"PYTHONUNBUFFERED": "1", JOB_CHAIN: os.pathsep.join(chain)}
    env = {**safe_env(), **job_env}
    if client is not None:
        return _run_on_cluster(client, job_path, steps, state, spath, list(extra_args or []), job_env)
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
            proc = run_step([*cmd_prefix, *step.args], job_path.parent, env)
        except BaseException:
            state["steps"][step.name] = {"status": "interrupted", "args": list(step.args), "args_sha": step.digest,
                                         "started": started, "seconds": round(time.perf_counter() - t0, 3)}
            write_text_atomic(spath, to_json(state) + "\n")
            raise
        sys.stderr.write(proc.stderr)
        _record(state, spath, step, proc.returncode, proc.stdout, started, time.perf_counter() - t0)
        if proc.returncode != 0:
            raise StepFailed(step.name, proc.returncode, _last_line(proc.stderr))
    state["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_text_atomic(spath, to_json(state) + "\n")
    return state


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no error output"


def _record(state: dict, spath: Path, step: Step, code: int, stdout: str, started: str, seconds: float,
            **extra: Any) -> None:
    from gpuforge.core.output import to_json

    entry = {"status": "done" if code == 0 else "failed", "exit_code": code, "args": list(step.args),
             "args_sha": step.digest, "started": started, "seconds": round(seconds, 3),
             "stdout_tail": stdout[-2000:], **extra}
    out = _out_of(step.args)
    if out is not None:
        entry["output"] = out
    state["steps"][step.name] = entry
    write_text_atomic(spath, to_json(state) + "\n")


def _out_of(args: tuple[str, ...]) -> str | None:
    for flag in ("--out", "-o", "--output"):
        if flag in args[:-1]:
            return args[args.index(flag) + 1]
    return None


def already_written(cwd: Path, args: tuple[str, ...]) -> bool:
    """The step's output is in place and its manifest names these very arguments: an
    earlier attempt finished (its worker died before saying so)."""
    out = _out_of(args)
    if out is None:
        return False
    path = cwd / out
    from gpuforge.core.run import manifest_path

    try:
        argv = json.loads(manifest_path(path).read_text()).get("argv") or []
    except (OSError, ValueError):
        return False
    return tuple(argv[len(argv) - len(args):]) == tuple(args)


def _cluster_task(global_args: list[str], args: tuple[str, ...], cwd: str, env: dict[str, str]) -> dict[str, Any]:
    """What a Dask worker runs for one step: its process (dies with the worker), started
    with the worker's own Python and environment plus the job's variables."""
    from gpuforge.core.safepath import python_argv, safe_env

    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if already_written(Path(cwd), args):
        return {"code": 0, "stdout": "", "stderr": "", "started": started, "seconds": 0.0, "recovered": True}
    proc = run_step([*python_argv(), "-m", "gpuforge.cli", *global_args, *args], Path(cwd), {**safe_env(), **env})
    return {"code": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr, "started": started,
            "seconds": time.perf_counter() - t0, "recovered": False}


def _run_on_cluster(client: Any, job_path: Path, steps: list[Step], state: dict, spath: Path,
                    global_args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Submit every step whose needs are done; record results as they come back."""
    from dask.distributed import as_completed

    from gpuforge.core.log import get_logger
    from gpuforge.core.output import to_json

    log = get_logger("gpuforge.jobs")
    done_names = set()
    for step in steps:
        prev = state["steps"].get(step.name, {})
        if prev.get("status") == "done" and prev.get("args_sha") == step.digest:
            prev["skipped_on_rerun"] = True
            done_names.add(step.name)

    def base(name: str) -> str:
        return name.split("[")[0]

    def ready(step: Step) -> bool:
        finished = {base(n) for n in done_names}
        pending = {base(s.name) for s in steps if s.name not in done_names}
        return all(n in finished and n not in pending for n in step.needs)

    waiting = [s for s in steps if s.name not in done_names]
    futures = as_completed()
    running: dict[Any, Step] = {}

    def submit_ready() -> None:
        for s in [s for s in waiting if ready(s)]:
            waiting.remove(s)
            log.info("submitting step", step=s.name, args=" ".join(s.args))
            fut = client.submit(_cluster_task, global_args, s.args, str(job_path.parent), env,
                                key=f"gpuforge-step-{s.name}-{s.digest}-{time.time_ns()}", pure=False,
                                retries=RETRIES)
            running[fut] = s
            futures.add(fut)

    submit_ready()
    failure: StepFailed | None = None
    try:
        for fut in futures:
            step = running.pop(fut)
            try:
                res = fut.result()
            except Exception as exc:  # the task itself failed (e.g. lost more than RETRIES workers)
                res = {"code": 1, "stdout": "", "stderr": f"{type(exc).__name__}: {exc}", "started": "",
                       "seconds": 0.0, "recovered": False}
            sys.stderr.write(res["stderr"])
            _record(state, spath, step, res["code"], res["stdout"], res["started"], res["seconds"],
                    **({"recovered": True} if res["recovered"] else {}))
            if res["code"] != 0:
                failure = failure or StepFailed(step.name, res["code"], _last_line(res["stderr"]))
                continue
            done_names.add(step.name)
            if failure is None:
                submit_ready()
    except BaseException:
        for fut, step in running.items():
            fut.cancel()
            state["steps"][step.name] = {"status": "interrupted", "args": list(step.args), "args_sha": step.digest}
        write_text_atomic(spath, to_json(state) + "\n")
        raise
    if failure is not None:
        raise failure
    if waiting:
        raise BadInputError(f"job {job_path}: steps {', '.join(s.name for s in waiting)} could not start "
                            "(their needs never finished)")
    state["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_text_atomic(spath, to_json(state) + "\n")
    return state
