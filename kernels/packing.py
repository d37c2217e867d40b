"""Packing small unsigned integers into bytes and 32-bit words, in the layouts that
other tools read.

``pack_bits`` / ``unpack_bits`` (bitsandbytes 4-bit layout): values of ``bits`` in
{2, 4} are packed along the LAST axis, ``8 // bits`` per byte, the FIRST value in the
HIGH bits (for NF4: byte = v0 << 4 | v1). When the last axis is not a multiple of
``8 // bits``, it is padded with zeros; ``unpack_bits(packed, bits, n)`` drops the pad.

``pack_int32`` / ``unpack_int32`` (GPTQ v1 / AutoGPTQ ``qweight`` layout): values of
``bits`` in {2, 3, 4, 8} are packed along axis 0 (the input dimension). Each column is
one little-endian bit stream of 32-bit words in which value ``j`` starts at bit
``bits * j`` (LOW bits first). For 3 bits, 32 values fill exactly 3 words and values 10
and 21 straddle a word boundary, as in AutoGPTQ's ``QuantLinear.pack``. Rows are padded
with zeros to a whole group (``32 // bits`` values, or 32 for 3 bits), so the result has
``ceil(rows / group) * words_per_group`` rows; GPTQ itself needs ``rows % 32 == 0``.
Words are stored as int32 (bit 31 set means negative), as GPTQ checkpoints do. To pack
``qzeros`` (packed along columns), pack the transpose and transpose back.

The references come first; the Numba CPU backends (``*_cpu``) follow. CUDA is in
:mod:`gpuforge.kernels.packing_cuda`.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from gpuforge.kernels.arguments import (check_choice, check_int, check_integer, check_ndim,
                                        out_of_range, KernelArgumentError)

BYTE_BITS = (2, 4)
WORD_BITS = (2, 3, 4, 8)


def gptq_group(bits: int) -> tuple[int, int]:
    """(values, int32 words) of one packing group: (32, 3) for 3 bits, else (32 // bits, 1)."""
    return (32, 3) if bits == 3 else (32 // bits, 1)


# --- argument checks shared by all backends (metadata only) -------------------------------

def check_pack_bits(values, bits):
    check_integer("values", values.dtype)
    bits = check_choice("bits", bits, BYTE_BITS)
    check_ndim("values", values.shape, min_ndim=1)
    return bits


def check_unpack_bits(packed, bits, n):
    if np.dtype(packed.dtype) != np.uint8:
        raise KernelArgumentError(f"packed must be uint8, got {np.dtype(packed.dtype)}")
    bits = check_choice("bits", bits, BYTE_BITS)
    n = check_int("n", n, 0)
    check_ndim("packed", packed.shape, min_ndim=1)
    nbytes = -(-n // (8 // bits))
    last = tuple(packed.shape)[-1]  # the simulator's device shapes reject index -1
    if last != nbytes:
        raise KernelArgumentError(
            f"packed has {last} bytes on its last axis; {n} values of "
            f"{bits} bits need {nbytes}")
    return bits, n


def check_pack_int32(values, bits):
    check_integer("values", values.dtype)
    bits = check_choice("bits", bits, WORD_BITS)
    check_ndim("values", values.shape, min_ndim=1)
    return bits


def check_unpack_int32(packed, bits, rows):
    if np.dtype(packed.dtype) != np.int32:
        raise KernelArgumentError(f"packed must be int32, got {np.dtype(packed.dtype)}")
    bits = check_choice("bits", bits, WORD_BITS)
    rows = check_int("rows", rows, 0)
    check_ndim("packed", packed.shape, min_ndim=1)
    group, words = gptq_group(bits)
    nwords = -(-rows // group) * words
    if packed.shape[0] != nwords:
        raise KernelArgumentError(
            f"packed has {packed.shape[0]} rows; {rows} values of {bits} bits need {nwords}")
    return bits, rows


# --- reference -------------------------------------------------------------------------

def _check_range(values, bits):
    if values.size and (values.min() < 0 or values.max() >= 2 ** bits):
        raise out_of_range("values", bits)


def pack_bits(values, bits: int) -> np.ndarray:
    """uint8 of shape (..., ceil(n * bits / 8)); first value in the high bits."""
    values = np.asarray(values)
    bits = check_pack_bits(values, bits)
    _check_range(values, bits)
    per = 8 // bits
    *lead, n = values.shape
    nbytes = -(-n // per)
    padded = np.zeros((*lead, nbytes * per), np.uint8)
    padded[..., :n] = values
    shifts = bits * np.arange(per - 1, -1, -1)  # value 0 -> highest bits
    groups = padded.reshape(*lead, nbytes, per).astype(np.int64) << shifts
    return groups.sum(axis=-1).astype(np.uint8)


def unpack_bits(packed, bits: int, n: int) -> np.ndarray:
    """uint8 of shape (..., n): the inverse of :func:`pack_bits`."""
    packed = np.asarray(packed)
    bits, n = check_unpack_bits(packed, bits, n)
    per = 8 // bits
    *lead, nbytes = packed.shape
    shifts = bits * np.arange(per - 1, -1, -1)
    values = (packed[..., None].astype(np.int64) >> shifts) & (2 ** bits - 1)
    return values.reshape(*lead, nbytes * per)[..., :n].astype(np.uint8)


def pack_int32(values, bits: int) -> np.ndarray:
    """int32 of shape (ceil(rows / group) * words, ...): GPTQ v1 packing along axis 0."""
    values = np.asarray(values)
    bits = check_pack_int32(values, bits)
    _check_range(values, bits)
    group, words = gptq_group(bits)
    rows, rest = values.shape[0], values.shape[1:]
    cols = math.prod(rest)
    ngroups = -(-rows // group)
    padded = np.zeros((ngroups * group, cols), np.uint64)
    padded[:rows] = values.reshape(rows, cols)
    # bit b of value j sits at stream position bits * j + b; 32 positions make a word
    plane = (padded[:, None, :] >> np.arange(bits, dtype=np.uint64)[:, None]) & np.uint64(1)
    stream = plane.reshape(ngroups * words, 32, cols)
    packed = (stream << np.arange(32, dtype=np.uint64)[:, None]).sum(axis=1)
    return packed.astype(np.uint32).view(np.int32).reshape(ngroups * words, *rest)


def unpack_int32(packed, bits: int, rows: int) -> np.ndarray:
    """uint8 of shape (rows, ...): the inverse of :func:`pack_int32`."""
    packed = np.asarray(packed)
    bits, rows = check_unpack_int32(packed, bits, rows)
    nwords, rest = packed.shape[0], packed.shape[1:]
    cols = math.prod(rest)
    packed_u = packed.reshape(nwords, cols).astype(np.int64) & 0xFFFFFFFF
    stream = (packed_u[:, None, :] >> np.arange(32)[:, None]) & 1
    plane = stream.reshape(nwords * 32 // bits, bits, cols)
    values = (plane << np.arange(bits)[:, None]).sum(axis=1)
    return values[:rows].astype(np.uint8).reshape(rows, *rest)


# --- numba-cpu -------------------------------------------------------------------------

CHUNK = 4096
"""Bytes (or values) per parallel task when a long last axis is split across threads."""


@njit(parallel=True, cache=True)
def _pack_bits_rows(values, bits, out):
    nrows, n = values.shape
    nbytes = out.shape[1]
    per = 8 // bits
    limit = 1 << bits
    nchunks = (nbytes + CHUNK - 1) // CHUNK
    bad = 0
    for task in prange(nrows * nchunks):
        r = task // nchunks
        start = (task % nchunks) * CHUNK
        for byte in range(start, min(start + CHUNK, nbytes)):
            acc = 0
            for p in range(per):
                c = byte * per + p
                if c < n:
                    v = values[r, c]
                    if v < 0 or v >= limit:
                        bad += 1
                    acc |= (np.int64(v) & (limit - 1)) << (bits * (per - 1 - p))
            out[r, byte] = acc
    return bad


@njit(parallel=True, cache=True)
def _unpack_bits_rows(packed, bits, out):
    nrows, n = out.shape
    nbytes = packed.shape[1]
    per = 8 // bits
    mask = (1 << bits) - 1
    nchunks = (nbytes + CHUNK - 1) // CHUNK
    for task in prange(nrows * nchunks):
        r = task // nchunks
        start = (task % nchunks) * CHUNK
        for byte in range(start, min(start + CHUNK, nbytes)):
            b = np.int64(packed[r, byte])
            for p in range(per):
                c = byte * per + p
                if c < n:
                    out[r, c] = (b >> (bits * (per - 1 - p))) & mask


@njit(parallel=True, cache=True)
def _pack_int32_rows(values, bits, group, words, out):
    rows, cols = values.shape
    limit = 1 << bits
    bad = 0
    for w in prange(out.shape[0]):
        base = (w // words) * group          # first value row of this word's group
        first = 32 * (w % words)             # this word's first bit in the group's stream
        acc = np.zeros(cols, np.int64)
        for j in range(first // bits, (first + 31) // bits + 1):
            r = base + j
            if r >= rows:
                break
            shift = bits * j - first         # < 0: the value started in the previous word
            for c in range(cols):
                v = values[r, c]
                if v < 0 or v >= limit:
                    bad += 1
                v64 = np.int64(v) & (limit - 1)
                acc[c] |= v64 << shift if shift >= 0 else v64 >> -shift
        for c in range(cols):
            a = acc[c] & 0xFFFFFFFF
            out[w, c] = a - (1 << 32) if a >= (1 << 31) else a
    return bad


def word_value(packed, r, c, bits, group, words):
    """Value ``r`` of column ``c`` of a ``pack_int32`` array (``group, words =
    gptq_group(bits)``). Plain Python: compiled inline by the Numba CPU kernels (here and
    in the quantize plugin's GPTQ dequantize / matvec) and as a CUDA device function."""
    s = bits * (r % group)                   # the value's first bit in its group's stream
    w = (r // group) * words + s // 32
    shift = s % 32
    v = (np.int64(packed[w, c]) & 0xFFFFFFFF) >> shift
    if shift + bits > 32:                    # 3-bit values 10 and 21 straddle two words
        v |= (np.int64(packed[w + 1, c]) & 0xFFFFFFFF) << (32 - shift)
    return v & ((1 << bits) - 1)


word_value_cpu = njit(inline="always")(word_value)


def _unpack_int32_loop(packed, bits, group, words, out):
    rows, cols = out.shape
    for r in prange(rows):
        for c in range(cols):
            out[r, c] = word_value_cpu(packed, r, c, bits, group, words)


_unpack_int32_rows = njit(parallel=True, cache=True)(_unpack_int32_loop)
_unpack_int32_rows_serial = njit(cache=True)(_unpack_int32_loop)   # prange runs as range
SERIAL_BELOW = 1 << 16
"""Values below which unpack_int32_cpu stays on one thread: waking the pool costs more
(GPTQ's qzeros, 32 x 4096 values, unpack in 0.09 ms serial against 0.2 ms in parallel)."""


def pack_bits_cpu(values, bits: int) -> np.ndarray:
    values = np.asarray(values)
    bits = check_pack_bits(values, bits)
    *lead, n = values.shape
    out = np.empty((*lead, -(-n // (8 // bits))), np.uint8)
    if out.size and _pack_bits_rows(np.ascontiguousarray(values).reshape(-1, n), bits,
                                    out.reshape(-1, out.shape[-1])):
        raise out_of_range("values", bits)
    return out


def unpack_bits_cpu(packed, bits: int, n: int) -> np.ndarray:
    packed = np.asarray(packed)
    bits, n = check_unpack_bits(packed, bits, n)
    *lead, nbytes = packed.shape
    out = np.empty((*lead, n), np.uint8)
    if out.size:
        _unpack_bits_rows(np.ascontiguousarray(packed).reshape(-1, nbytes), bits,
                          out.reshape(-1, n))
    return out


def pack_int32_cpu(values, bits: int) -> np.ndarray:
    values = np.asarray(values)
    bits = check_pack_int32(values, bits)
    group, words = gptq_group(bits)
    rows, rest = values.shape[0], values.shape[1:]
    cols = math.prod(rest)
    out = np.empty((-(-rows // group) * words, *rest), np.int32)
    if out.size and _pack_int32_rows(np.ascontiguousarray(values).reshape(rows, cols), bits,
                                     group, words, out.reshape(-1, cols)):
        raise out_of_range("values", bits)
    return out


def unpack_int32_cpu(packed, bits: int, rows: int) -> np.ndarray:
    packed = np.asarray(packed)
    bits, rows = check_unpack_int32(packed, bits, rows)
    group, words = gptq_group(bits)
    rest = packed.shape[1:]
    cols = math.prod(rest)
    out = np.empty((rows, *rest), np.uint8)
    if out.size:
        run = _unpack_int32_rows_serial if out.size < SERIAL_BELOW else _unpack_int32_rows
        run(np.ascontiguousarray(packed).reshape(-1, cols), bits, group, words, out.reshape(rows, cols))
    return out
