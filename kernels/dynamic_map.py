"""bitsandbytes' 8-bit dynamic code (Dettmers 2016, "8-Bit Approximations for Parallelism
in Deep Learning"; the code of bitsandbytes' blockwise 8-bit quantization, of its 8-bit
optimizer states and of QLoRA's double quantization), and the two rounding rules
bitsandbytes uses with it. One place for every plugin that needs the code.

- :func:`dynamic_map`: ``bitsandbytes.functional.create_dynamic_map`` bit for bit (256
  sorted float32 values in [-1, 1]; signed for the first Adam moment and for QLoRA's
  double quantization, unsigned for the second moment).
- Nearest code, ties to the lower one (``torch.bucketize`` on the midpoints): bitsandbytes'
  default and CUDA rule (:func:`midpoints`).
- bitsandbytes' CPU library rule (``cquantize_blockwise_cpu_fp32``, 0.50): the normalized
  value ``v * (1 / absmax)`` (float32) picks one of 65536 uniform bins over [-1, 1]
  (:func:`lut_index`), and a table built from the midpoints gives the code of each bin
  (:func:`quantize_lut`). Near zero, where codes are closer than a bin, this is not the
  nearest code; it is what ``quantize_4bit(..., compress_statistics=True)`` stores on a CPU.

Plain NumPy and plain Python: :func:`lut_index` compiles inline into Numba CPU and CUDA
kernels.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

LUT_SIZE = 65536
"""Bins of bitsandbytes' CPU quantization table over [-1, 1]."""


def _torch_linspace_f32(start: float, end: float, steps: int) -> np.ndarray:
    """torch.linspace(start, end, steps, dtype=float32), bit for bit: torch fills the
    first half forwards from ``start`` and the second half backwards from ``end``."""
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float32((end32 - start32) / np.float32(steps - 1))
    i = np.arange(steps)
    half = steps // 2
    # torch evaluates start + step * i with a fused multiply-add: one rounding, which
    # float64 arithmetic followed by a cast to float32 reproduces.
    fwd = (np.float64(start32) + np.float64(step) * i).astype(np.float32)
    bwd = (np.float64(end32) - np.float64(step) * (steps - 1 - i)).astype(np.float32)
    return np.where(i < half, fwd, bwd).astype(np.float32)


def _create_dynamic_map(signed: bool, max_exponent_bits: int, total_bits: int) -> np.ndarray:
    data: list[float] = []
    non_sign_bits = total_bits - 1
    additional = 2 ** (non_sign_bits - max_exponent_bits) - 1
    i = 0
    for i in range(max_exponent_bits):
        items = 2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1
        b = _torch_linspace_f32(0.1, 1, items)
        means = (b[:-1] + b[1:]) / np.float32(2.0)
        scale = 10 ** (-(max_exponent_bits - 1) + i)
        data += (np.float32(scale) * means).tolist()
        if signed:
            data += (-np.float32(scale) * means).tolist()
    if additional > 0:
        b = _torch_linspace_f32(0.1, 1, additional + 1)
        means = (b[:-1] + b[1:]) / np.float32(2.0)
        scale = 10 ** (-(max_exponent_bits - 1) + i)
        data += (np.float32(scale) * means).tolist()
        if signed:
            data += (-np.float32(scale) * means).tolist()
    data += [0.0, 1.0]
    data += [0.0] * (2 ** total_bits - len(data))
    return np.array(sorted(data), dtype=np.float32)


@lru_cache(maxsize=None)
def _cached_map(signed: bool, max_exponent_bits: int, total_bits: int) -> np.ndarray:
    out = _create_dynamic_map(signed, max_exponent_bits, total_bits)
    out.setflags(write=False)
    return out


def dynamic_map(signed: bool = True, max_exponent_bits: int = 7, total_bits: int = 8) -> np.ndarray:
    """bitsandbytes.functional.create_dynamic_map: 256 sorted float32 code values in
    [-1, 1] (read-only; copy it to store it)."""
    return _cached_map(bool(signed), max_exponent_bits, total_bits)


@lru_cache(maxsize=None)
def midpoints(signed: bool = True) -> np.ndarray:
    """The 255 float32 midpoints between consecutive code values (``bucketize`` bounds)."""
    code = dynamic_map(signed)
    out = ((code[:-1] + code[1:]) / np.float32(2)).astype(np.float32)
    out.setflags(write=False)
    return out


@lru_cache(maxsize=None)
def quantize_lut(signed: bool = True) -> np.ndarray:
    """bitsandbytes' CPU table (``build_quantize_lut``): bin ``i`` stands for the value
    ``-1 + 2i / 65535`` (float32) and holds the number of midpoints below it."""
    code = dynamic_map(signed)
    mids = (np.float32(0.5) * (code[:-1] + code[1:])).astype(np.float32)
    i = np.arange(LUT_SIZE, dtype=np.float32)
    vals = (np.float32(-1.0) + (np.float32(2.0) * i) / np.float32(LUT_SIZE - 1)).astype(np.float32)
    out = np.searchsorted(mids, vals, side="left").astype(np.uint8)
    out.setflags(write=False)
    return out


def lut_index(v):
    """The bin of bitsandbytes' CPU table for a normalized float32 value ``v``:
    ``uint16((clamp(v, -1, 1) + 1) * 0.5 * 65535 + 0.5)`` in float32, truncated. Plain
    Python on float32 scalars (NumPy, Numba CPU and Numba CUDA all compile it)."""
    one = np.float32(1.0)
    if v > one:
        v = one
    elif v < -one:
        v = -one
    t = (v + one) * np.float32(0.5)
    return int(t * np.float32(LUT_SIZE - 1) + np.float32(0.5))


def lut_indices(v: np.ndarray) -> np.ndarray:
    """:func:`lut_index` of a float32 array."""
    v = np.clip(np.asarray(v, np.float32), np.float32(-1), np.float32(1))
    t = ((v + np.float32(1)) * np.float32(0.5)).astype(np.float32)
    return (t * np.float32(LUT_SIZE - 1) + np.float32(0.5)).astype(np.float32).astype(np.int64)
