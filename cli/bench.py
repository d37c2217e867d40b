"""``gpuforge bench [PLUGIN]``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from gpuforge.core.context import get_context
from gpuforge.core.output import emit, print_table

app = typer.Typer(help="Time kernels and pipelines against their reference and anchor libraries.")


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return v


SCALE = "scale"
"""``gpuforge bench scale``: the scale suite of every plugin (not a plugin name)."""


def run_benchmarks(plugin: str | None, quick: bool, names: list[str] | None = None, suite: str = "speed",
                   **ctx_fields) -> list[dict]:
    from gpuforge.core.bench import BenchContext
    from gpuforge.core.errors import UsageError
    from gpuforge.core.lazy import resolve
    from gpuforge.core.log import get_logger
    from gpuforge.core.plugins import get_registry, plugin_info
    from gpuforge.core.progress import progress

    reg = get_registry()
    if plugin is not None:
        plugin_info(plugin)  # unknown plugin -> one clear line
    benches = [(p, b) for p, b in reg.benchmarks
               if (plugin is None or p == plugin) and getattr(b, "suite", "speed") == suite]
    if names:
        benches = [(p, b) for p, b in benches if b.name in names]
    if not benches:
        raise UsageError(f"no {suite} benchmarks registered{' by ' + plugin if plugin else ''}")
    ctx = BenchContext(quick=quick, device=get_context().device, **ctx_fields)
    try:
        from gpuforge.hardware.cpu import cpu_profile

        prof = cpu_profile()
        ctx.cpu_peak = {"bandwidth_gbs": prof.get("memory_bandwidth_gbs"), "fp32_gflops": prof.get("fp32_gflops")}
    except Exception as exc:  # the ratios still stand without the peak shares
        get_logger("gpuforge.bench").warning("no CPU peak figures", reason=str(exc))
    rows: list[dict] = []
    with progress("benchmarks", total=len(benches)) as bar:
        for p, b in benches:
            get_logger("gpuforge.bench").info("running benchmark", plugin=p, bench=b.name)
            for r in resolve(b.run)(ctx):
                rows.append({"plugin": p, "bench": b.name, **r})
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


@app.command()
def bench(
    plugin: Optional[str] = typer.Argument(None, help="Only this plugin's benchmarks; `scale`: every plugin's scale benchmarks (peak memory and time against input size)."),
    quick: bool = typer.Option(False, "--quick", help="Smaller sizes, fewer repeats."),
    only: Optional[list[str]] = typer.Option(None, "--only", help="Only benchmarks with these names."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the rows as JSON to this file."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="scale: where generated inputs go (default ~/.cache/gpuforge-bench); they are deleted after each row."),
    keep_inputs: bool = typer.Option(False, "--keep-inputs", help="scale: keep the generated inputs."),
    sizes: Optional[str] = typer.Option(None, "--sizes", help="scale: only these size labels, comma-separated (e.g. 1.1B,7B)."),
    json_out: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
) -> None:
    """Each row: implementation, best time, and ratio against the baseline run in the same
    process (> 1 means faster), with the share of this machine's measured peak.
    `gpuforge bench scale`: peak RSS and time against input size, with fitted growth
    exponents (0: flat, 1: linear)."""
    if plugin == SCALE:
        _scale(quick, only, out, cache_dir, keep_inputs, sizes, json_out)
        return
    rows = run_benchmarks(plugin, quick, only)
    if out is not None:
        from gpuforge.core.files import write_text_atomic
        from gpuforge.core.output import to_json

        write_text_atomic(out, to_json(rows) + "\n")
    cols = ["plugin", "name", "impl", "seconds", "baseline", "ratio", "gbs", "share_of_peak_bw", "gflops", "share_of_peak_flops"]
    present = [c for c in cols if any(c in r for r in rows)]

    def human() -> None:
        print_table([{k: _fmt(v) for k, v in r.items()} for r in rows], columns=present, title="benchmarks")

    emit(rows, human, as_json=json_out or get_context().json)


def _scale(quick, only, out, cache_dir, keep_inputs, sizes, json_out) -> None:
    fields = {"cache_dir": cache_dir, "keep_inputs": keep_inputs,
              "sizes": tuple(x.strip() for x in sizes.split(",") if x.strip()) if sizes else ()}
    rows = run_benchmarks(None, quick, only, suite=SCALE, **fields)
    result = {"rows": rows, "growth": growth_table(rows)}
    if out is not None:
        from gpuforge.core.files import write_text_atomic
        from gpuforge.core.output import to_json

        write_text_atomic(out, to_json(result) + "\n")

    def human() -> None:
        cols = ["plugin", "series", "size_label", "size", "input_bytes", "peak_rss_mib", "seconds", "load_avg"]
        print_table([{k: _fmt(r.get(k)) for k in cols} for r in rows], columns=cols, title="scale")
        print_table([{k: _fmt(v) for k, v in g.items()} for g in result["growth"]], title="growth exponents")

    emit(result, human, as_json=json_out or get_context().json)
