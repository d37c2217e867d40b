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
"""
from __future__ import annotations

import hashlib
import json
import shlex
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
        if args[0] == "run":
            raise BadInputError(f"job file {path}: step {name!r} runs another job; nest jobs by listing their steps")
        seen.add(name)
        steps.append(Step(name, tuple(str(a) for a in args)))
    job_name = str(data.get("job", {}).get("name") or path.stem)
    return job_name, steps


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
        proc = subprocess.run(
            [*cmd_prefix, *step.args], cwd=job_path.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**safe_env(), "PYTHONUNBUFFERED": "1"},
        )
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
