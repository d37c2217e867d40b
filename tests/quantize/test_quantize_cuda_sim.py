"""The CUDA backends of the quantize kernels in Numba's simulator (own pytest process,
NUMBA_ENABLE_CUDASIM=1): the registry's kernel contract for finetune, and a quantized
layer's forward pass computed on the numba-cuda kernels."""
from __future__ import annotations

import numpy as np
import pytest

from gpuforge.core.kernels import call


def test_nf4_contract_on_cuda_backend():
    x = np.random.default_rng(0).standard_normal(999).astype(np.float32)
    p_ref, a_ref = call("quantize.nf4_encode", x, 64, backend="reference")
    p, a = call("quantize.nf4_encode", x, 64, backend="numba-cuda")
    assert np.array_equal(p, p_ref) and np.array_equal(a, a_ref)
    assert p.shape == (500,) and a.shape == (16,)
    out = call("quantize.nf4_decode", p, a, 999, 64, backend="numba-cuda")
    assert np.array_equal(out, call("quantize.nf4_decode", p, a, 999, 64, backend="reference"))
    x[5] = np.nan
    with pytest.raises(ValueError):
        call("quantize.nf4_encode", x, 64, backend="numba-cuda")


def test_double_quant_and_matvec_on_cuda_backend():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    p, a = call("quantize.nf4_encode", w.reshape(-1), 64, backend="numba-cuda")
    q, nested, off = call("quantize.absmax_dq_encode", a, 256, backend="numba-cuda")
    a2 = call("quantize.absmax_dq_decode", q, nested, off, 256, backend="numba-cuda")
    assert np.allclose(a2, a, rtol=0.02)
    x = rng.standard_normal(64).astype(np.float32)
    y = call("quantize.nf4_matvec", p, a, x, 8, 64, backend="numba-cuda")
    ref = call("quantize.nf4_decode", p, a, 512, 64).reshape(8, 64) @ x
    assert np.allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_double_quant_cuda_encoder_stores_what_bitsandbytes_stores():
    """numba-cuda's double quantization equals the reference and bitsandbytes'
    quantize_4bit(..., compress_statistics=True) on an LLM-like bf16 weight (tiny size)."""
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("bitsandbytes").functional
    w = (torch.randn(24, 64 * 128, generator=torch.Generator().manual_seed(3)) * 0.02).to(torch.bfloat16)
    _, st = F.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
    _, absmax = call("quantize.nf4_encode", w.float().numpy().reshape(-1), 64, backend="reference")
    q, nested, off = call("quantize.absmax_dq_encode", absmax, 256, backend="numba-cuda")
    rq, rnested, roff = call("quantize.absmax_dq_encode", absmax, 256, backend="reference")
    assert np.array_equal(q, rq) and np.array_equal(nested, rnested) and np.array_equal(off, roff)
    assert np.array_equal(q, st.absmax.numpy()) and np.array_equal(nested, st.state2.absmax.numpy())
    assert off[0] == np.float32(st.offset.item())
