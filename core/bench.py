"""Benchmark helpers shared by every plugin's benchmarks.

Absolute times on a shared machine are noise; ratios against a baseline timed in
the same process are the result (DESIGN.md "Benchmarks").
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class BenchContext:
    quick: bool = False
    """Smaller sizes and fewer repeats (tests, demos)."""
    device: str = "auto"
    cpu_peak: dict[str, float] = field(default_factory=dict)
    """Measured peaks of this machine: ``bandwidth_gbs``, ``fp32_gflops`` (when known)."""
    cache_dir: str | None = None
    """Scale benchmarks: where generated inputs go (default ``~/.cache/gpuforge-bench``)."""
    keep_inputs: bool = False
    """Scale benchmarks: keep generated inputs (they are deleted after each row otherwise)."""
    sizes: tuple[str, ...] = ()
    """Scale benchmarks: only these size labels (e.g. ``1.1B``), when given."""
    scaling: str | None = None
    """Scaling benchmarks: ``strong`` (fixed rows), ``weak`` (rows per worker), ``both`` or
    ``memory`` (peak RSS of the partitioned steps); None: the benchmark's default."""
    workers: tuple[int, ...] = ()
    """Scaling benchmarks: the cluster sizes to run (e.g. ``(1, 2)``); empty: the default."""
    rows: int | None = None
    """Benchmarks that take an input size in rows (e.g. fraud scaling); None: their default."""

    def cache(self, name: str):
        from pathlib import Path

        root = Path(self.cache_dir).expanduser() if self.cache_dir else Path.home() / ".cache" / "gpuforge-bench"
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def repeat(self) -> int:
        return 3 if self.quick else 7


def best_of(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1, sync: Callable[[], None] | None = None) -> float:
    """Best wall time of ``fn()`` over ``repeat`` runs after ``warmup`` runs (compiles,
    caches). ``sync`` (e.g. ``torch.cuda.synchronize``) runs before each clock read."""
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - t0)
    return best


def best_of_interleaved(fns: dict[str, Callable[[], Any]], repeat: int = 5, warmup: int = 1,
                        sync: Callable[[], None] | None = None) -> dict[str, float]:
    """:func:`best_of` for several functions taken in turns (a, b, c, a, b, c, ...): on a
    shared machine the load moves by the second, and a ratio of two best times is only
    fair when both had the same chances at a quiet moment."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for key, fn in fns.items():
            if sync:
                sync()
            t0 = time.perf_counter()
            fn()
            if sync:
                sync()
            best[key] = min(best[key], time.perf_counter() - t0)
    return best


def row(name: str, impl: str, seconds: float, *, baseline: str | None = None, baseline_seconds: float | None = None,
        bytes_moved: float | None = None, flops: float | None = None, ctx: BenchContext | None = None, **extra: Any) -> dict:
    """One benchmark result row: ratio = baseline time / this time (> 1 is faster)."""
    out: dict[str, Any] = {"name": name, "impl": impl, "seconds": seconds}
    if baseline is not None and baseline_seconds is not None:
        out["baseline"] = baseline
        out["baseline_seconds"] = baseline_seconds
        out["ratio"] = baseline_seconds / seconds if seconds > 0 else float("inf")
    if bytes_moved is not None and seconds > 0:
        out["gbs"] = bytes_moved / seconds / 1e9
        peak = (ctx.cpu_peak.get("bandwidth_gbs") if ctx else None)
        if peak:
            out["share_of_peak_bw"] = out["gbs"] / peak
    if flops is not None and seconds > 0:
        out["gflops"] = flops / seconds / 1e9
        peak = (ctx.cpu_peak.get("fp32_gflops") if ctx else None)
        if peak:
            out["share_of_peak_flops"] = out["gflops"] / peak
    out.update(extra)
    return out


def measure_command(argv: list[str], env: dict | None = None, timeout: float | None = None,
                    cwd: str | None = None, stdout: bool = False) -> dict:
    """Run ``argv`` in a fresh process: its own peak resident set (through
    :func:`gpuforge.core.peakrss.run_measured`, so this process's size does not leak in;
    what ``/usr/bin/time -v`` reports as "Maximum resident set size"), wall time, exit status
    and the end of its stderr; with ``stdout`` also everything it printed (``"stdout"``,
    e.g. a ``--json`` result). On ``timeout`` the status is -9 and the peak ``None``."""
    import subprocess
    import tempfile

    from gpuforge.core.peakrss import run_measured

    with tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as out:
        m = run_measured(argv, cwd=cwd, env=env, stdout=out if stdout else subprocess.DEVNULL, stderr=err,
                         timeout=timeout)
        err.seek(0), out.seek(0)
        m["stderr_tail"] = err.read()[-2000:].decode(errors="replace")
        if stdout:
            m["stdout"] = out.read().decode(errors="replace")
    return m


def measure_gpuforge(args: list[str], cwd, global_args: tuple[str, ...] = ()) -> dict:
    """``gpuforge [global_args] --json <args>`` in a fresh process through
    :func:`measure_command` (this process's size does not count). Returns its measurement
    with ``"result"``, the parsed JSON result, and ``"load_avg"``, the 1-minute load average
    around it; a non-zero exit raises ``RuntimeError`` with its last stderr line."""
    import json
    import os

    from gpuforge.core.safepath import python_argv, safe_env

    load0 = os.getloadavg()[0]
    m = measure_command([*python_argv(), "-m", "gpuforge.cli", *global_args, "--json", *args], env=safe_env(),
                        cwd=str(cwd), stdout=True)
    if m["returncode"] != 0:
        last = (m["stderr_tail"].strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"gpuforge {' '.join(args)} exited {m['returncode']}: {last}")
    m["result"] = json.loads(m["stdout"])
    m["load_avg"] = round((load0 + os.getloadavg()[0]) / 2, 2)
    return m


def growth_exponent(sizes: list[float], values: list[float]) -> float | None:
    """Least-squares slope of log(value) against log(size): 1 is linear growth, 0 none."""
    import math

    pts = [(math.log(s), math.log(v)) for s, v in zip(sizes, values) if s > 0 and v > 0]
    if len({x for x, _ in pts}) < 2:
        return None
    n = len(pts)
    mx, my = sum(x for x, _ in pts) / n, sum(y for _, y in pts) / n
    return sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x, _ in pts)
