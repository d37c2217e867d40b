"""On a real NVIDIA GPU (marked gpu; skipped elsewhere): the numba-cuda kernels take CUDA
torch tensors without a copy and agree with the reference."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpuforge.core.kernels import call  # noqa: E402


@pytest.mark.gpu
def test_nf4_kernels_on_cuda_tensors():
    x = np.random.default_rng(0).standard_normal(1 << 20).astype(np.float32)
    p_ref, a_ref = call("quantize.nf4_encode", x, 64, backend="reference")
    xt = torch.from_numpy(x).cuda()
    p, a = call("quantize.nf4_encode", xt, 64)
    assert p.is_cuda and np.array_equal(p.cpu().numpy(), p_ref) and np.array_equal(a.cpu().numpy(), a_ref)
    out = call("quantize.nf4_decode", p, a, x.size, 64)
    assert np.array_equal(out.cpu().numpy(), call("quantize.nf4_decode", p_ref, a_ref, x.size, 64, backend="reference"))


@pytest.mark.gpu
def test_matvec_and_int8_on_cuda_tensors():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((256, 512)).astype(np.float32)
    p, a = call("quantize.nf4_encode", w.reshape(-1), 64, backend="reference")
    x = rng.standard_normal(512).astype(np.float32)
    y = call("quantize.nf4_matvec", torch.from_numpy(p).cuda(), torch.from_numpy(a).cuda(), torch.from_numpy(x).cuda(),
             256, 64)
    ref = call("quantize.nf4_matvec", p, a, x, 256, 64, backend="reference")
    assert np.allclose(y.cpu().numpy(), ref, rtol=1e-4, atol=1e-4)
    xa = rng.standard_normal((16, 512)).astype(np.float32)
    codes, sx, outl = call("quantize.int8_vectorwise_quant", torch.from_numpy(xa).cuda(), 3.0)
    rc, rs, ro = call("quantize.int8_vectorwise_quant", xa, 3.0, backend="reference")
    assert np.array_equal(codes.cpu().numpy(), rc) and np.array_equal(outl.cpu().numpy(), ro)
