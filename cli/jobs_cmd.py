"""``gpuforge run JOB.toml``."""
from __future__ import annotations

from pathlib import Path

import typer

from gpuforge.core.run import Run, command

app = typer.Typer(help="Run a batch job (job.toml): gpuforge commands in order, resumable.")


@command(app, "run", device=False, distributed=True)
def run_job_cmd(
    run: Run,
    job: Path = typer.Argument(..., help="The job file: [[step]] entries with args = [gpuforge arguments]."),
    restart: bool = typer.Option(False, "--restart", help="Forget finished steps and run every step again."),
) -> None:
    """Run each step as `gpuforge <args>` in the job file's folder. A rerun skips the
    steps that finished (same arguments); a failing step stops the job with its exit
    code and leaves finished steps intact. State: <job>.state.json beside the file.
    With --cluster/--scheduler (global options) steps whose needs are done run at once
    as Dask tasks; `shard = N` steps run N parts over a folder (see README "Batch jobs")."""
    from gpuforge.core.context import get_context
    from gpuforge.core.jobs import run_job, state_path

    run.input(job, "job file")
    # The state must survive an interrupted job (it is how the rerun resumes): a state
    # file, checked for writability now, not an output that vanishes on failure.
    run.state_file(state_path(job), resuming=True)
    ctx = get_context()
    passthrough = ["--device", ctx.device]
    if ctx.backend:
        passthrough += ["--backend", ctx.backend]
    if ctx.seed is not None:
        passthrough += ["--seed", str(ctx.seed)]
    passthrough += ["--log-format", ctx.log_format]
    with run.cluster() as client:
        state = run_job(job, restart=restart, extra_args=passthrough, client=client)
    lines = [f"job {state['job']}: {len(state['steps'])} step(s) done; state in {state_path(job)}"]
    for name, st in state["steps"].items():
        lines.append(f"  {name}: {'skipped (done before)' if st.get('skipped_on_rerun') else st['status']} {st['seconds']} s")
    run.result(state, "\n".join(lines))
