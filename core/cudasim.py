"""A fix for a race in Numba's CUDA simulator, applied only when it is on.

The simulator gives each ``cuda.shared.array`` call site one array per block, but it
creates it with a look-up followed by a store: two simulated threads that reach the
line together can each create an array, so part of the block reduces into a private
copy (seen here as an occasional wrong block maximum). ``dict.setdefault`` is one
atomic step under the GIL, so every thread gets the first array stored.
"""
from __future__ import annotations

import os
import sys
import traceback

_patched = False


def patch_shared_array_race() -> None:
    global _patched
    if _patched or os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        return
    import numpy as np

    try:  # the same modules the simulator itself uses
        from numba.cuda import types
        from numba.cuda.np import numpy_support
        from numba.cuda.simulator.kernelapi import FakeCUDAShared
    except ImportError:  # pragma: no cover - a simulator laid out differently
        return
    original = FakeCUDAShared.array

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        caller = tuple(traceback.extract_stack(sys._getframe())[-2][0:2])
        return self._allocations.setdefault(caller, np.empty(shape, dtype))

    FakeCUDAShared.array = array
    _patched = True
