"""The on-disk layouts other tools read, written and read exactly.

bitsandbytes ``Linear4bit`` (NF4/FP4), per layer ``<name>``:
  ``<name>.weight``        uint8 (ceil(out*in/2), 1): packed codes, first value in the high nibble
  ``<name>.weight.absmax`` float32 (blocks,), or uint8 (blocks,) with double quantization
  ``<name>.weight.quant_map`` float32 (16,): the code table
  ``<name>.weight.nested_absmax`` float32, ``<name>.weight.nested_quant_map`` float32 (256,)
                            (double quantization only)
  ``<name>.weight.quant_state.bitsandbytes__<nf4|fp4>`` uint8: JSON with quant_type,
     blocksize, dtype, shape (+ nested_blocksize, nested_dtype, nested_offset)
bitsandbytes ``Linear8bitLt``: ``<name>.weight`` int8 (out, in), ``<name>.SCB`` float32 (out,)
  (row absmax; ``W ~= weight * SCB / 127``), ``<name>.weight_format`` uint8 0 (row-major).
GPTQ v1 (AutoGPTQ ``QuantLinear``), per layer: ``qweight`` int32 (in*bits/32, out) packed
  along the input dimension (:func:`gpuforge.kernels.packing.pack_int32`), ``qzeros`` int32
  (groups, out*bits/32) holding ``zero - 1`` packed along the output dimension, ``scales``
  float16 (groups, out), ``g_idx`` int32 (in,); ``W[i, o] = scales[g_idx[i], o] *
  (q[i, o] - (qzeros[g_idx[i], o] + 1))``.
"""
from __future__ import annotations

import json

import numpy as np

from gpuforge.core.kernels import call

QUANT_STATE_PREFIX = "weight.quant_state.bitsandbytes__"


# --- bitsandbytes 4-bit ----------------------------------------------------------------

def nf4_layer_tensors(weight: np.ndarray, quant_type: str = "nf4", blocksize: int = 64,
                      double_quant: bool = True, dtype: str = "float32") -> dict[str, np.ndarray]:
    """The state-dict entries (without the ``<name>.`` prefix) of one Linear4bit weight."""
    w = np.ascontiguousarray(weight, dtype=np.float32)
    packed, absmax = call("quantize.nf4_encode", w.reshape(-1), blocksize, quant_type)
    return nf4_layer_from_codes(packed, absmax, w.shape, quant_type, blocksize, double_quant, dtype)


def nf4_gptq_layer_tensors(weight: np.ndarray, hessian, quant_type: str = "nf4", blocksize: int = 64,
                           double_quant: bool = True, act_order: bool = False, percdamp: float = 0.01,
                           dtype: str = "float32") -> dict[str, np.ndarray]:
    """Linear4bit entries whose codes GPTQ chose (:func:`gptq.gptq_codebook`) with the
    block absmax of the original weights as the fixed scales: bitsandbytes reads and
    dequantizes them like any other NF4/FP4 layer."""
    import torch

    from gpuforge.plugins.quantize.gptq import gptq_codebook
    from gpuforge.plugins.quantize.nf4 import code_table

    w = np.ascontiguousarray(weight, dtype=np.float32)
    absmax = call("kernels.blockwise_absmax", w.reshape(-1), blocksize)
    used = nf4_stored_absmax(absmax, double_quant)
    per_weight = np.repeat(used, blocksize)[: w.size].reshape(w.shape)
    codes = gptq_codebook(torch.from_numpy(w), hessian, torch.from_numpy(per_weight),
                          torch.from_numpy(code_table(quant_type)), act_order=act_order, percdamp=percdamp)
    return nf4_layer_from_codes(pack_nibbles(codes.numpy()), absmax, w.shape, quant_type, blocksize, double_quant, dtype)


def nf4_stored_absmax(absmax: np.ndarray, double_quant: bool) -> np.ndarray:
    """The absmax a reader will use: double quantization (blocks of 256) undone."""
    if not double_quant:
        return absmax
    q, nested, offset = call("quantize.absmax_dq_encode", absmax, 256)
    return call("quantize.absmax_dq_decode", q, nested, offset, 256)


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """4-bit codes (any shape, C order) -> bytes, the first value in the high nibble."""
    c = np.ascontiguousarray(codes, dtype=np.uint8).reshape(-1)
    if c.size % 2:
        c = np.concatenate([c, np.zeros(1, np.uint8)])
    return (c[0::2] << 4) | (c[1::2] & 15)


