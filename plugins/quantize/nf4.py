"""NF4 / FP4 4-bit blockwise quantization and the double quantization of its absmax,
bit-compatible with bitsandbytes (QLoRA, Dettmers et al. 2023, sec. 3 "NormalFloat"
and "Double Quantization").

Layout (the kernel contract other plugins rely on, see README.md "Kernel contract"):

- ``nf4_encode(x, blocksize=64, quant_type="nf4") -> (packed, absmax)``: ``x`` is float32,
  flattened in C order (n values); blocks of ``blocksize`` consecutive values (the last
  may be shorter) are scaled by their absmax and mapped to the nearest of the 16 code
  values exactly as bitsandbytes does (``torch.bucketize`` against the code's midpoints:
  a value on a midpoint takes the lower code). ``packed`` is uint8 (ceil(n/2),), value
  ``2k`` in the HIGH nibble of byte ``k``, value ``2k+1`` in the low nibble; for odd n
  the last low nibble is 0 (padding, never decoded). ``absmax`` is float32
  (ceil(n/blocksize),); a block of zeros has absmax 0 and decodes to zeros. NaN or inf
  anywhere in ``x`` raises ``ValueError`` (:class:`KernelArgumentError`) in every backend.
- ``nf4_decode(packed, absmax, n, blocksize=64, quant_type="nf4") -> float32 (n,)``:
  ``code[nibble] * absmax[i // blocksize]`` in float32, as bitsandbytes.
- ``quant_type="fp4"`` selects bitsandbytes' FP4 code (same layout, its code order).
- ``absmax_dq_encode(absmax, blocksize=256) -> (qabsmax uint8, nested_absmax f32, offset f32 (1,))``:
  bitsandbytes' double quantization (``quantize_4bit(..., compress_statistics=True)``),
  byte for byte as it stores it on a CPU: ``offset = absmax.mean()`` as torch computes it
  in float32 on the CPU (:func:`dq_offset`), then blockwise 8-bit quantization of
  ``absmax - offset`` (float32) in nested blocks of 256 with the signed dynamic map:
  ``s = v * (1 / nested_absmax)`` picks one of bitsandbytes' 65536 bins and its table
  gives the code (:mod:`gpuforge.kernels.dynamic_map`); a nested block of zeros gets code 0.
- ``absmax_dq_decode(qabsmax, nested_absmax, offset, blocksize=256) -> float32``:
  ``dynamic_map[q] * nested_absmax[i // blocksize] + offset``, as bitsandbytes.

References first, Numba CPU (``*_cpu``) after; CUDA in :mod:`.nf4_cuda`.
"""
from __future__ import annotations

import sys

import numpy as np
from numba import njit, prange

from gpuforge.kernels.arguments import (KernelArgumentError, check_float32, check_int,
                                        check_ndim)
from gpuforge.kernels.dynamic_map import dynamic_map, lut_index, lut_indices, quantize_lut

# bitsandbytes' NF4 code (QLoRA appendix E), normalized to [-1, 1].
NF4_CODE = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], np.float32)
# bitsandbytes' FP4 (E2M1 without inf/NaN, bias 3) in its storage order, divided by 12;
# code 8 (sign bit, zero) is +0.0 in bitsandbytes' table, so it decodes to +0.0 here too.
FP4_CODE = (np.array([0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0,
                      0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0], np.float32)
            / np.float32(12.0)).astype(np.float32)
DYNAMIC_MAP = dynamic_map(signed=True)
TINY = np.float32(1e-38)
"""bitsandbytes clamps absmax to this before dividing by it."""
QUANT_TYPES = ("nf4", "fp4")


def code_table(quant_type: str) -> np.ndarray:
    if quant_type == "nf4":
        return NF4_CODE
    if quant_type == "fp4":
        return FP4_CODE
    raise KernelArgumentError(f"quant_type must be 'nf4' or 'fp4', got {quant_type!r}")


