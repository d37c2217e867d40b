"""Blockwise absmax and blockwise int8 absmax quantization (bitsandbytes' blockwise 8-bit
step, Dettmers et al. 2022, "8-bit Optimizers via Block-wise Quantization", sec. 2.1).

The input is flattened in C order and cut into blocks of ``block_size`` consecutive
elements; the last block may be shorter.

NaN and inf (one rule for every backend):
- ``absmax`` of a block is NaN if the block holds a NaN (it propagates, as in
  ``np.max``), else inf if it holds +-inf.
- a code is ``rint(x / absmax * 127)`` computed in float32 (round half to even), and 0
  wherever that is NaN: blocks whose absmax is 0, NaN blocks, and +-inf inside an inf
  block. Finite values in an inf block get 0 too (``x / inf``).

The reference comes first; the Numba CPU backend (``*_cpu``) follows. The CUDA backend
is in :mod:`gpuforge.kernels.blockwise_cuda`.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from gpuforge.kernels.arguments import check_float32, check_int


def num_blocks(n: int, block_size: int) -> int:
    return -(-n // block_size)


# --- reference -------------------------------------------------------------------------

def blockwise_absmax(x, block_size: int) -> np.ndarray:
    """max |x| of each block of ``block_size`` consecutive elements of ``x.ravel()``."""
    x = np.asarray(x)
    check_float32("x", x.dtype)
    block_size = check_int("block_size", block_size, 1)
    flat = x.reshape(-1)
    nblocks = num_blocks(flat.size, block_size)
    padded = np.zeros(nblocks * block_size, np.float32)  # |pad| = 0 never wins a max
    padded[: flat.size] = flat
    return np.abs(padded).reshape(nblocks, block_size).max(axis=1)


def blockwise_quantize_absmax_int8(x, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(int8 codes shaped like ``x``, float32 absmax per block); see the module docstring."""
    absmax = blockwise_absmax(x, block_size)
    x = np.asarray(x)
    flat = x.reshape(-1)
    scale = np.repeat(absmax, block_size)[: flat.size]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.rint(flat / scale * np.float32(127))
    q[np.isnan(q)] = 0
    return q.astype(np.int8).reshape(x.shape), absmax


# --- numba-cpu -------------------------------------------------------------------------

def absmax_step(m, v):
    """max(m, v) for v = |x| >= 0, with NaN propagating from either side.

    Shared by the CPU and CUDA kernels (plain Python, wrapped by each)."""
    if v > m or v != v:
        return v
    return m


def quantize_code(v, m):
    """The int8 code of ``v`` in a block with absmax ``m``, as a float32 to cast."""
    q = v / m * np.float32(127.0)
    if q != q:
        return np.float32(0.0)
    return q


absmax_step_cpu = njit(inline="always")(absmax_step)
"""Public: :func:`absmax_step` compiled inline for numba-cpu kernels of other packages."""
_quantize_code = njit(inline="always")(quantize_code)


@njit(parallel=True, cache=True)
def _absmax_blocks(flat, block_size, absmax):
    n = flat.size
    for b in prange(absmax.size):
        m = np.float32(0.0)
        for i in range(b * block_size, min((b + 1) * block_size, n)):
            m = absmax_step_cpu(m, abs(flat[i]))
        absmax[b] = m


@njit(parallel=True, cache=True)
def _quantize_blocks(flat, block_size, codes, absmax):
    n = flat.size
    for b in prange(absmax.size):
        start = b * block_size
        stop = min(start + block_size, n)
        m = np.float32(0.0)
        for i in range(start, stop):
            m = absmax_step_cpu(m, abs(flat[i]))
        absmax[b] = m
        for i in range(start, stop):
            codes[i] = np.int8(np.rint(_quantize_code(flat[i], m)))


def _flat_float32(x, block_size):
    x = np.asarray(x)
    check_float32("x", x.dtype)
    block_size = check_int("block_size", block_size, 1)
    return x.shape, np.ascontiguousarray(x).reshape(-1), block_size


def blockwise_absmax_cpu(x, block_size: int) -> np.ndarray:
    shape, flat, block_size = _flat_float32(x, block_size)
    absmax = np.empty(num_blocks(flat.size, block_size), np.float32)
    if flat.size:
        _absmax_blocks(flat, block_size, absmax)
    return absmax


def blockwise_quantize_absmax_int8_cpu(x, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    shape, flat, block_size = _flat_float32(x, block_size)
    codes = np.empty(flat.size, np.int8)
    absmax = np.empty(num_blocks(flat.size, block_size), np.float32)
    if flat.size:
        _quantize_blocks(flat, block_size, codes, absmax)
    return codes.reshape(shape), absmax
