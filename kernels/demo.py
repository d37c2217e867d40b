"""The kernels plugin's demo: check every shared kernel against its reference and time it."""
from __future__ import annotations

from pathlib import Path


def run(ctx, out_dir: Path) -> str:
    from gpuforge.core.bench import BenchContext
    from gpuforge.core.conformance import check_kernel, summarize
    from gpuforge.core.kernels import kernel_specs
    from gpuforge.kernels.bench import run as bench

    lines = ["| kernel | backends | cases passed | failed | skipped |", "|---|---|---|---|---|"]
    for name, spec in sorted(kernel_specs().items()):
        if not name.startswith("kernels."):
            continue
        s = summarize(check_kernel(spec))
        lines.append(f"| `{name}` | {', '.join(spec.backends)} | {s['pass']} | {s['fail']} | {s['skip']} |")
    lines += ["", "Speed (quick sizes; ratio = reference time / numba-cpu time):", "",
              "| benchmark | numba-cpu s | reference s | ratio |", "|---|---|---|---|"]
    rows = bench(BenchContext(quick=True))
    for r in rows:
        if r["impl"] == "numba-cpu":
            lines.append(f"| {r['name']} | {r['seconds']:.4f} | {r['baseline_seconds']:.4f} | {r['ratio']:.1f}x |")
    return "\n".join(lines)
