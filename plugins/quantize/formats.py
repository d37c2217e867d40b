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

from gpuforge.core.errors import BadInputError
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


def read_nf4_state(tensors: dict[str, np.ndarray], decode_absmax: bool = True) -> dict:
    """Parse one layer's entries (keys without the prefix) into a dict with packed, absmax,
    quant_type, blocksize, shape, double_quant. ``absmax`` is float32 with double
    quantization undone, or with ``decode_absmax=False`` as stored (uint8 codes, plus
    ``nested_absmax``, ``offset`` (1,) and ``nested_blocksize``)."""
    key = next(k for k in tensors if k.startswith(QUANT_STATE_PREFIX))
    state = json.loads(bytes(np.asarray(tensors[key], np.uint8)).decode())
    absmax = np.asarray(tensors["weight.absmax"])
    out = {"packed": np.asarray(tensors["weight"], np.uint8).reshape(-1), "quant_type": state["quant_type"],
           "blocksize": int(state["blocksize"]), "shape": tuple(state["shape"]), "double_quant": "nested_offset" in state,
           "quant_map": np.asarray(tensors.get("weight.quant_map")), "dtype": state.get("dtype", "float32")}
    if "nested_offset" in state:
        nested = np.asarray(tensors["weight.nested_absmax"], np.float32)
        offset = np.array([state["nested_offset"]], np.float32)
        nbs = int(state.get("nested_blocksize", 256))
        if decode_absmax:
            absmax = call("quantize.absmax_dq_decode", absmax.astype(np.uint8), nested, offset, nbs)
        else:
            out.update(nested_absmax=nested, offset=offset, nested_blocksize=nbs)
            absmax = absmax.astype(np.uint8)
    out["absmax"] = absmax if out["double_quant"] and not decode_absmax else np.asarray(absmax, np.float32)
    return out


def nf4_dequantize(state: dict) -> np.ndarray:
    n = int(np.prod(state["shape"]))
    return call("quantize.nf4_decode", state["packed"], state["absmax"], n, state["blocksize"],
                state["quant_type"]).reshape(state["shape"])


def _encode_bnb4(w: np.ndarray, job, quant_type: str) -> dict[str, np.ndarray]:
    o = job.opts
    if o.gptq:
        return nf4_gptq_layer_tensors(w, job.hessian, quant_type, o.block_size, o.double_quant, o.act_order,
                                      o.percdamp, dtype=job.dtype)
    return nf4_layer_tensors(w, quant_type, o.block_size, o.double_quant, dtype=job.dtype)


def encode_nf4(w: np.ndarray, job) -> dict[str, np.ndarray]:
    return _encode_bnb4(w, job, "nf4")


def encode_fp4(w: np.ndarray, job) -> dict[str, np.ndarray]:
    return _encode_bnb4(w, job, "fp4")


def nf4_decode_layer(sub: dict, qconfig: dict) -> np.ndarray:
    return nf4_dequantize(read_nf4_state(sub))


def _nf4_json(sub: dict) -> dict:
    key = next(k for k in sub if k.startswith(QUANT_STATE_PREFIX))
    return json.loads(bytes(np.asarray(sub[key], np.uint8)).decode())


def nf4_describe(sub: dict, qconfig: dict) -> dict:
    state = _nf4_json(sub)
    return {"shape": tuple(state["shape"]), "label": state["quant_type"],
            "detail": f"blocksize {state['blocksize']}" + (" + double quant" if "nested_offset" in state else "")}


def bnb4_config(opts, bits: int, structure: dict | None = None) -> dict:
    return {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
            "bnb_4bit_quant_type": opts.method, "bnb_4bit_use_double_quant": opts.double_quant,
            "bnb_4bit_compute_dtype": "float32", "bnb_4bit_quant_storage": "uint8",
            "bnb_4bit_blocksize": opts.block_size,
            **({"gpuforge_codes": "gptq", "gpuforge_act_order": opts.act_order} if opts.gptq else {})}


def bnb4_check_shape(name: str, shape: tuple, opts, bits: int) -> None:
    in_f = shape[1]
    if opts.block_size < 1 or in_f % opts.block_size:
        raise BadInputError(f"{name} has {in_f} input features, not a multiple of --block-size "
                            f"{opts.block_size}; pick a block size that divides it or --ignore the layer")


# --- bitsandbytes int8 (LLM.int8) ---------------------------------------------------------

