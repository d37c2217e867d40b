"""One process, two OpenMP thread pools: torch's and numba's (its default ``omp``
threading layer). With OpenMP's default wait policy each pool's idle threads spin for a
while after every parallel region, so when torch ops and numba kernels alternate on a
2-core machine every region waits for the other pool's spinning threads to be
descheduled. Measured here (a small MLP training step plus one numba kernel, 200 steps):
45 s with the default policy, 0.6-0.8 s with ``OMP_WAIT_POLICY=PASSIVE``; torch alone
0.51 s default, 0.77 s passive. The plugins mix the two everywhere, so the CLI (and the
test suite) start with the passive policy unless the user set one.
"""
from __future__ import annotations

import os


def prefer_passive_openmp() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless set; must run before torch or numba load
    their OpenMP runtime (it reads the variable once, at start-up)."""
    if not os.environ.get("OMP_WAIT_POLICY"):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
