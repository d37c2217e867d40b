"""CUDA backend of :mod:`gpuforge.kernels.packing`: one thread per output element
(byte, word or value) in a grid-stride loop; consecutive threads touch consecutive
addresses. Out-of-range input values set an error flag that the host wrapper reads
(one small device-to-host copy, hence one synchronization per pack call).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda

from gpuforge.kernels.arguments import out_of_range
from gpuforge.core.tuning import launch_config
from gpuforge.kernels.cuda_arrays import Placement, zeros_flag
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list
from gpuforge.kernels.packing import (check_pack_bits, check_pack_int32, check_unpack_bits,
                                      check_unpack_int32, gptq_group, word_value)


_INPUT_DTYPES = ("uint8", "int32", "int64")
"""Value dtypes whose pack kernels the PTX check builds (others compile on first use)."""


@cuda_kernel(*(f"void({t}[:, ::1], int64, uint8[:, ::1], int32[::1])" for t in _INPUT_DTYPES))
def pack_bits_kernel(values, bits, out, bad):
    nrows, n = values.shape
    nbytes = out.shape[1]
    per = 8 // bits
    limit = 1 << bits
    for o in range(cuda.grid(1), nrows * nbytes, cuda.gridsize(1)):
        r = o // nbytes
        byte = o - r * nbytes
        acc = np.int64(0)
        for p in range(per):
            c = byte * per + p
            if c < n:
                v = values[r, c]
                if v < 0 or v >= limit:
                    bad[0] = 1
                acc |= (np.int64(v) & (limit - 1)) << (bits * (per - 1 - p))
        out[r, byte] = acc


@cuda_kernel("void(uint8[:, ::1], int64, uint8[:, ::1])")
def unpack_bits_kernel(packed, bits, out):
    nrows, n = out.shape
    per = 8 // bits
    mask = (1 << bits) - 1
    for o in range(cuda.grid(1), nrows * n, cuda.gridsize(1)):
        r = o // n
        c = o - r * n
        byte = np.int64(packed[r, c // per])
        out[r, c] = (byte >> (bits * (per - 1 - c % per))) & mask


@cuda_kernel(*(f"void({t}[:, ::1], int64, int64, int64, int32[:, ::1], int32[::1])" for t in _INPUT_DTYPES))
def pack_int32_kernel(values, bits, group, words, out, bad):
    rows, cols = values.shape
    limit = 1 << bits
    for o in range(cuda.grid(1), out.shape[0] * cols, cuda.gridsize(1)):
        w = o // cols
        c = o - w * cols
        base = (w // words) * group
        first = 32 * (w % words)
        acc = np.int64(0)
        for j in range(first // bits, (first + 31) // bits + 1):
            r = base + j
            if r < rows:
                v = values[r, c]
                if v < 0 or v >= limit:
                    bad[0] = 1
                v64 = np.int64(v) & (limit - 1)
                shift = bits * j - first
                if shift >= 0:
                    acc |= v64 << shift
                else:
                    acc |= v64 >> -shift
        a = acc & 0xFFFFFFFF
        out[w, c] = a - (1 << 32) if a >= (1 << 31) else a


_word_value = cuda.jit(device=True, inline="always")(word_value)


@cuda_kernel("void(int32[:, ::1], int64, int64, int64, uint8[:, ::1])")
def unpack_int32_kernel(packed, bits, group, words, out):
    rows, cols = out.shape
    for o in range(cuda.grid(1), rows * cols, cuda.gridsize(1)):
        r = o // cols
        c = o - r * cols
        out[r, c] = _word_value(packed, r, c, bits, group, words)


def pack_bits_cuda(values, bits: int):
    place = Placement()
    values = place.put(values, "values")
    bits = check_pack_bits(values, bits)
    cfg = launch_config("kernels.pack_bits")
    *lead, n = values.shape
    nrows, nbytes = math.prod(lead), -(-n // (8 // bits))
    out, handed = place.empty((*lead, nbytes), np.uint8)
    if nrows * nbytes:
        bad = zeros_flag(place)
        place.launch(pack_bits_kernel, cfg.stride_blocks(nrows * nbytes), cfg.threads,
                     place.to_device(values).reshape(nrows, n), bits,
                     out.reshape(nrows, nbytes), bad)
        if place.read_flag(bad):
            raise out_of_range("values", bits)
    return place.result(handed)


def unpack_bits_cuda(packed, bits: int, n: int):
    place = Placement()
    packed = place.put(packed, "packed")
    bits, n = check_unpack_bits(packed, bits, n)
    cfg = launch_config("kernels.unpack_bits")
    *lead, nbytes = packed.shape
    nrows = math.prod(lead)
    out, handed = place.empty((*lead, n), np.uint8)
    if nrows * n:
        place.launch(unpack_bits_kernel, cfg.stride_blocks(nrows * n), cfg.threads,
                     place.to_device(packed).reshape(nrows, nbytes), bits,
                     out.reshape(nrows, n))
    return place.result(handed)


def pack_int32_cuda(values, bits: int):
    place = Placement()
    values = place.put(values, "values")
    bits = check_pack_int32(values, bits)
    cfg = launch_config("kernels.pack_int32")
    group, words = gptq_group(bits)
    rows, rest = values.shape[0], tuple(values.shape[1:])
    cols = math.prod(rest)
    nwords = -(-rows // group) * words
    out, handed = place.empty((nwords, *rest), np.int32)
    if nwords * cols:
        bad = zeros_flag(place)
        place.launch(pack_int32_kernel, cfg.stride_blocks(nwords * cols), cfg.threads,
                     place.to_device(values).reshape(rows, cols), bits, group, words,
                     out.reshape(nwords, cols), bad)
        if place.read_flag(bad):
            raise out_of_range("values", bits)
    return place.result(handed)


def unpack_int32_cuda(packed, bits: int, rows: int):
    place = Placement()
    packed = place.put(packed, "packed")
    bits, rows = check_unpack_int32(packed, bits, rows)
    cfg = launch_config("kernels.unpack_int32")
    group, words = gptq_group(bits)
    nwords, rest = packed.shape[0], tuple(packed.shape[1:])
    cols = math.prod(rest)
    out, handed = place.empty((rows, *rest), np.uint8)
    if rows * cols:
        place.launch(unpack_int32_kernel, cfg.stride_blocks(rows * cols), cfg.threads,
                     place.to_device(packed).reshape(nwords, cols), bits, group, words,
                     out.reshape(rows, cols))
    return place.result(handed)


pack_bits_ptx = ptx_list(pack_bits_kernel)
unpack_bits_ptx = ptx_list(unpack_bits_kernel)
pack_int32_ptx = ptx_list(pack_int32_kernel)
unpack_int32_ptx = ptx_list(unpack_int32_kernel)
