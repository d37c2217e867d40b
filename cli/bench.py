"""``gpuforge bench [PLUGIN]``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gpuforge.core.output import print_table
from gpuforge.core.run import Run, command

app = typer.Typer(help="Time kernels and pipelines against their reference and anchor libraries.")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return v


def run_benchmarks(plugin: str | None, quick: bool, names: list[str] | None = None, device: str = "auto") -> list[dict]:
    from gpuforge.core.bench import BenchContext
    from gpuforge.core.errors import UsageError
    from gpuforge.core.lazy import resolve
    from gpuforge.core.log import get_logger
    from gpuforge.core.plugins import get_registry, plugin_info
    from gpuforge.core.progress import progress

    reg = get_registry()
    if plugin is not None:
        plugin_info(plugin)  # unknown plugin -> one clear line
    benches = [(p, b) for p, b in reg.benchmarks if plugin is None or p == plugin]
    if names:
        benches = [(p, b) for p, b in benches if b.name in names]
    if not benches:
        raise UsageError(f"no benchmarks registered{' by ' + plugin if plugin else ''}")
    ctx = BenchContext(quick=quick, device=device)
    try:
        from gpuforge.hardware.cpu import cpu_profile

        prof = cpu_profile()
        ctx.cpu_peak = {"bandwidth_gbs": prof.get("memory_bandwidth_gbs"), "fp32_gflops": prof.get("fp32_gflops")}
    except Exception as exc:  # the ratios still stand without the peak shares
        get_logger("gpuforge.bench").warning("no CPU peak figures", reason=str(exc))
    from gpuforge.hardware.cpu import bench_machine

    rows: list[dict] = []
    with progress("benchmarks", total=len(benches)) as bar:
        for p, b in benches:
            get_logger("gpuforge.bench").info("running benchmark", plugin=p, bench=b.name)
            machine = bench_machine()   # every row says what it ran on, and how busy the machine was
            for r in resolve(b.run)(ctx):
                rows.append({"plugin": p, "bench": b.name, **r, **{k: v for k, v in machine.items() if k not in r}})
            bar.advance()
    return rows


@command(app, "bench", outputs=True)
def bench(
    run: Run,
    plugin: Optional[str] = typer.Argument(None, help="Only this plugin's benchmarks."),
    quick: bool = typer.Option(False, "--quick", help="Smaller sizes, fewer repeats."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Only benchmarks with these names ('all': every one)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the rows as JSON to this file (--force replaces it)."),
) -> None:
    """Each row: implementation, best time, and ratio against the baseline run in the same
    process (> 1 means faster), with the share of this machine's measured peak."""
    dst = run.output(out, kind="file") if out is not None else None  # checked before minutes of timing
    if only and "all" in only:  # `superres bench --only all`, as that command said it before it forwarded here
        only = None
    # BenchContext.device is a torch device string: the simulator keeps torch on the CPU.
    dev = run.device
    rows = run_benchmarks(plugin, quick, only, device=f"cuda:{dev.index}" if dev.kind == "cuda" else "cpu")
    if dst is not None:
        from gpuforge.core.output import to_json

        dst.tmp.write_text(to_json(rows) + "\n")
    cols = ["plugin", "name", "impl", "seconds", "baseline", "baseline_seconds", "ratio", "fps", "gbs",
            "share_of_peak_bw", "gflops", "share_of_peak_flops", "load_1m"]
    present = [c for c in cols if any(c in r for r in rows)]
    # one machine per run: its CPU and SIMD extensions go in the title (every JSON row has them)
    machines = sorted({f"{r.get('cpu')} ({r.get('simd') or 'no SIMD flags'}), {r.get('cores')} cores" for r in rows})

    def human() -> None:
        print_table([{k: _fmt(v) for k, v in r.items()} for r in rows], columns=present,
                    title="benchmarks on " + "; ".join(machines))

    run.result(rows, human)