def bounds_and_order(quant_type: str) -> tuple[np.ndarray, np.ndarray]:
    """Midpoints between sorted code values (float32) and the code index of each interval
    (bitsandbytes' ``_get_4bit_quantize_bounds``; FP4's +0/-0 tie is fixed as torch sorts it)."""
    code = code_table(quant_type)
    if quant_type == "nf4":
        order = np.arange(16, dtype=np.int64)
    else:
        order = np.array([11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3], np.int64)
    s = code[order]
    return ((s[:-1] + s[1:]) / np.float32(2)).astype(np.float32), order


# --- argument checks (metadata only; shared by all backends) ----------------------------

def check_encode(x, blocksize, quant_type):
    check_float32("x", x.dtype)
    blocksize = check_int("blocksize", blocksize, 1)
    code_table(quant_type)
    return blocksize


def check_decode(packed, absmax, n, blocksize, quant_type):
    if np.dtype(packed.dtype) != np.uint8:
        raise KernelArgumentError(f"packed must be uint8, got {np.dtype(packed.dtype)}")
    check_float32("absmax", absmax.dtype)
    check_ndim("packed", packed.shape, 1)
    check_ndim("absmax", absmax.shape, 1)
    n = check_int("n", n, 0)
    blocksize = check_int("blocksize", blocksize, 1)
    code_table(quant_type)
    if packed.shape[0] != (n + 1) // 2:
        raise KernelArgumentError(f"packed has {packed.shape[0]} bytes; {n} 4-bit values need {(n + 1) // 2}")
    if absmax.shape[0] != -(-n // blocksize):
        raise KernelArgumentError(
            f"absmax has {absmax.shape[0]} values; {n} values in blocks of {blocksize} need {-(-n // blocksize)}")
    return n, blocksize


def check_dq_encode(absmax, blocksize):
    check_float32("absmax", absmax.dtype)
    check_ndim("absmax", absmax.shape, 1)
    return check_int("blocksize", blocksize, 1)


def check_dq_decode(q, nested_absmax, offset, blocksize):
    if np.dtype(q.dtype) != np.uint8:
        raise KernelArgumentError(f"qabsmax must be uint8, got {np.dtype(q.dtype)}")
    check_float32("nested_absmax", nested_absmax.dtype)
    check_float32("offset", offset.dtype)
    check_ndim("qabsmax", q.shape, 1)
    check_ndim("nested_absmax", nested_absmax.shape, 1)
    if tuple(offset.shape) != (1,):
        raise KernelArgumentError(f"offset must have shape (1,), got {tuple(offset.shape)}")
    blocksize = check_int("blocksize", blocksize, 1)
    if nested_absmax.shape[0] != -(-q.shape[0] // blocksize):
        raise KernelArgumentError(
            f"nested_absmax has {nested_absmax.shape[0]} values; {q.shape[0]} codes in blocks of "
            f"{blocksize} need {-(-q.shape[0] // blocksize)}")
    return blocksize


def non_finite() -> KernelArgumentError:
    return KernelArgumentError("x holds NaN or inf; 4-bit quantization needs finite values")


# --- reference ---------------------------------------------------------------------------

def _flat(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x)).reshape(-1)


def nf4_encode(x, blocksize: int = 64, quant_type: str = "nf4"):
    x = np.asarray(x)
    blocksize = check_encode(x, blocksize, quant_type)
    flat = _flat(x)
    if not np.isfinite(flat).all():
        raise non_finite()
    n = flat.size
    nb = -(-n // blocksize)
    pad = np.zeros(nb * blocksize, np.float32)
    pad[:n] = flat
    blocks = pad.reshape(nb, blocksize)
    absmax = np.abs(blocks).max(axis=1) if nb else np.zeros(0, np.float32)
    safe = np.maximum(absmax, TINY)[:, None]
    scaled = blocks * (np.float32(1) / safe)        # bitsandbytes: A * (1 / absmax)
    if n % blocksize:                                # ... but A / absmax for a short last block
        scaled[-1] = blocks[-1] / safe[-1]
    scaled = np.clip(scaled.reshape(-1)[:n], -1, 1)
    bounds, order = bounds_and_order(quant_type)
    q = order[np.searchsorted(bounds, scaled, side="left")].astype(np.uint8)
    if n % 2:
        q = np.append(q, np.uint8(0))
    return ((q[0::2] << 4) | q[1::2]).astype(np.uint8), absmax.astype(np.float32)


def nf4_decode(packed, absmax, n: int, blocksize: int = 64, quant_type: str = "nf4"):
    packed, absmax = np.asarray(packed), np.asarray(absmax)
    n, blocksize = check_decode(packed, absmax, n, blocksize, quant_type)
    q = np.stack([packed >> 4, packed & 15], axis=1).reshape(-1)[:n]
    return code_table(quant_type)[q] * np.repeat(absmax, blocksize)[:n]


def dq_offset(absmax: np.ndarray) -> np.float32:
    """bitsandbytes' offset ``absmax.mean()``: torch's float32 mean on the CPU. It is not
    the correctly rounded mean (torch sums in float32 lanes and chunks; the two differ in
    the last bit for most LLM-sized tensors), and torch's chunks follow its thread count,
    so bitsandbytes' own offset can move by an ulp between thread settings: this is the
    value it stores in a process with torch's current settings."""
    if absmax.size == 0:
        return np.float32(0)
    import torch

    return np.float32(torch.from_numpy(np.ascontiguousarray(absmax, np.float32)).mean().item())


def absmax_dq_encode(absmax, blocksize: int = 256):
    absmax = np.asarray(absmax)
    blocksize = check_dq_encode(absmax, blocksize)
    if not np.isfinite(absmax).all():
        raise KernelArgumentError("absmax holds NaN or inf")
    m = absmax.size
    offset = dq_offset(absmax)
    v = (absmax - offset).astype(np.float32)
    nb = -(-m // blocksize)
    pad = np.zeros(nb * blocksize, np.float32)
    pad[:m] = np.abs(v)
    nested = pad.reshape(nb, blocksize).max(axis=1) if nb else np.zeros(0, np.float32)
    with np.errstate(divide="ignore"):
        inv = np.repeat((np.float32(1) / nested).astype(np.float32), blocksize)[:m]
    live = np.repeat(nested > 0, blocksize)[:m]
    s = np.where(live, v * np.where(live, inv, np.float32(0)), np.float32(0)).astype(np.float32)
    q = np.where(live, quantize_lut(True)[lut_indices(s)], 0).astype(np.uint8)
    return q, nested.astype(np.float32), np.array([offset], np.float32)


def absmax_dq_decode(qabsmax, nested_absmax, offset, blocksize: int = 256):
    q, nested, offset = np.asarray(qabsmax), np.asarray(nested_absmax), np.asarray(offset)
    blocksize = check_dq_decode(q, nested, offset, blocksize)
    return (DYNAMIC_MAP[q] * np.repeat(nested, blocksize)[:q.size] + offset[0]).astype(np.float32)


# --- numba-cpu ---------------------------------------------------------------------------

CHUNK = 16384


@njit(parallel=True, cache=True)
def _block_absmax(flat, bs, absmax):
    n = flat.size
    bad = 0
    for b in prange(absmax.size):
        m = np.float32(0.0)
        for i in range(b * bs, min(b * bs + bs, n)):
            v = abs(flat[i])
            if not np.isfinite(v):
                bad += 1
            if v > m:
                m = v
        absmax[b] = m
    return bad


LUT_BINS = 4096
"""Uniform bins over [-1, 1] that give a lower bound of the code interval in one lookup;
one or two exact comparisons against the midpoints finish it (bins are narrower than
the closest midpoints, 0.0026 apart for FP4)."""


def interval_lut(bounds: np.ndarray) -> np.ndarray:
    edges = np.arange(LUT_BINS, dtype=np.float64) * (2.0 / LUT_BINS) - 1.0 - 1e-5
    return np.searchsorted(bounds.astype(np.float64), edges, side="left").astype(np.int64)


@njit(inline="always")
def _code4(s, bounds, order, lut):
    if s > np.float32(1.0):
        s = np.float32(1.0)
    elif s < np.float32(-1.0):
        s = np.float32(-1.0)
    j = np.int64((s + np.float32(1.0)) * np.float32(LUT_BINS // 2))
    if j > LUT_BINS - 1:
        j = LUT_BINS - 1
    c = lut[j]
    while c < 15 and bounds[c] < s:   # exact: count of midpoints below s
        c += 1
    return order[c]


@njit(parallel=True, cache=True)
def _encode4(flat, bs, absmax, bounds, order, lut, out):
    n = flat.size
    nb = absmax.size
    short_last = n % bs != 0
    nbytes = out.size
    if bs % 2 == 0:
        # whole bytes per block: one task per block, no division per value
        for b in prange(nb):
            am = absmax[b]
            if am < np.float32(1e-38):
                am = np.float32(1e-38)
            inv = np.float32(1.0) / am
            div = short_last and b == nb - 1
            start = b * bs
            stop = min(start + bs, n)
            for i in range(start, stop, 2):
                s0 = flat[i] / am if div else flat[i] * inv
                q0 = _code4(s0, bounds, order, lut)
                q1 = 0
                if i + 1 < stop:
                    s1 = flat[i + 1] / am if div else flat[i + 1] * inv
                    q1 = _code4(s1, bounds, order, lut)
                out[i // 2] = (q0 << 4) | q1
    else:
        nchunks = (nbytes + CHUNK - 1) // CHUNK
        for t in prange(nchunks):
            for byte in range(t * CHUNK, min(t * CHUNK + CHUNK, nbytes)):
                acc = 0
                for p in range(2):
                    i = 2 * byte + p
                    if i < n:
                        b = i // bs
                        am = absmax[b]
                        if am < np.float32(1e-38):
                            am = np.float32(1e-38)
                        if short_last and b == nb - 1:
                            s = flat[i] / am
                        else:
                            s = flat[i] * (np.float32(1.0) / am)
                        acc |= _code4(s, bounds, order, lut) << (4 * (1 - p))
                out[byte] = acc


@njit(parallel=True, cache=True)
def _decode4(packed, absmax, bs, code, out):
    n = out.size
    nb = absmax.size
    if bs % 2 == 0 and n % 2 == 0:
        # whole bytes per block. Two 16-entry lookups per byte measured 1.5x faster than
        # one lookup in a 256 x 2 pair table (the 2-D table's interleaved stores)
        hb = bs // 2
        for b in prange(nb):
            a = absmax[b]
            for k in range(b * hb, min(b * hb + hb, n // 2)):
                byte = packed[k]
                out[2 * k] = code[byte >> 4] * a
                out[2 * k + 1] = code[byte & 15] * a
    else:
        nchunks = (n + CHUNK - 1) // CHUNK
        for t in prange(nchunks):
            for i in range(t * CHUNK, min(t * CHUNK + CHUNK, n)):
                byte = np.int64(packed[i // 2])
                q = byte >> 4 if i % 2 == 0 else byte & 15
                out[i] = code[q] * absmax[i // bs]


def _workspace(out, shape: tuple[int, ...]) -> np.ndarray:
    if out is None:
        return np.empty(shape, np.float32)
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or not out.flags.c_contiguous \
            or not out.flags.writeable or out.size != int(np.prod(shape)):
        raise KernelArgumentError(f"out must be a writeable C-contiguous float32 array of {int(np.prod(shape))} values")
    return out.reshape(shape)


@njit(parallel=True, cache=True)
def _decode4_words(words, absmax, bs, code, out):
    # blocks of whole 32-bit words (8 values): one load per 8 values, lookups in the
    # block's own 16-entry table code * absmax (25% faster than _decode4's byte loop).
    # Byte 4k + i is bits 8i..8i+7 of word k (little-endian), value 2i its high nibble.
    hw = bs // 8
    for b in prange(absmax.size):
        sc = np.empty(16, np.float32)
        a = absmax[b]
        for i in range(16):
            sc[i] = code[i] * a
        for k in range(b * hw, b * hw + hw):
            v = words[k]
            o = 8 * k
            out[o] = sc[(v >> 4) & 15]
            out[o + 1] = sc[v & 15]
            out[o + 2] = sc[(v >> 12) & 15]
            out[o + 3] = sc[(v >> 8) & 15]
            out[o + 4] = sc[(v >> 20) & 15]
            out[o + 5] = sc[(v >> 16) & 15]
            out[o + 6] = sc[(v >> 28) & 15]
            out[o + 7] = sc[(v >> 24) & 15]


def nf4_encode_cpu(x, blocksize: int = 64, quant_type: str = "nf4"):
    x = np.asarray(x)
    blocksize = check_encode(x, blocksize, quant_type)
    flat = _flat(x)
    n = flat.size
    absmax = np.empty(-(-n // blocksize), np.float32)
    packed = np.empty((n + 1) // 2, np.uint8)
    if n == 0:
        return packed, absmax
    if _block_absmax(flat, blocksize, absmax):
        raise non_finite()
    bounds, order = bounds_and_order(quant_type)
    _encode4(flat, blocksize, absmax, bounds, order, interval_lut(bounds), packed)
    return packed, absmax


def nf4_decode_cpu(packed, absmax, n: int, blocksize: int = 64, quant_type: str = "nf4", *, out=None):
    """``out``: an optional float32 C-contiguous array of ``n`` values to decode into (a
    reused workspace; a fresh 64 MiB output spends about half the decode in page faults)."""
    packed, absmax = np.asarray(packed), np.asarray(absmax)
    n, blocksize = check_decode(packed, absmax, n, blocksize, quant_type)
    out = _workspace(out, (n,))
    if not n:
        return out
    packed, absmax = np.ascontiguousarray(packed), np.ascontiguousarray(absmax)
    if blocksize % 8 == 0 and n % blocksize == 0 and sys.byteorder == "little":
        if packed.ctypes.data % 4:
            packed = packed.copy()
        _decode4_words(packed.view(np.uint32), absmax, blocksize, code_table(quant_type), out)
    else:
        _decode4(packed, absmax, blocksize, code_table(quant_type), out)
    return out


_lut_index = njit(inline="always")(lut_index)


@njit(parallel=True, cache=True)
def _dq_encode(absmax, offset, bs, lut, q, nested):
    m = absmax.size
    for b in prange(nested.size):
        start = b * bs
        stop = min(start + bs, m)
        mx = np.float32(0.0)
        for i in range(start, stop):
            v = abs(absmax[i] - offset)
            if v > mx:
                mx = v
        nested[b] = mx
        if mx == np.float32(0.0):
            for i in range(start, stop):
                q[i] = 0
            continue
        inv = np.float32(1.0) / mx
        for i in range(start, stop):
            q[i] = lut[_lut_index((absmax[i] - offset) * inv)]


@njit(parallel=True, cache=True)
def _dq_decode(q, nested, offset, bs, code, out):
    for i in prange(q.size):
        out[i] = code[q[i]] * nested[i // bs] + offset


def absmax_dq_encode_cpu(absmax, blocksize: int = 256):
    absmax = np.asarray(absmax)
    blocksize = check_dq_encode(absmax, blocksize)
    a = np.ascontiguousarray(absmax)
    m = a.size
    offset = dq_offset(a)
    if not np.isfinite(offset):
        raise KernelArgumentError("absmax holds NaN or inf")
    q = np.empty(m, np.uint8)
    nested = np.empty(-(-m // blocksize), np.float32)
    if m:
        _dq_encode(a, offset, blocksize, quantize_lut(True), q, nested)
    return q, nested, np.array([offset], np.float32)


def absmax_dq_decode_cpu(qabsmax, nested_absmax, offset, blocksize: int = 256):
    q, nested, offset = np.asarray(qabsmax), np.asarray(nested_absmax), np.asarray(offset)
    blocksize = check_dq_decode(q, nested, offset, blocksize)
    out = np.empty(q.size, np.float32)
    if q.size:
        _dq_decode(np.ascontiguousarray(q), np.ascontiguousarray(nested), np.float32(offset[0]),
                   blocksize, DYNAMIC_MAP, out)
    return out