def int8_layer_tensors(weight: np.ndarray) -> dict[str, np.ndarray]:
    """``Linear8bitLt`` entries: row-wise absmax int8 (bitsandbytes' int8_vectorwise_quant)."""
    # the registry's kernel (numba-cpu here): bit-identical to the reference, without its
    # full-size float32 temporaries (a 7B MLP weight is 180 MB in float32)
    cb, scb, _ = call("quantize.int8_vectorwise_quant", np.ascontiguousarray(weight, dtype=np.float32), 0.0)
    return {"weight": np.asarray(cb), "SCB": np.asarray(scb), "weight_format": np.array(0, np.uint8)}


def encode_int8(w: np.ndarray, job) -> dict[str, np.ndarray]:
    return int8_layer_tensors(w)


def int8_decode_layer(sub: dict, qconfig: dict) -> np.ndarray:
    cb = np.asarray(sub["weight"]).astype(np.float32)
    return (cb * (np.asarray(sub["SCB"], np.float32)[:, None] / np.float32(127))).astype(np.float32)


def int8_describe(sub: dict, qconfig: dict) -> dict:
    return {"shape": tuple(np.shape(sub["weight"])), "label": "int8", "detail": "row-wise absmax (SCB)"}


def int8_config(opts, bits: int, structure: dict | None = None) -> dict:
    return {"quant_method": "bitsandbytes", "load_in_8bit": True, "load_in_4bit": False,
            "llm_int8_threshold": opts.threshold}


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


def gptq_bits(sub: dict) -> int:
    """Bits per value from the packed shapes: qweight rows * 32 / in_features."""
    return int(round(np.shape(sub["qweight"])[0] * 32 / np.shape(sub["g_idx"])[0]))


def gptq_decode_layer(sub: dict, qconfig: dict) -> np.ndarray:
    n_in, out = np.shape(sub["g_idx"])[0], np.shape(sub["qweight"])[1]
    return gptq_dequantize(sub, gptq_bits(sub), n_in, out)


def gptq_describe(sub: dict, qconfig: dict) -> dict:
    n_in, out = np.shape(sub["g_idx"])[0], np.shape(sub["qweight"])[1]
    return {"shape": (out, n_in), "label": f"gptq-{gptq_bits(sub)}bit", "detail": f"{np.shape(sub['scales'])[0]} groups"}


def encode_gptq(w: np.ndarray, job) -> dict[str, np.ndarray]:
    import torch

    from gpuforge.plugins.quantize import gptq

    o = job.opts
    gq = gptq.gptq(torch.from_numpy(w), job.hessian, job.bits, o.group_size, o.sym, act_order=o.act_order,
                   percdamp=o.percdamp, mse=o.mse)
    return gptq_layer_tensors(gq)


def encode_rtn(w: np.ndarray, job) -> dict[str, np.ndarray]:
    import torch

    from gpuforge.plugins.quantize import gptq

    o = job.opts
    return gptq_layer_tensors(gptq.rtn(torch.from_numpy(w), job.bits, o.group_size, o.sym, mse=o.mse))


def gptq_config(opts, bits: int, structure: dict | None = None) -> dict:
    """What transformers' GPTQConfig and optimum's GPTQQuantizer read (optimum finds the
    layers to convert under ``block_name_to_quantize``, keeping those whose name ends with
    one of ``modules_in_block_to_quantize``; without a block name it guesses from a few
    decoder patterns and fails on encoders), plus AutoGPTQ's keys."""
    structure = structure or {}
    qc = {"quant_method": "gptq", "bits": bits, "group_size": opts.group_size if opts.group_size > 0 else -1,
          "damp_percent": opts.percdamp, "desc_act": opts.act_order, "static_groups": False,
          "sym": opts.sym, "true_sequential": False, "model_file_base_name": "model",
          "format": "gptq", "checkpoint_format": "gptq"}
    if structure.get("block_name_to_quantize"):
        qc["block_name_to_quantize"] = structure["block_name_to_quantize"]
    if structure.get("modules_in_block_to_quantize"):
        qc["modules_in_block_to_quantize"] = structure["modules_in_block_to_quantize"]
    return qc | {"gpuforge_method": opts.method, "gpuforge_mse_ranges": opts.mse}


def gptq_check_shape(name: str, shape: tuple, opts, bits: int) -> None:
    from gpuforge.kernels.packing import gptq_group

    out_f, in_f = shape
    g = gptq_group(bits)[0]
    if opts.group_size > 0 and in_f % opts.group_size:
        raise BadInputError(f"{name} has {in_f} input features, not a multiple of --group-size "
                            f"{opts.group_size}; pick a group size that divides it or --ignore the layer")
    if in_f % g or out_f % g:
        raise BadInputError(f"{name} has shape {tuple(shape)}; GPTQ {bits}-bit packing needs both dimensions to be "
                            f"multiples of {g}; --ignore the layer")
