"""Training budgets: steps, wall-clock minutes, and CPU minutes of this process.

On a machine shared with other jobs the wall clock measures the load as much as the
work; ``time.process_time`` (CPU seconds of all this process's threads) does not, so
quality-per-CPU-minute figures are reproducible there.
"""
from __future__ import annotations

import time


class Clock:
    """Training time, counted only inside ``with clock:`` blocks (evaluation excluded)."""

    def __init__(self, minutes: float | None = None, cpu_minutes: float | None = None):
        self.minutes, self.cpu_minutes = minutes, cpu_minutes
        self.wall = 0.0
        self.cpu = 0.0

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c
        return False

    def spent(self) -> bool:
        """True once either budget is used up."""
        return ((self.minutes is not None and self.wall >= self.minutes * 60)
                or (self.cpu_minutes is not None and self.cpu >= self.cpu_minutes * 60))

    def progress(self, step: int, steps: int) -> float:
        """How far training is, in [0, 1]: the largest of the step, wall-clock and CPU-time
        fractions, so that learning-rate decay and densification windows fit whichever
        budget ends training first."""
        p = step / max(steps, 1)
        if self.minutes:
            p = max(p, self.wall / (self.minutes * 60))
        if self.cpu_minutes:
            p = max(p, self.cpu / (self.cpu_minutes * 60))
        return min(p, 1.0)

    def stats(self) -> dict:
        return {"train_seconds": round(self.wall, 2), "train_cpu_seconds": round(self.cpu, 2)}
