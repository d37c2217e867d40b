"""GPTQ / RTN: the v1 layout checked by an unpack written here from the documented layout
(AutoGPTQ QuantLinear), error compensation beats RTN, act-order, packing speed."""
from __future__ import annotations

import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gpuforge.core.kernels import call  # noqa: E402
from gpuforge.plugins.quantize import formats, gptq  # noqa: E402
from gpuforge.plugins.quantize.modules import GPTQLinear  # noqa: E402


def independent_unpack(qweight: np.ndarray, bits: int, rows: int) -> np.ndarray:
    """GPTQ v1: along axis 0, each column is a little-endian bit stream of 32-bit words;
    value j occupies bits [bits*j, bits*j + bits) of its group's stream (3 bits: 32 values
    in 3 words)."""
    words = qweight.astype(np.int64) & 0xFFFFFFFF
    per_group, wpg = (32, 3) if bits == 3 else (32 // bits, 1)
    out = np.zeros((rows, qweight.shape[1]), np.int64)
    for j in range(rows):
        g, k = divmod(j, per_group)
        stream = 0
        for w in range(wpg):
            stream |= words[g * wpg + w].astype(object) << (32 * w)
        out[j] = np.array([(int(s) >> (bits * k)) & (2 ** bits - 1) for s in stream], np.int64)
    return out


def _layer(seed=0, out=64, n_in=256, tokens=512):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, n_in, generator=g) * 0.05
    # correlated, unevenly scaled inputs: where GPTQ's error compensation pays off
    mix = torch.randn(n_in, n_in, generator=g) / n_in ** 0.5 + torch.eye(n_in)
    x = (torch.randn(tokens, n_in, generator=g) * torch.linspace(0.2, 3.0, n_in)) @ mix
    h = gptq.Hessian(n_in)
    h.add(x)
    return w, x, h.H


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("sym", [False, True])
def test_v1_layout_independent_unpack(bits, sym):
    w, x, H = _layer(bits)
    gq = gptq.gptq(w, H, bits, 64, sym, act_order=True)
    t = formats.gptq_layer_tensors(gq)
    n_in, out = 256, 64
    assert t["qweight"].dtype == np.int32 and t["qweight"].shape == (n_in * bits // 32, out)
    assert t["qzeros"].dtype == np.int32 and t["qzeros"].shape == (n_in // 64, out * bits // 32)
    assert t["scales"].dtype == np.float16 and t["scales"].shape == (n_in // 64, out)
    assert t["g_idx"].dtype == np.int32 and t["g_idx"].shape == (n_in,)
    q = independent_unpack(t["qweight"], bits, n_in)
    z = independent_unpack(np.ascontiguousarray(t["qzeros"].T), bits, out).T + 1   # v1 stores zero - 1
    g = t["g_idx"].astype(np.int64)
    w_indep = (t["scales"].astype(np.float32)[g] * (q - z[g]).astype(np.float32)).T
    assert np.array_equal(q.T, gq.q.numpy())
    assert np.allclose(w_indep, gq.dequantize().numpy(), rtol=1e-6, atol=1e-7)
    assert np.allclose(GPTQLinear(t, bits, n_in, out).dequantized(), w_indep, rtol=1e-6, atol=1e-7)
    if sym:
        assert (z == 2 ** (bits - 1)).all()


def test_gptq_beats_rtn_and_act_order_lower_still():
    w, x, H = _layer(0)
    ref = x @ w.T

    def err(gq):
        return float(((x @ gq.dequantize().T) - ref).norm() / ref.norm())

    e_rtn = err(gptq.rtn(w, 4, 128))
    e_gptq = err(gptq.gptq(w, H, 4, 128))
    e_act = err(gptq.gptq(w, H, 4, 128, act_order=True))
    assert e_gptq < e_rtn and e_act < e_gptq


def test_gptq_module_forward_matches_dequantized_weight():
    w, x, H = _layer(1)
    gq = gptq.gptq(w, H, 4, 64, act_order=True)
    mod = GPTQLinear(formats.gptq_layer_tensors(gq), 4, 256, 64, bias=np.zeros(64, np.float32))
    with torch.no_grad():
        want = x[:3] @ gq.dequantize().T
        assert torch.allclose(mod(x[:3]), want, atol=1e-4)
        assert torch.allclose(mod(x[:1]), want[:1], atol=1e-4)   # the fused matvec path


def test_pack_4096x4096_well_under_a_second():
    q = np.random.default_rng(0).integers(0, 16, (4096, 4096)).astype(np.uint8)
    call("kernels.pack_int32", q[:64], 4)   # compile / load the cache
    t0 = time.perf_counter()
    packed = call("kernels.pack_int32", q, 4)
    assert time.perf_counter() - t0 < 1.0
    assert packed.shape == (512, 4096)


@pytest.mark.parametrize("sym", [False, True])
def test_mse_ranges_never_worse_than_min_max(sym):
    """The clipping search starts from the min/max range and keeps a shrink only when it
    lowers the row's sum |error|^2.4; heavy-tailed rows get clipped."""
    w = torch.from_numpy(np.random.default_rng(3).standard_t(3, (64, 128)).astype(np.float32))

    def err(s, z):
        q = torch.clamp(torch.round(w / s[:, None]) + z[:, None], 0, 15)
        return ((s[:, None] * (q - z[:, None]) - w).abs() ** 2.4).sum(1)

    e0 = err(*gptq.find_params(w, 4, sym))
    s1, z1 = gptq.find_params(w, 4, sym, mse=True)
    e1 = err(s1, z1)
    assert (e1 <= e0 + 1e-6).all() and (e1 < e0).float().mean() > 0.5
    assert (s1 <= gptq.find_params(w, 4, sym)[0] + 1e-6).all()
