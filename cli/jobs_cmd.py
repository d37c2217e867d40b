"""``gpuforge run JOB.toml``."""
from __future__ import annotations

from pathlib import Path

import typer

from gpuforge.core.context import get_context
from gpuforge.core.output import emit

app = typer.Typer(help="Run a batch job (job.toml): gpuforge commands in order, resumable.")


@app.command()
def run(
    job: Path = typer.Argument(..., help="The job file: [[step]] entries with args = [gpuforge arguments]."),
    restart: bool = typer.Option(False, "--restart", help="Forget finished steps and run every step again."),
    json_out: bool = typer.Option(False, "--json", help="Print the job state as JSON."),
) -> None:
    """Run each step as `gpuforge <args>` in the job file's folder. A rerun skips the
    steps that finished (same arguments); a failing step stops the job with its exit
    code and leaves finished steps intact. State: <job>.state.json beside the file."""
    from gpuforge.core.jobs import run_job, state_path

    ctx = get_context()
    passthrough = ["--device", ctx.device]
    if ctx.backend:
        passthrough += ["--backend", ctx.backend]
    if ctx.seed is not None:
        passthrough += ["--seed", str(ctx.seed)]
    passthrough += ["--log-format", ctx.log_format]
    state = run_job(job, restart=restart, extra_args=passthrough)
    lines = [f"job {state['job']}: {len(state['steps'])} step(s) done; state in {state_path(job)}"]
    for name, st in state["steps"].items():
        lines.append(f"  {name}: {'skipped (done before)' if st.get('skipped_on_rerun') else st['status']} {st['seconds']} s")
    emit(state, "\n".join(lines), as_json=json_out or ctx.json)
