"""On a real NVIDIA GPU: the CUDA kernels take CUDA torch tensors without a copy and
return tensors on the same device."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_hash_encode_with_cuda_tensors():
    import torch

    from gpuforge.plugins.radiance import hashgrid as H
    from gpuforge.plugins.radiance.hashgrid_cuda import hash_encode_cuda

    rng = np.random.default_rng(0)
    x = rng.random((1000, 3)).astype(np.float32)
    table = rng.standard_normal((8, 4096, 2)).astype(np.float32)
    sc, res = H.level_params(8, 16, 1.5)
    out = hash_encode_cuda(torch.from_numpy(x).cuda(), torch.from_numpy(table).cuda(), sc, res)
    assert out.is_cuda
    np.testing.assert_allclose(out.cpu().numpy(), H.hash_encode_cpu(x, table, sc, res), atol=1e-5)


def test_rasterizer_with_cuda_tensors():
    import torch

    from gpuforge.plugins.radiance import kernel_cases as KC
    from gpuforge.plugins.radiance.rasterize import gs_rasterize_fwd_cpu
    from gpuforge.plugins.radiance.rasterize_cuda import gs_rasterize_fwd_cuda

    args = KC._raster_inputs(500, 128, 128, 0)
    dev = [torch.from_numpy(np.asarray(a)).cuda() if isinstance(a, np.ndarray) and a.ndim else a for a in args]
    img, T, n = gs_rasterize_fwd_cuda(*dev)
    assert img.is_cuda
    ref = gs_rasterize_fwd_cpu(*args)
    np.testing.assert_allclose(img.cpu().numpy(), ref[0], atol=1e-4)