def nf4_layer_from_codes(packed: np.ndarray, absmax: np.ndarray, shape: tuple[int, ...], quant_type: str = "nf4",
                         blocksize: int = 64, double_quant: bool = True,
                         dtype: str = "float32") -> dict[str, np.ndarray]:
    """The Linear4bit entries for codes chosen elsewhere (e.g. GPTQ on the NF4 grid) and the
    block absmax (float32, before double quantization)."""
    from gpuforge.plugins.quantize.nf4 import code_table

    state = {"quant_type": quant_type, "blocksize": int(blocksize), "dtype": dtype, "shape": list(shape)}
    out = {"weight": np.asarray(packed, np.uint8).reshape(-1, 1), "weight.quant_map": code_table(quant_type).copy()}
    if double_quant:
        q, nested, offset = call("quantize.absmax_dq_encode", absmax, 256)
        out["weight.absmax"] = q
        out["weight.nested_absmax"] = nested
        out["weight.nested_quant_map"] = _dynamic_map()
        state.update(nested_blocksize=256, nested_dtype="float32", nested_offset=float(offset[0]))
    else:
        out["weight.absmax"] = absmax
    out[QUANT_STATE_PREFIX + quant_type] = np.frombuffer(json.dumps(state).encode(), np.uint8).copy()
    return out


def _dynamic_map() -> np.ndarray:
    from gpuforge.plugins.quantize.nf4 import DYNAMIC_MAP

    return DYNAMIC_MAP.copy()


def read_nf4_state(tensors: dict[str, np.ndarray]) -> dict:
    """Parse one layer's entries (keys without the prefix) into a dict with packed, absmax
    (float32, double quantization undone), quant_type, blocksize, shape."""
    key = next(k for k in tensors if k.startswith(QUANT_STATE_PREFIX))
    state = json.loads(bytes(np.asarray(tensors[key], np.uint8)).decode())
    absmax = np.asarray(tensors["weight.absmax"])
    if "nested_offset" in state:
        absmax = call("quantize.absmax_dq_decode", absmax.astype(np.uint8),
                      np.asarray(tensors["weight.nested_absmax"], np.float32),
                      np.array([state["nested_offset"]], np.float32), int(state.get("nested_blocksize", 256)))
    return {"packed": np.asarray(tensors["weight"], np.uint8).reshape(-1), "absmax": absmax.astype(np.float32),
            "quant_type": state["quant_type"], "blocksize": int(state["blocksize"]),
            "shape": tuple(state["shape"]), "double_quant": "nested_offset" in state,
            "quant_map": np.asarray(tensors.get("weight.quant_map"))}


def nf4_dequantize(state: dict) -> np.ndarray:
    n = int(np.prod(state["shape"]))
    return call("quantize.nf4_decode", state["packed"], state["absmax"], n, state["blocksize"],
                state["quant_type"]).reshape(state["shape"])


# --- bitsandbytes int8 (LLM.int8) ---------------------------------------------------------

def int8_layer_tensors(weight: np.ndarray) -> dict[str, np.ndarray]:
    """``Linear8bitLt`` entries: row-wise absmax int8 (bitsandbytes' int8_vectorwise_quant)."""
    from gpuforge.plugins.quantize.int8 import int8_rowwise

    cb, scb = int8_rowwise(np.ascontiguousarray(weight, dtype=np.float32))
    return {"weight": cb, "SCB": scb, "weight_format": np.array(0, np.uint8)}


# --- GPTQ v1 ------------------------------------------------------------------------------

def gptq_layer_tensors(gq) -> dict[str, np.ndarray]:
    """qweight / qzeros / scales / g_idx of a :class:`~.gptq.GroupQuant`."""
    q = gq.q.numpy().T.copy()                              # (in, out)
    qweight = call("kernels.pack_int32", q, gq.bits)
    z1 = (gq.zeros.numpy() - 1).astype(np.uint8)           # (groups, out), zero - 1
    qzeros = np.ascontiguousarray(call("kernels.pack_int32", np.ascontiguousarray(z1.T), gq.bits).T)
    return {"qweight": qweight, "qzeros": qzeros, "scales": gq.scales.numpy().astype(np.float16),
            "g_idx": gq.g_idx.numpy().astype(np.int32)}


def gptq_unpack(t: dict[str, np.ndarray], bits: int, in_features: int, out_features: int):
    """(q uint8 (in, out), zeros int32 (groups, out), scales float32, g_idx) from v1 tensors."""
    q = call("kernels.unpack_int32", np.ascontiguousarray(t["qweight"]), bits, in_features)
    zt = call("kernels.unpack_int32", np.ascontiguousarray(np.asarray(t["qzeros"]).T), bits, out_features)
    zeros = zt.T.astype(np.int32) + 1
    return q, zeros, np.asarray(t["scales"]).astype(np.float32), np.asarray(t["g_idx"]).astype(np.int64)


def gptq_dequantize(t: dict[str, np.ndarray], bits: int, in_features: int, out_features: int) -> np.ndarray:
    """float32 (out, in): the nn.Linear weight the GPTQ tensors stand for."""
    q, zeros, scales, g = gptq_unpack(t, bits, in_features, out_features)
    return (scales[g] * (q.astype(np.float32) - zeros[g].astype(np.float32))).T.copy()
