"""``quantize kv MODEL --bits B``: KVQuant analysis (Hooper et al. 2024, "KVQuant: Towards
10 Million Context Length LLM Inference with KV Cache Quantization") on a model's real keys
and values.

- Keys are captured at the output of the key projection (``key`` / ``k_proj``), which is
  before RoPE in models that have it (sec. 3.2, "Pre-RoPE Key Quantization"); values at
  the value projection.
- Per-channel key quantization (sec. 3.1: keys have outlier channels) against per-token
  key quantization (one grid per token and head); values per token and head.
- Dense-and-sparse (sec. 3.4): the ``outlier_frac`` most extreme values of each
  quantization vector (split evenly between the low and high tail) are kept exactly in
  fp16 (value + 32-bit index) and the range of the rest is quantized.
- Ranges are min-max of each vector over the analysed sequence (KVQuant calibrates
  per-channel key ranges offline; here the analysed text is also the calibration text).
- Attention-output error: ``softmax(Q K^T / sqrt(d)) V`` per head with the quantized K and
  V against fp32, relative Frobenius error.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError, UnsupportedError, UsageError
from gpuforge.plugins.quantize import model_io

_Q = re.compile(r"(?:^|\.)(query|q_proj)$")
_K = re.compile(r"(?:^|\.)(key|k_proj)$")
_V = re.compile(r"(?:^|\.)(value|v_proj)$")


def quantize_vectors(x: np.ndarray, bits: int, axis: int, outlier_frac: float = 0.0) -> np.ndarray:
    """Fake-quantize ``x`` (2-D) with one asymmetric min-max grid per vector along ``axis``
    (axis 0: per column = per channel; axis 1: per row = per token); with ``outlier_frac``
    the extreme values of each vector stay exact (dense-and-sparse)."""
    x = np.asarray(x, np.float32)
    maxq = 2 ** bits - 1
    if outlier_frac > 0:
        lo = np.quantile(x, outlier_frac / 2, axis=axis, keepdims=True)
        hi = np.quantile(x, 1 - outlier_frac / 2, axis=axis, keepdims=True)
    else:
        lo, hi = x.min(axis=axis, keepdims=True), x.max(axis=axis, keepdims=True)
    scale = np.where(hi > lo, (hi - lo) / maxq, 1.0)
    q = np.clip(np.rint((np.clip(x, lo, hi) - lo) / scale), 0, maxq)
    deq = (q * scale + lo).astype(np.float32)
    if outlier_frac > 0:
        out = (x < lo) | (x > hi)
        deq = np.where(out, x.astype(np.float16).astype(np.float32), deq)
    return deq


def _rel(a, b) -> float:
    d = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / d if d else 0.0


def attention(q, k, v, heads: int, kv_heads: int) -> np.ndarray:
    t, d = q.shape
    hd = d // heads
    qh = q.reshape(t, heads, hd).transpose(1, 0, 2)
    kh = k.reshape(t, kv_heads, hd).transpose(1, 0, 2)
    vh = v.reshape(t, kv_heads, hd).transpose(1, 0, 2)
    rep = heads // kv_heads
    kh, vh = np.repeat(kh, rep, axis=0), np.repeat(vh, rep, axis=0)
    s = qh @ kh.transpose(0, 2, 1) / math.sqrt(hd)
    s = np.exp(s - s.max(-1, keepdims=True))
    p = s / s.sum(-1, keepdims=True)
    return (p @ vh).transpose(1, 0, 2).reshape(t, heads * hd)


def qkv_names(names) -> tuple[list[str], list[str], list[str]]:
    """The query, key and value projections among module ``names``, in order."""
    qn = sorted(n for n in names if _Q.search(n))
    kn = sorted(n for n in names if _K.search(n))
    vn = sorted(n for n in names if _V.search(n))
    if not kn or len(qn) != len(kn) or len(kn) != len(vn):
        raise UnsupportedKV("no separate query/key/value projections (query|q_proj, key|k_proj, value|v_proj) "
                            "found; fused QKV layouts are not supported yet")
    return qn, kn, vn


def capture_qkv_by_block(runner):
    """Yield (layer index, [(Q, K, V) per line]) one transformer block at a time: the block's
    weights are loaded, its projections' outputs recorded over the calibration lines, then
    the block runs again for the next block's inputs and is freed."""
    mods = dict(runner.model.named_modules())
    for i, bname in enumerate(runner.block_names()):
        inside = [n for n in mods if n.startswith(bname + ".")]
        qn, kn, vn = qkv_names(inside)
        got: dict[str, list] = {n: [] for n in (qn[0], kn[0], vn[0])}
        runner.load(i)
        handles = [mods[n].register_forward_hook(lambda m, inp, o, n=n: got[n].append(o[0].detach().numpy().copy()))
                   for n in got]
        try:
            runner.run(i)
        finally:
            for h in handles:
                h.remove()
        yield i, list(zip(got[qn[0]], got[kn[0]], got[vn[0]]))
        runner.advance(i)


