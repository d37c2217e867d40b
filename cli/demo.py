"""``gpuforge demo``: every plugin's demo on built-in data, one report folder."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from gpuforge.core.run import Run, command

app = typer.Typer(help="Run every plugin's demo on built-in data and write a report folder.")


@command(app, "demo", outputs=True)
def demo(
    run: Run,
    out: Path = typer.Option(Path("gpuforge-demo"), "--out", help="Report folder (README.md plus images)."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Only these plugins' demos."),
) -> None:
    """Runs the demos in order and writes OUT/README.md; a failing demo is reported in
    its section and makes the command exit 1 after the others ran."""
    from gpuforge.core.context import get_context
    from gpuforge.core.errors import GpuforgeError, UsageError
    from gpuforge.core.lazy import resolve
    from gpuforge.core.log import get_logger
    from gpuforge.core.plugins import get_registry

    log = get_logger("gpuforge.demo")
    demos = sorted(get_registry().demos, key=lambda pd: (pd[1].order, pd[0], pd[1].name))
    if only:
        demos = [(p, d) for p, d in demos if p in only]
    if not demos:
        raise UsageError("no demos registered" + (f" by {', '.join(only)}" if only else ""))
    report = run.output(out, kind="dir")
    tmp = report.tmp
    sections, summary = [], []
    for plugin, spec in demos:
        log.info("running demo", plugin=plugin, demo=spec.name)
        t0 = time.perf_counter()
        try:
            md = resolve(spec.run)(get_context(), tmp)
            status = "ok"
        except Exception as exc:
            md, status = f"Demo failed: `{type(exc).__name__}: {exc}`", "failed"
            log.error("demo failed", plugin=plugin, demo=spec.name, error=str(exc))
        seconds = round(time.perf_counter() - t0, 2)
        summary.append({"plugin": plugin, "demo": spec.name, "status": status, "seconds": seconds})
        sections.append(f"## {spec.name} ({plugin})\n\n_{spec.summary}_ — {status}, {seconds} s\n\n{md.strip()}\n")
    (tmp / "README.md").write_text("# gpuforge demo report\n\n" + "\n".join(sections))
    run.note("demos", summary)
    lines = [f"report: {out / 'README.md'}"] + [f"  {s['plugin']}/{s['demo']}: {s['status']} ({s['seconds']} s)" for s in summary]
    run.result({"report": str(out / "README.md"), "demos": summary}, "\n".join(lines))
    failed = [s for s in summary if s["status"] != "ok"]
    if failed:
        # The report is the useful part of a partly failed demo: keep it, then exit 1.
        run.fail_after(GpuforgeError(f"{len(failed)} demo(s) failed: {', '.join(s['demo'] for s in failed)}; "
                                     f"see {out / 'README.md'}"))
