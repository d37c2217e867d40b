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


SCALE = "scale"
"""``gpuforge bench scale``: the scale suite of every plugin (not a plugin name)."""


def select_benchmarks(benches: list[tuple], plugin: str | None, names: list[str] | None, suite: str) -> list[tuple]:
    """The (plugin, spec) pairs to run: the suite's, of ``plugin`` if given, named in
    ``names`` if given. A scale benchmark (minutes, in fresh processes) runs in the speed
    suite only when ``names`` names it (`gpuforge bench superres --only scale`)."""
    def wanted(b) -> bool:
        kind = getattr(b, "suite", "speed")
        return kind == suite or (suite == "speed" and bool(names) and b.name in names)

    out = [(p, b) for p, b in benches if (plugin is None or p == plugin) and wanted(b)]
    return [(p, b) for p, b in out if b.name in names] if names else out


def run_benchmarks(plugin: str | None, quick: bool, names: list[str] | None = None, device: str = "auto",
                   suite: str = "speed", **ctx_fields) -> list[dict]:
    from gpuforge.core.bench import BenchContext
    from gpuforge.core.errors import UsageError
    from gpuforge.core.lazy import resolve
    from gpuforge.core.log import get_logger
    from gpuforge.core.plugins import get_registry, plugin_info
    from gpuforge.core.progress import progress

    reg = get_registry()
    if plugin is not None:
        plugin_info(plugin)  # unknown plugin -> one clear line
    benches = select_benchmarks(reg.benchmarks, plugin, names, suite)
    if not benches:
        raise UsageError(f"no {suite} benchmarks registered{' by ' + plugin if plugin else ''}")
    ctx = BenchContext(quick=quick, device=device, **ctx_fields)
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


def growth_table(rows: list[dict]) -> list[dict]:
    """Per scale series: the fitted growth exponents of peak RSS and time against size."""
    from gpuforge.core.bench import growth_exponent

    out = []
    series: dict[tuple, list[dict]] = {}
    for r in rows:
        if "series" in r and r.get("peak_rss_bytes"):
            series.setdefault((r["plugin"], r["series"]), []).append(r)
    for (plugin, name), rs in series.items():
        sizes = [r["size"] for r in rs]
        out.append({"plugin": plugin, "series": name, "points": len(rs),
                    "memory_exponent": growth_exponent(sizes, [r["peak_rss_bytes"] for r in rs]),
                    "time_exponent": growth_exponent(sizes, [r["seconds"] for r in rs])})
    return out


@command(app, "bench", outputs=True)
def bench(
    run: Run,
    plugin: Optional[str] = typer.Argument(None, help="Only this plugin's benchmarks; `scale`: every plugin's scale "
                                                      "benchmarks (peak memory and time against input size)."),
    quick: bool = typer.Option(False, "--quick", help="Smaller sizes, fewer repeats."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Only benchmarks with these names ('all': every "
                                             "one; a scale benchmark named here runs too)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the rows as JSON to this file (--force replaces it)."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="scale: where generated inputs go (default "
                                            "~/.cache/gpuforge-bench); they are deleted after each row."),
    keep_inputs: bool = typer.Option(False, "--keep-inputs", help="scale: keep the generated inputs."),
    sizes: Optional[str] = typer.Option(None, "--sizes", help="scale: only these size labels, comma-separated "
                                        "(e.g. 1.1B,7B)."),
    scaling: Optional[str] = typer.Option(None, "--scaling", help="Run the plugin's scaling benchmark: strong (fixed "
                                          "rows), weak (rows per worker), both, or memory (peak RSS per step)."),
    workers: Optional[str] = typer.Option(None, "--workers", help="--scaling: local Dask cluster sizes, "
                                          "comma-separated (default 1,2)."),
    input_rows: Optional[int] = typer.Option(None, "--rows", min=1, help="Input rows for benchmarks that take a size "
                                       "(--scaling: rows, or rows per worker when weak)."),
) -> None:
    """Each row: implementation, best time, and ratio against the baseline run in the same
    process (> 1 means faster), with the share of this machine's measured peak.
    `gpuforge bench scale`: peak RSS and time against input size, in fresh processes, with
    fitted growth exponents (0: flat, 1: linear); scale benchmarks run only there or when
    --only names them."""
    dst = run.output(out, kind="file") if out is not None else None  # checked before minutes of timing
    if only and "all" in only:  # `superres bench --only all`, as that command said it before it forwarded here
        only = None
    from gpuforge.core.errors import UsageError

    if scaling is not None and scaling not in ("strong", "weak", "both", "memory"):
        raise UsageError(f"--scaling {scaling!r} is not one of strong, weak, both, memory")
    try:
        worker_counts = tuple(int(w) for w in workers.split(",") if w.strip()) if workers else ()
    except ValueError:
        raise UsageError(f"--workers {workers!r}: give worker counts separated by commas, e.g. 1,2") from None
    if any(w < 1 for w in worker_counts):
        raise UsageError(f"--workers {workers!r}: every count must be >= 1")
    if (workers or input_rows) and scaling is None and not only:
        raise UsageError("--workers and --rows go with --scaling (or --only naming a benchmark that reads them)")
    if scaling is not None and not only:
        only = ["scaling"]  # `gpuforge bench fraud --scaling strong`: the scaling benchmark alone
    extra = {"scaling": scaling, "workers": worker_counts, "rows": input_rows}
    # BenchContext.device is a torch device string: the simulator keeps torch on the CPU.
    dev = run.device
    device = f"cuda:{dev.index}" if dev.kind == "cuda" else "cpu"
    if plugin == SCALE:
        _scale(run, dst, quick, only, device, cache_dir, keep_inputs, sizes)
        return
    rows = run_benchmarks(plugin, quick, only, device=device, **extra)
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


def _scale(run: Run, dst, quick, only, device, cache_dir, keep_inputs, sizes) -> None:
    fields = {"cache_dir": cache_dir, "keep_inputs": keep_inputs,
              "sizes": tuple(x.strip() for x in sizes.split(",") if x.strip()) if sizes else ()}
    rows = run_benchmarks(None, quick, only, device=device, suite=SCALE, **fields)
    result = {"rows": rows, "growth": growth_table(rows)}
    if dst is not None:
        from gpuforge.core.output import to_json

        dst.tmp.write_text(to_json(result) + "\n")

    def human() -> None:
        cols = ["plugin", "name", "series", "size_label", "size", "input_bytes", "peak_rss_mib", "peak_rss_mb",
                "seconds", "rss_exponent", "time_exponent", "load_avg"]
        present = [c for c in cols if any(c in r for r in rows)]
        print_table([{k: _fmt(r.get(k)) for k in present} for r in rows], columns=present, title="scale")
        if result["growth"]:
            print_table([{k: _fmt(v) for k, v in g.items()} for g in result["growth"]], title="growth exponents")

    run.result(result, human)
