"""The CUDA backends through the autograd Functions, in Numba's simulator (own process);
the registry's conformance cases are run centrally (tests/test_kernels_cuda_sim.py)."""
from __future__ import annotations

import numpy as np
import torch

from gpuforge.plugins.radiance import hashgrid as H
from gpuforge.plugins.radiance import kernel_cases as KC


def test_hash_encode_function_on_numba_cuda_matches_cpu():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((40, 3)).astype(np.float32))
    sc, res = H.level_params(3, 4, 2.0)
    t1 = torch.tensor(rng.standard_normal((3, 256, 2)).astype(np.float32), requires_grad=True)
    t2 = t1.detach().clone().requires_grad_(True)
    g = torch.from_numpy(rng.standard_normal((40, 6)).astype(np.float32))
    a = H.HashEncodeFn.apply(x, t1, sc, res, "numba-cuda")
    b = H.HashEncodeFn.apply(x, t2, sc, res, "numba-cpu")
    np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), atol=1e-6)
    a.backward(g)
    b.backward(g)
    np.testing.assert_allclose(t1.grad.numpy(), t2.grad.numpy(), atol=1e-5)


def test_cuda_rasterizer_renders_like_cpu():
    from gpuforge.plugins.radiance import rasterize as R
    from gpuforge.plugins.radiance import rasterize_cuda as RC

    args = KC._raster_inputs(15, 16, 16, 4, 0.4)
    for a, b in zip(R.gs_rasterize_fwd_cpu(*args), RC.gs_rasterize_fwd_cuda(*args)):
        np.testing.assert_allclose(a, b, atol=1e-5)
