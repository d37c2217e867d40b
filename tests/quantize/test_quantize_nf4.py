"""NF4/FP4 + double quantization: bit-compatibility with bitsandbytes 0.50 (CPU), the
issue's error numbers, and state-dict interop in both directions (Linear4bit and
Linear8bitLt)."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
bnb = pytest.importorskip("bitsandbytes")
F = bnb.functional

from gpuforge.core.kernels import call  # noqa: E402
from gpuforge.plugins.quantize import formats, nf4  # noqa: E402
from gpuforge.plugins.quantize.modules import Int8Linear, NF4Linear  # noqa: E402


def _normal(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_code_tables_are_bitsandbytes():
    assert np.array_equal(F.get_4bit_type("nf4", device="cpu").numpy(), nf4.NF4_CODE)
    assert np.array_equal(F.get_4bit_type("fp4", device="cpu").numpy(), nf4.FP4_CODE)
    assert np.array_equal(F.create_dynamic_map(signed=True).numpy(), nf4.DYNAMIC_MAP)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("n,bs", [(64 * 300, 64), (1000, 64), (4096 + 2, 128), (1001, 64), (5000, 4096)])
def test_encode_decode_bit_identical_to_bitsandbytes(quant_type, n, bs):
    x = _normal(n, seed=n)
    x[:bs] = 0.0  # an all-zero block
    packed, absmax = call("quantize.nf4_encode", x, bs, quant_type)
    ref, state = F.quantize_4bit(torch.from_numpy(x), blocksize=bs, quant_type=quant_type)
    ref = ref.numpy().reshape(-1)
    # the pad nibble of odd n is ours (0); every real value is bit-identical
    assert np.array_equal(packed[: n // 2], ref[: n // 2])
    if n % 2:
        assert packed[-1] >> 4 == ref[-1] >> 4 and packed[-1] & 15 == 0
    full = n // bs
    assert np.array_equal(absmax[:full], state.absmax.numpy()[:full])
    ours = call("quantize.nf4_decode", packed, absmax, n, bs, quant_type)
    theirs = torch.ops.bitsandbytes.dequantize_4bit(torch.from_numpy(packed).reshape(-1, 1), torch.from_numpy(absmax),
                                                   bs, quant_type, (n,), torch.float32).numpy().reshape(-1)
    assert np.array_equal(ours, theirs)


def test_issue_numbers_1024x1024():
    x = _normal(1024 * 1024, seed=0)

    def mae(qt, absmax=None):
        p, a = call("quantize.nf4_encode", x, 64, qt)
        return float(np.abs(call("quantize.nf4_decode", p, a if absmax is None else absmax, x.size, 64, qt) - x).mean()), p, a

    m_nf4, p, a = mae("nf4")
    m_fp4, _, _ = mae("fp4")
    blocks = x.reshape(-1, 64)
    am = np.abs(blocks).max(1, keepdims=True)
    m_int4 = float(np.abs(np.clip(np.rint(blocks / am * 7), -7, 7) * am / 7 - blocks).mean())
    assert m_nf4 <= 0.0729
    assert m_nf4 < m_fp4 and m_nf4 < m_int4
    q, nested, off = call("quantize.absmax_dq_encode", a, 256)
    m_dq, _, _ = mae("nf4", call("quantize.absmax_dq_decode", q, nested, off, 256))
    assert abs(m_dq - m_nf4) / m_nf4 < 0.01
    bits = 8 * (p.nbytes + q.nbytes + nested.nbytes + off.nbytes) / x.size
    assert bits <= 4.13


def test_nan_raises_value_error_everywhere():
    x = _normal(256)
    x[17] = np.nan
    for backend in ("reference", "numba-cpu"):
        with pytest.raises(ValueError):
            call("quantize.nf4_encode", x, 64, backend=backend)


def test_double_quant_codes_match_bitsandbytes():
    a = np.abs(_normal(5000, 1)) + np.float32(0.1)
    q, nested, off = call("quantize.absmax_dq_encode", a, 256)
    at = torch.from_numpy(a)
    qb, st = F.quantize_blockwise(at - at.mean(), blocksize=256)
    assert np.array_equal(qb.numpy(), q) and np.array_equal(st.absmax.numpy(), nested)
    assert off[0] == np.float32(at.mean().item())


@pytest.mark.parametrize("case", ["llm-bf16-nf4", "llm-bf16-fp4", "normal-f32-nf4", "odd-f32-nf4"])
def test_double_quant_encoder_stores_exactly_what_bitsandbytes_stores(case):
    """The encoders, not only the decoders: every tensor bitsandbytes'
    quantize_4bit(..., compress_statistics=True) stores (codes, 8-bit absmax, nested
    absmax, both code tables, the JSON state with nested_offset and dtype) equals ours
    byte for byte, on an LLM-scale bf16 weight (std 0.02, 2048 x 5632) and on N(0, 1)."""
    kind, dtype, quant_type = case.split("-")
    g = torch.Generator().manual_seed(0)
    if kind == "llm":
        w = (torch.randn(2048, 5632, generator=g) * 0.02).to(torch.bfloat16)
    elif kind == "normal":
        w = torch.randn(1024, 1024, generator=g)
    else:                                   # blocks of 256 absmax values that do not fill the last one
        w = torch.randn(100, 64 * 3 * 101, generator=g)
    q, st = F.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type=quant_type)
    theirs = {"weight": q.numpy()} | {"weight." + k: v.numpy() for k, v in st.as_dict(packed=True).items()}
    ours = formats.nf4_layer_tensors(w.float().numpy(), quant_type, 64, True,
                                     dtype={"bf16": "bfloat16", "f32": "float32"}[dtype])
    assert sorted(ours) == sorted(theirs)
    for k in theirs:
        assert ours[k].dtype == theirs[k].dtype and ours[k].shape == theirs[k].shape, k
        assert ours[k].tobytes() == theirs[k].tobytes(), (k, int((ours[k] != theirs[k]).sum()))


def _bnb_state(tensors: dict) -> dict:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items() if k != "weight"}


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("double_quant", [True, False])
def test_ours_loads_through_params4bit_from_prequantized(quant_type, double_quant):
    w = _normal((96, 128), 3)
    t = formats.nf4_layer_tensors(w, quant_type, 64, double_quant)
    assert t["weight"].shape == (96 * 128 // 2, 1) and t["weight"].dtype == np.uint8
    assert t["weight.absmax"].dtype == (np.uint8 if double_quant else np.float32)
    state = json.loads(bytes(t["weight.quant_state.bitsandbytes__" + quant_type]).decode())
    assert state["shape"] == [96, 128] and state["blocksize"] == 64 and state["quant_type"] == quant_type
    if double_quant:
        assert state["nested_blocksize"] == 256 and "nested_offset" in state
    p = bnb.nn.Params4bit.from_prequantized(data=torch.from_numpy(t["weight"]), quantized_stats=_bnb_state(t),
                                            device="cpu")
    theirs = F.dequantize_4bit(p.data, p.quant_state).numpy()
    ours = formats.nf4_dequantize(formats.read_nf4_state(t))
    assert np.array_equal(theirs, ours)
    # and a Linear4bit built on it computes what our module computes
    lin = bnb.nn.Linear4bit(128, 96, bias=False, compute_dtype=torch.float32, quant_type=quant_type)
    lin.weight = p
    x = torch.from_numpy(_normal((3, 128), 4))
    with torch.no_grad():
        yb = lin(x)
        yo = NF4Linear.from_state(t)(x)
        y1 = NF4Linear.from_state(t)(x[:1])   # the fused W4A16 matvec path
    assert torch.allclose(yb, yo, atol=1e-4, rtol=1e-4)
    assert torch.allclose(yb[:1], y1, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_gptq_chosen_codes_load_through_bitsandbytes_and_lower_output_error(quant_type):
    """--gptq keeps the layout: bitsandbytes dequantizes the layer exactly as we do, the
    scales are the stored (double-quantized) block absmax, and on correlated inputs the
    layer's output error is lower than round-to-nearest's."""
    from gpuforge.plugins.quantize.gptq import Hessian

    rng = np.random.default_rng(5)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    x = rng.standard_normal((512, 256)).astype(np.float32) @ rng.standard_normal((256, 256)).astype(np.float32)
    h = Hessian(256)
    h.add(torch.from_numpy(x))
    t = formats.nf4_gptq_layer_tensors(w, h.H, quant_type, 64, True)
    p = bnb.nn.Params4bit.from_prequantized(data=torch.from_numpy(t["weight"]), quantized_stats=_bnb_state(t),
                                            device="cpu")
    theirs = F.dequantize_4bit(p.data, p.quant_state).numpy()
    ours = formats.nf4_dequantize(formats.read_nf4_state(t))
    assert np.array_equal(theirs, ours)
    rtn = formats.nf4_dequantize(formats.read_nf4_state(formats.nf4_layer_tensors(w, quant_type, 64, True)))
    assert np.array_equal(t["weight.absmax"], formats.nf4_layer_tensors(w, quant_type, 64, True)["weight.absmax"])

    def err(wq):
        return np.linalg.norm(x @ (wq - w).T) / np.linalg.norm(x @ w.T)

    assert err(ours) < 0.8 * err(rtn)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("path", ["avx512", "lookup-table", "per-value"])
def test_matvec_paths_agree_with_reference(monkeypatch, quant_type, path):
    """numba-cpu nf4_matvec has four paths (AVX-512 vpermps, byte shuffles, byte-pair
    lookup tables, per-value decode); the conformance cases reach the ones this CPU
    takes, this test forces each on the same layer (byte shuffles: test_quantize_matvec.py)."""
    from gpuforge.plugins.quantize import matvec, simd

    if path == "avx512" and not simd.AVAILABLE:
        pytest.skip("this CPU has no AVX-512")
    rows, cols, bs = 13, 384, 64
    p, a = formats.call("quantize.nf4_encode", _normal((rows, cols), 8).reshape(-1), bs, quant_type)
    x = _normal(cols, 9)
    monkeypatch.setattr(matvec, "USE_AVX512", path == "avx512")
    monkeypatch.setattr(matvec, "USE_BYTES", False)
    if path == "per-value":
        y = np.zeros(rows, np.float32)
        matvec._nf4_matvec_rows(p, a, x, rows, bs, matvec.code_table(quant_type), y)
    else:
        y = matvec.nf4_matvec_cpu(p, a, x, rows, bs, quant_type)
    ref = matvec.nf4_matvec(p, a, x, rows, bs, quant_type)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("compress", [True, False])
def test_bitsandbytes_state_dict_loads_into_ours(compress):
    torch.manual_seed(0)
    w = torch.randn(64, 128)
    lin = bnb.nn.Linear4bit(128, 64, bias=True, compress_statistics=compress, quant_type="nf4",
                            compute_dtype=torch.float32)
    lin.weight = bnb.nn.Params4bit(w, requires_grad=False, compress_statistics=compress, quant_type="nf4")
    lin.weight = lin.weight._quantize("cpu")
    sd = {k: v.numpy() for k, v in lin.state_dict().items()}
    ours = NF4Linear.from_state({k: v for k, v in sd.items() if k != "bias"}, sd["bias"])
    x = torch.randn(5, 128)
    with torch.no_grad():
        assert torch.allclose(lin(x), ours(x), atol=1e-4, rtol=1e-4)
        assert torch.allclose(lin(x[:1]), ours(x[:1]), atol=1e-4, rtol=1e-4)


def test_int8_layout_matches_bitsandbytes_and_loads():
    torch.manual_seed(0)
    w = torch.randn(64, 128)
    t = formats.int8_layer_tensors(w.numpy())
    cb, scb, _ = F.int8_vectorwise_quant(w.clone())
    assert np.array_equal(cb.numpy(), t["weight"]) and np.array_equal(scb.numpy(), t["SCB"])
    lin = bnb.nn.Linear8bitLt(128, 64, bias=False, has_fp16_weights=False, threshold=6.0)
    lin.weight = bnb.nn.Int8Params(torch.ones(64, 128), requires_grad=False, has_fp16_weights=False)._quantize("cpu")
    lin.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in t.items()})
    assert np.array_equal(lin.weight.data.numpy(), t["weight"])
    assert np.array_equal(lin.weight.SCB.numpy(), t["SCB"])
    theirs = F.int8_vectorwise_dequant(lin.weight.data, lin.weight.SCB).numpy()
    ours = Int8Linear(t["weight"], t["SCB"]).dequantized()
    assert np.allclose(theirs, ours, rtol=1e-6, atol=1e-7)


def test_llm_int8_outlier_decomposition_beats_plain_int8():
    torch.manual_seed(1)
    w = torch.randn(256, 512) * 0.05
    x = torch.randn(16, 512)
    x[:, [7, 100, 300]] *= 25.0     # outlier feature dimensions (LLM.int8() sec. 3.2)
    t = formats.int8_layer_tensors(w.numpy())
    ref = x @ w.T
    with torch.no_grad():
        e_dec = float((Int8Linear(t["weight"], t["SCB"], threshold=6.0)(x) - ref).norm() / ref.norm())
        e_plain = float((Int8Linear(t["weight"], t["SCB"], threshold=0.0)(x) - ref).norm() / ref.norm())
    assert e_dec < 0.5 * e_plain
