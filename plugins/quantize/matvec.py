"""Dequantize kernels and fused dequantize + matrix-vector products (W4A16, the decode
path of a quantized model: one token, weights read once in 4 bits).

- ``nf4_matvec(packed, absmax, x, out_features, blocksize=64, quant_type="nf4") -> float32 (out,)``:
  ``y = W @ x`` with ``W`` (out, in) stored as :func:`.nf4.nf4_encode` of its C-order
  flattening (bitsandbytes Linear4bit), ``in = x.size``.
- ``gptq_dequantize(qweight, qzeros, scales, g_idx, bits) -> float32 (in, out)``: GPTQ v1,
  ``W[i, o] = scales[g_idx[i], o] * (q[i, o] - (z[g_idx[i], o] + 1))`` with ``q`` from
  ``qweight`` (packed along the input dimension) and ``z`` from ``qzeros`` (packed along
  the output dimension), bits in {2, 3, 4, 8}.
- ``gptq_matvec(qweight, qzeros, scales, g_idx, bits, x) -> float32 (out,)``: ``W.T @ x``
  of that ``W`` (the nn.Linear product), without materializing ``W``.

The numba-cpu kernels sum in a different order than the references (tolerance 1e-4).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from gpuforge.kernels.arguments import KernelArgumentError, check_choice, check_float32, check_int, check_ndim
from gpuforge.kernels.packing import gptq_group
from gpuforge.plugins.quantize.nf4 import check_decode, code_table


def check_nf4_matvec(packed, absmax, x, out_features, blocksize, quant_type):
    check_float32("x", x.dtype)
    check_ndim("x", x.shape, 1)
    out_features = check_int("out_features", out_features, 0)
    n, blocksize = check_decode(packed, absmax, out_features * x.shape[0], blocksize, quant_type)
    return out_features, blocksize


def check_gptq(qweight, qzeros, scales, g_idx, bits):
    bits = check_choice("bits", bits, (2, 3, 4, 8))
    for name, t, dt in (("qweight", qweight, np.int32), ("qzeros", qzeros, np.int32), ("g_idx", g_idx, np.int32)):
        if np.dtype(t.dtype) != dt:
            raise KernelArgumentError(f"{name} must be {np.dtype(dt)}, got {np.dtype(t.dtype)}")
    check_float32("scales", scales.dtype)
    check_ndim("qweight", qweight.shape, 2)
    check_ndim("qzeros", qzeros.shape, 2)
    check_ndim("scales", scales.shape, 2)
    check_ndim("g_idx", g_idx.shape, 1)
    group, words = gptq_group(bits)
    rows = g_idx.shape[0]
    out = qweight.shape[1]
    if qweight.shape[0] != -(-rows // group) * words:
        raise KernelArgumentError(f"qweight has {qweight.shape[0]} rows; {rows} inputs of {bits} bits need "
                                  f"{-(-rows // group) * words}")
    if scales.shape[1] != out or qzeros.shape[0] != scales.shape[0]:
        raise KernelArgumentError(f"scales {tuple(scales.shape)} and qzeros {tuple(qzeros.shape)} do not match "
                                  f"qweight {tuple(qweight.shape)}")
    if qzeros.shape[1] != -(-out // group) * words:
        raise KernelArgumentError(f"qzeros has {qzeros.shape[1]} columns; {out} outputs of {bits} bits need "
                                  f"{-(-out // group) * words}")
    return bits


# --- reference ---------------------------------------------------------------------------

def nf4_matvec(packed, absmax, x, out_features: int, blocksize: int = 64, quant_type: str = "nf4"):
    from gpuforge.plugins.quantize.nf4 import nf4_decode

    packed, absmax, x = np.asarray(packed), np.asarray(absmax), np.asarray(x)
    out_features, blocksize = check_nf4_matvec(packed, absmax, x, out_features, blocksize, quant_type)
    w = nf4_decode(packed, absmax, out_features * x.size, blocksize, quant_type).reshape(out_features, x.size)
    return (w.astype(np.float64) @ x.astype(np.float64)).astype(np.float32)


def _unpack_rows(packed: np.ndarray, bits: int, rows: int) -> np.ndarray:
    from gpuforge.kernels.packing import unpack_int32

    return unpack_int32(packed, bits, rows).astype(np.int64)


def gptq_dequantize(qweight, qzeros, scales, g_idx, bits: int):
    qweight, qzeros, scales, g_idx = (np.asarray(a) for a in (qweight, qzeros, scales, g_idx))
    bits = check_gptq(qweight, qzeros, scales, g_idx, bits)
    rows, out = g_idx.shape[0], qweight.shape[1]
    q = _unpack_rows(qweight, bits, rows)                              # (in, out)
    z = _unpack_rows(np.ascontiguousarray(qzeros.T), bits, out).T + 1  # (groups, out)
    g = g_idx.astype(np.int64)
    if rows and (g.min() < 0 or g.max() >= scales.shape[0]):
        raise KernelArgumentError(f"g_idx must lie in [0, {scales.shape[0]})")
    return (scales[g] * (q - z[g]).astype(np.float32)).astype(np.float32)


def gptq_matvec(qweight, qzeros, scales, g_idx, bits: int, x):
    x = np.asarray(x)
    check_float32("x", x.dtype)
    check_ndim("x", x.shape, 1)
    w = gptq_dequantize(qweight, qzeros, scales, g_idx, bits)
    if x.shape[0] != w.shape[0]:
        raise KernelArgumentError(f"x has {x.shape[0]} values; the layer has {w.shape[0]} inputs")
    return (x.astype(np.float64) @ w.astype(np.float64)).astype(np.float32)


# --- numba-cpu ---------------------------------------------------------------------------

@njit(parallel=True, cache=True, fastmath=True)
def _nf4_matvec_rows(packed, absmax, x, out_features, bs, code, y):
    n_in = x.size
    for o in prange(out_features):
        acc = np.float32(0.0)
        base = o * n_in
        j = 0
        while j < n_in:
            i = base + j
            b = i // bs
            stop = min(n_in, j + (b + 1) * bs - i)   # end of this quantization block in this row
            s = np.float32(0.0)
            if i % 2 == 0 and (stop - j) % 2 == 0:
                for k in range(j, stop, 2):
                    byte = np.int64(packed[(base + k) // 2])
                    s += code[byte >> 4] * x[k] + code[byte & 15] * x[k + 1]
            else:
                for k in range(j, stop):
                    byte = np.int64(packed[(base + k) // 2])
                    q = byte >> 4 if (base + k) % 2 == 0 else byte & 15
                    s += code[q] * x[k]
            acc += s * absmax[b]
            j = stop
        y[o] = acc


def nf4_matvec_cpu(packed, absmax, x, out_features: int, blocksize: int = 64, quant_type: str = "nf4"):
    packed, absmax, x = np.asarray(packed), np.asarray(absmax), np.asarray(x)
    out_features, blocksize = check_nf4_matvec(packed, absmax, x, out_features, blocksize, quant_type)
    y = np.zeros(out_features, np.float32)
    if out_features and x.size:
        _nf4_matvec_rows(np.ascontiguousarray(packed), np.ascontiguousarray(absmax), np.ascontiguousarray(x),
                         out_features, blocksize, code_table(quant_type), y)
    return y


@njit(inline="always")
def _value(packed, r, c, bits, group, words):
    s = bits * (r % group)
    w = (r // group) * words + s // 32
    shift = s % 32
    v = (np.int64(packed[w, c]) & 0xFFFFFFFF) >> shift
    if shift + bits > 32:
        v |= (np.int64(packed[w + 1, c]) & 0xFFFFFFFF) << (32 - shift)
    return v & ((1 << bits) - 1)


@njit(parallel=True, cache=True)
def _zeros_plus_one(qzeros, bits, group, words, out):
    # qzeros (groups, words along out): value c of row g
    for g in prange(out.shape[0]):
        for c in range(out.shape[1]):
            s = bits * (c % group)
            w = (c // group) * words + s // 32
            shift = s % 32
            v = (np.int64(qzeros[g, w]) & 0xFFFFFFFF) >> shift
            if shift + bits > 32:
                v |= (np.int64(qzeros[g, w + 1]) & 0xFFFFFFFF) << (32 - shift)
            out[g, c] = (v & ((1 << bits) - 1)) + 1


@njit(parallel=True, cache=True)
def _gptq_deq(qweight, z, scales, g_idx, bits, group, words, out):
    rows, cols = out.shape
    bad = 0
    for r in prange(rows):
        g = g_idx[r]
        if g < 0 or g >= scales.shape[0]:
            bad += 1
            continue
        for c in range(cols):
            out[r, c] = scales[g, c] * np.float32(_value(qweight, r, c, bits, group, words) - z[g, c])
    return bad


COLS = 256


@njit(parallel=True, cache=True, fastmath=True)
def _gptq_mv(qweight, z, scales, g_idx, bits, group, words, x, y):
    rows = x.size
    cols = y.size
    ntask = (cols + COLS - 1) // COLS
    bad = 0
    for t in prange(ntask):
        c0 = t * COLS
        c1 = min(c0 + COLS, cols)
        acc = np.zeros(c1 - c0, np.float32)
        for r in range(rows):
            g = g_idx[r]
            if g < 0 or g >= scales.shape[0]:
                bad += 1
                continue
            xr = x[r]
            for c in range(c0, c1):
                acc[c - c0] += xr * scales[g, c] * np.float32(_value(qweight, r, c, bits, group, words) - z[g, c])
        for c in range(c0, c1):
            y[c] = acc[c - c0]
    return bad


def _zeros(qzeros, bits, out):
    group, words = gptq_group(bits)
    z = np.zeros((qzeros.shape[0], out), np.int64)
    if z.size:
        _zeros_plus_one(np.ascontiguousarray(qzeros), bits, group, words, z)
    return z


def gptq_dequantize_cpu(qweight, qzeros, scales, g_idx, bits: int):
    qweight, qzeros, scales, g_idx = (np.asarray(a) for a in (qweight, qzeros, scales, g_idx))
    bits = check_gptq(qweight, qzeros, scales, g_idx, bits)
    group, words = gptq_group(bits)
    out = np.zeros((g_idx.shape[0], qweight.shape[1]), np.float32)
    if out.size and _gptq_deq(np.ascontiguousarray(qweight), _zeros(qzeros, bits, qweight.shape[1]),
                              np.ascontiguousarray(scales), np.ascontiguousarray(g_idx), bits, group, words, out):
        raise KernelArgumentError(f"g_idx must lie in [0, {scales.shape[0]})")
    return out


def gptq_matvec_cpu(qweight, qzeros, scales, g_idx, bits: int, x):
    qweight, qzeros, scales, g_idx, x = (np.asarray(a) for a in (qweight, qzeros, scales, g_idx, x))
    bits = check_gptq(qweight, qzeros, scales, g_idx, bits)
    check_float32("x", x.dtype)
    check_ndim("x", x.shape, 1)
    if x.shape[0] != g_idx.shape[0]:
        raise KernelArgumentError(f"x has {x.shape[0]} values; the layer has {g_idx.shape[0]} inputs")
    group, words = gptq_group(bits)
    y = np.zeros(qweight.shape[1], np.float32)
    if y.size and x.size and _gptq_mv(np.ascontiguousarray(qweight), _zeros(qzeros, bits, qweight.shape[1]),
                                      np.ascontiguousarray(scales), np.ascontiguousarray(g_idx), bits, group,
                                      words, np.ascontiguousarray(x), y):
        raise KernelArgumentError(f"g_idx must lie in [0, {scales.shape[0]})")
    return y