def _layer_row(layer: int, seqs: list[tuple], bits: int, outlier_frac: float, cfg, heads: int, kv_heads: int) -> dict:
    """Key/value quantization errors of one layer over its (Q, K, V) per sequence."""
    acc = {k: [] for k in ("kc", "kt", "kcs", "vt", "vts", "attn_c", "attn_t", "attn_cs")}
    hd = cfg.hidden_size // heads

    def per_token(x, frac=0.0):   # one grid per token and head
        return quantize_vectors(x.reshape(-1, hd), bits, 1, frac).reshape(x.shape)

    for q, k, v in seqs:
        kc, kt = quantize_vectors(k, bits, 0), per_token(k)
        kcs = quantize_vectors(k, bits, 0, outlier_frac)
        vt, vts = per_token(v), per_token(v, outlier_frac)
        ref = attention(q, k, v, heads, kv_heads)
        acc["kc"].append(_rel(kc, k))
        acc["kt"].append(_rel(kt, k))
        acc["kcs"].append(_rel(kcs, k))
        acc["vt"].append(_rel(vt, v))
        acc["vts"].append(_rel(vts, v))
        acc["attn_c"].append(_rel(attention(q, kc, vt, heads, kv_heads), ref))
        acc["attn_t"].append(_rel(attention(q, kt, vt, heads, kv_heads), ref))
        acc["attn_cs"].append(_rel(attention(q, kcs, vts, heads, kv_heads), ref))
    m = {k: float(np.mean(v)) for k, v in acc.items()}
    return {"layer": layer, "key_per_channel": round(m["kc"], 5), "key_per_token": round(m["kt"], 5),
            "key_per_channel_sparse": round(m["kcs"], 5), "value_per_token": round(m["vt"], 5),
            "value_per_token_sparse": round(m["vts"], 5), "attn_out_keys_per_channel": round(m["attn_c"], 5),
            "attn_out_keys_per_token": round(m["attn_t"], 5), "attn_out_dense_and_sparse": round(m["attn_cs"], 5)}


class UnsupportedKV(UnsupportedError):
    pass


def analyse(model_path: str, bits: int, calib: str | None, gpu: str, outlier_frac: float = 0.01,
            max_lines: int = 32, seqlen: int = 128, memory_budget: int = 1024**3) -> dict:
    """One transformer block in memory at a time (:mod:`.blockwise`); activations past
    ``memory_budget`` bytes go to scratch files."""
    if bits not in (2, 3, 4):
        raise UsageError(f"--bits {bits}: choose 2, 3 or 4")
    if not 0 <= outlier_frac < 0.5:
        raise UsageError("--outlier-frac must be in [0, 0.5)")
    from gpuforge.hardware.profiles import get_profile
    from gpuforge.hardware.registry import all_profiles

    prof = get_profile(gpu, all_profiles())
    path = Path(model_path)
    if not model_io.is_model_folder(path):
        raise BadInputError(f"{path} is not a model folder (config.json + safetensors)")
    from gpuforge.plugins.quantize.blockwise import BlockRunner
    from gpuforge.plugins.quantize.skeleton import Skeleton

    src = model_io.TensorSource(path)
    sk = Skeleton(src)
    tok = model_io.load_tokenizer(path)
    if tok is None:
        raise BadInputError(f"{path} has no tokenizer; the KV analysis runs the model on text")
    cfg = sk.model.config
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    rope = (getattr(cfg, "rope_theta", None) is not None or getattr(cfg, "rope_parameters", None) is not None
            or getattr(cfg, "rope_scaling", None) is not None
            or "rope" in str(getattr(cfg, "position_embedding_type", "")))
    rope_note = ("keys captured before RoPE (k_proj output)" if rope else
                 f"{cfg.model_type} has no RoPE ({getattr(cfg, 'position_embedding_type', 'absolute')} position "
                 "embeddings): keys are quantized as the key projection outputs them")
    lines = model_io.read_lines(calib, model_io.CALIB_TEXT)[:max_lines]
    runner = BlockRunner(sk, tok, lines, seqlen, memory_budget)
    rows = []
    try:
        for layer, seqs in capture_qkv_by_block(runner):
            rows.append(_layer_row(layer, seqs, bits, outlier_frac, cfg, heads, kv_heads))
    finally:
        runner.close()
    layers = len(rows)
    d_kv = kv_heads * (cfg.hidden_size // heads)
    fp16 = layers * 2 * d_kv * 2
    # keys per channel: bits per value (+ per-channel scale/zero, amortized over the context);
    # values per token: bits per value + fp16 scale and zero per head; sparse: fp16 + int32 index
    quant = layers * (2 * d_kv * bits / 8 + kv_heads * 4 + 2 * outlier_frac * d_kv * 6)
    n_params = sum(src.info(k).size for k in src.keys() if src.info(k).is_float)
    free = 0.9 * prof.memory_gib * 2**30 - 2 * n_params
    fp16_ctx, q_ctx = int(max(free, 0) // fp16), int(max(free, 0) // quant)
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "layer"}
    return {"model": str(path), "model_type": cfg.model_type, "bits": bits, "outlier_frac": outlier_frac,
            "rope": rope, "rope_note": rope_note, "sequences": len(lines), "rows": rows, "mean": mean,
            "per_channel_keys_better": mean["key_per_channel"] < mean["key_per_token"],
            "fp16_bytes_per_token": fp16, "quant_bytes_per_token": quant, "bytes_saved_per_token": fp16 - quant,
            "gpu": prof.id, "fp16_context": fp16_ctx, "quant_context": q_ctx,
            "max_position_embeddings": getattr(cfg, "max_position_embeddings", None)}
