"""2:4 structured sparsity (NVIDIA Ampere+ sparse tensor cores; as used by GPUSQ-ViT,
Yu et al. 2023): in every group of 4 consecutive weights along the input dimension keep
the 2 with the largest score, and store them compressed.

- ``mask_2to4(scores) -> bool (rows, cols)``: ``scores`` float32 (rows, cols), cols % 4 == 0;
  the 2 largest of each group of 4 (ties: the lower index wins); NaN raises.
- ``compress_2to4(w, mask) -> (values float32 (rows, cols/2), meta uint8 (rows, cols/4))``:
  the kept values in order, and per group one byte ``i0 | i1 << 2`` with their positions
  (0..3, i0 < i1) — the 2-bit index pairs of the sparse tensor-core metadata (cuSPARSELt
  packs 4 groups' 4-bit entries into 16 bits; here one group per byte for clarity).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from gpuforge.kernels.arguments import KernelArgumentError, check_float32, check_ndim


def _check(x, name="scores"):
    check_float32(name, x.dtype)
    check_ndim(name, x.shape, 2)
    if x.shape[1] % 4:
        raise KernelArgumentError(f"{name} has {x.shape[1]} columns; 2:4 sparsity needs a multiple of 4")


def _check_mask(w, mask):
    _check(w, "w")
    if np.dtype(mask.dtype) != np.bool_ or tuple(mask.shape) != tuple(w.shape):
        raise KernelArgumentError(f"mask must be bool of shape {tuple(w.shape)}")


# --- reference ---------------------------------------------------------------------------

def mask_2to4(scores):
    scores = np.asarray(scores)
    _check(scores)
    if np.isnan(scores).any():
        raise KernelArgumentError("scores hold NaN")
    r, c = scores.shape
    g = scores.reshape(r, c // 4, 4)
    order = np.argsort(-g, axis=-1, kind="stable")[..., :2]   # descending, ties to the lower index
    mask = np.zeros_like(g, dtype=bool)
    np.put_along_axis(mask, order, True, axis=-1)
    return mask.reshape(r, c)


def compress_2to4(w, mask):
    w, mask = np.asarray(w), np.asarray(mask)
    _check_mask(w, mask)
    r, c = w.shape
    m = mask.reshape(r, c // 4, 4)
    if (m.sum(-1) != 2).any():
        raise KernelArgumentError("mask must keep exactly 2 of every 4 values")
    idx = np.sort(np.argsort(~m, axis=-1, kind="stable")[..., :2], axis=-1)
    vals = np.take_along_axis(w.reshape(r, c // 4, 4), idx, axis=-1).reshape(r, c // 2)
    meta = (idx[..., 0] | (idx[..., 1] << 2)).astype(np.uint8)
    return vals.astype(np.float32), meta


def decompress_2to4(values, meta, cols: int) -> np.ndarray:
    r = values.shape[0]
    out = np.zeros((r, cols // 4, 4), np.float32)
    v = values.reshape(r, cols // 4, 2)
    i0, i1 = meta & 3, meta >> 2
    np.put_along_axis(out, i0[..., None].astype(np.int64), v[..., :1], axis=-1)
    np.put_along_axis(out, i1[..., None].astype(np.int64), v[..., 1:], axis=-1)
    return out.reshape(r, cols)


# --- numba-cpu ---------------------------------------------------------------------------

# One group of 4, plain Python: compiled inline by the CPU kernels below and as CUDA
# device functions in sparse24_cuda (one thread per group there).

def mask_group(scores, out, i, b):
    """Keep the 2 largest of scores[i, b:b+4] (ties: the earlier); returns 1 if a score
    is NaN."""
    first = -1
    second = -1
    nan = 0
    for k in range(4):
        s = scores[i, b + k]
        if s != s:
            nan = 1
        if first < 0 or s > scores[i, b + first]:
            second = first
            first = k
        elif second < 0 or s > scores[i, b + second]:
            second = k
    for k in range(4):
        out[i, b + k] = k == first or k == second
    return nan


def compress_group(w, mask, vals, meta, i, g):
    """Kept values of group g of row i and their 2-bit positions; returns 1 unless
    exactly 2 of the 4 are kept."""
    b = 4 * g
    n = 0
    code = 0
    for k in range(4):
        if mask[i, b + k]:
            if n < 2:
                vals[i, 2 * g + n] = w[i, b + k]
                code |= k << (2 * n)
            n += 1
    meta[i, g] = code
    return 0 if n == 2 else 1


_mask_group = njit(inline="always")(mask_group)
_compress_group = njit(inline="always")(compress_group)


@njit(parallel=True, cache=True)
def _mask(scores, out):
    r, c = scores.shape
    bad = 0
    for i in prange(r):
        for g in range(c // 4):
            bad += _mask_group(scores, out, i, 4 * g)
    return bad


@njit(parallel=True, cache=True)
def _compress(w, mask, vals, meta):
    r, c = w.shape
    bad = 0
    for i in prange(r):
        for g in range(c // 4):
            bad += _compress_group(w, mask, vals, meta, i, g)
    return bad


def mask_2to4_cpu(scores):
    scores = np.asarray(scores)
    _check(scores)
    out = np.zeros(scores.shape, np.bool_)
    if scores.size and _mask(np.ascontiguousarray(scores), out):
        raise KernelArgumentError("scores hold NaN")
    return out


def compress_2to4_cpu(w, mask):
    w, mask = np.asarray(w), np.asarray(mask)
    _check_mask(w, mask)
    r, c = w.shape
    vals = np.zeros((r, c // 2), np.float32)
    meta = np.zeros((r, c // 4), np.uint8)
    if w.size and _compress(np.ascontiguousarray(w), np.ascontiguousarray(mask), vals, meta):
        raise KernelArgumentError("mask must keep exactly 2 of every 4 values")
    return vals, meta
