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
