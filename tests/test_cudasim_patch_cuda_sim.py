"""The simulator's shared-array race fix (core/cudasim.py): every simulated thread of a
block gets the same array for one call site, even when they arrive together."""
from __future__ import annotations

import threading

import numpy as np


def test_threads_arriving_together_share_one_array():
    from numba.cuda.simulator.kernelapi import FakeCUDAShared

    from gpuforge.core.cudasim import patch_shared_array_race

    patch_shared_array_race()
    for _ in range(20):
        shared = FakeCUDAShared(0)
        barrier, got = threading.Barrier(8), []

        def worker():
            barrier.wait()
            got.append(shared.array(16, np.float32))  # one call site for all threads

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({id(a) for a in got}) == 1
