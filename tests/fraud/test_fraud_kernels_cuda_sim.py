"""The fraud CUDA kernels in Numba's simulator (run by the NUMBA_ENABLE_CUDASIM=1 process)."""
from __future__ import annotations

import numpy as np
import pytest

from gpuforge.plugins.fraud import kernels as K


@pytest.mark.parametrize("name,cases", [("knn_min_edge", K.min_edge_cases), ("union_find_merge", K.merge_cases)])
def test_cuda_matches_reference(name, cases):
    from gpuforge.plugins.fraud import kernels_cuda as C

    ref, cuda_fn = getattr(K, name), getattr(C, f"{name}_cuda")
    for case in cases():
        if not case.simulator:
            continue
        try:
            want = ref(*case.args)
        except Exception as exc:
            with pytest.raises(type(exc)):
                cuda_fn(*case.args)
            continue
        got = cuda_fn(*case.args)
        want = want if isinstance(want, tuple) else (want,)
        got = got if isinstance(got, tuple) else (got,)
        for a, b in zip(want, got):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=case.name)


def test_device_arrays_stay_on_device():
    from numba import cuda

    from gpuforge.plugins.fraud import kernels_cuda as C

    comp = cuda.to_device(np.arange(50, dtype=np.int64))
    u = cuda.to_device(np.arange(1, 50, dtype=np.int64))
    v = cuda.to_device(np.arange(0, 49, dtype=np.int64))
    out = C.union_find_merge_cuda(comp, u, v)
    assert hasattr(out, "copy_to_host")
    assert (out.copy_to_host() == 0).all()
