"""CUDA backend of :mod:`.nf4`: the same layout and rounding as the reference.

- encode: one thread per quantization block finds its absmax (and flags NaN/inf), then
  one thread per output byte encodes its two values (consecutive threads, consecutive
  bytes);
- decode: one thread per output value;
- double quantization: the offset is bitsandbytes' (torch's float32 mean on the CPU, of a
  host copy of absmax: n/64 values), then one thread per nested block of 256 finds its
  max and writes its codes through bitsandbytes' 65536-bin table.
Grid-stride loops everywhere; launch sizes from ``tuning.toml``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32, int64

from gpuforge.core.tuning import launch_config
from gpuforge.kernels.arguments import KernelArgumentError
from gpuforge.kernels.cuda_arrays import Placement, zeros_flag
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list
from gpuforge.kernels.dynamic_map import lut_index, quantize_lut
from gpuforge.plugins.quantize.nf4 import (DYNAMIC_MAP, LUT_BINS, bounds_and_order, check_decode,
                                           check_dq_decode, check_dq_encode, check_encode,
                                           code_table, dq_offset, interval_lut, non_finite)

@cuda_kernel("void(float32[::1], int64, float32[::1], int32[::1])")
def absmax_kernel(flat, bs, absmax, bad):
    n = flat.size
    for b in range(cuda.grid(1), absmax.size, cuda.gridsize(1)):
        m = float32(0.0)
        for i in range(b * bs, min(b * bs + bs, n)):
            v = abs(flat[i])
            if not (v <= float32(3.4028234663852886e38)):   # NaN or inf
                bad[0] = 1
            if v > m:
                m = v
        absmax[b] = m


def code4(s, bounds, order, lut):
    if s > float32(1.0):
        s = float32(1.0)
    elif s < float32(-1.0):
        s = float32(-1.0)
    j = int64((s + float32(1.0)) * float32(LUT_BINS // 2))
    if j > LUT_BINS - 1:
        j = LUT_BINS - 1
    c = lut[j]
    while c < 15 and bounds[c] < s:
        c += 1
    return order[c]


_code4 = cuda.jit(device=True, inline="always")(code4)


@cuda_kernel("void(float32[::1], int64, float32[::1], float32[::1], int64[::1], int64[::1], uint8[::1])")
def encode_kernel(flat, bs, absmax, bounds, order, lut, out):
    n = flat.size
    nb = absmax.size
    short_last = n % bs != 0
    for byte in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        acc = int64(0)
        for p in range(2):
            i = 2 * byte + p
            if i < n:
                b = i // bs
                am = absmax[b]
                if am < float32(1e-38):
                    am = float32(1e-38)
                if short_last and b == nb - 1:
                    s = flat[i] / am
                else:
                    s = flat[i] * (float32(1.0) / am)
                acc |= int64(_code4(s, bounds, order, lut)) << (4 * (1 - p))
        out[byte] = acc


@cuda_kernel("void(uint8[::1], float32[::1], int64, float32[::1], float32[::1])")
def decode_kernel(packed, absmax, bs, code, out):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        byte = int64(packed[i // 2])
        q = byte >> 4 if i % 2 == 0 else byte & 15
        out[i] = code[q] * absmax[i // bs]


_lut_index = cuda.jit(device=True, inline="always")(lut_index)


@cuda_kernel("void(float32[::1], float32[::1], int64, uint8[::1], uint8[::1], float32[::1])")
def dq_encode_kernel(absmax, offset, bs, lut, q, nested):
    m = absmax.size
    off = offset[0]
    for b in range(cuda.grid(1), nested.size, cuda.gridsize(1)):
        start = b * bs
        stop = min(start + bs, m)
        mx = float32(0.0)
        for i in range(start, stop):
            v = abs(absmax[i] - off)
            if v > mx:
                mx = v
        nested[b] = mx
        if mx == float32(0.0):
            for i in range(start, stop):
                q[i] = 0
        else:
            inv = float32(1.0) / mx
            for i in range(start, stop):
                q[i] = lut[_lut_index((absmax[i] - off) * inv)]


@cuda_kernel("void(uint8[::1], float32[::1], float32[::1], int64, float32[::1], float32[::1])")
def dq_decode_kernel(q, nested, offset, bs, code, out):
    off = offset[0]
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = code[q[i]] * nested[i // bs] + off


def _flat(place: Placement, x):
    if isinstance(x, np.ndarray):
        return x.reshape(-1)
    return x.reshape(math.prod(x.shape)) if x.ndim != 1 else x


def nf4_encode_cuda(x, blocksize: int = 64, quant_type: str = "nf4"):
    place = Placement()
    x = place.put(x, "x")
    blocksize = check_encode(x, blocksize, quant_type)
    n = math.prod(x.shape)
    nb = -(-n // blocksize)
    absmax, h_absmax = place.empty((nb,), np.float32)
    packed, h_packed = place.empty(((n + 1) // 2,), np.uint8)
    if n:
        flat = place.to_device(_flat(place, x))
        cfg = launch_config("quantize.nf4_encode")
        bad = zeros_flag(place)
        place.launch(absmax_kernel, cfg.stride_blocks(nb), cfg.threads, flat, blocksize, absmax, bad)
        if place.read_flag(bad):
            raise non_finite()
        bounds, order = bounds_and_order(quant_type)
        dev = [cuda.to_device(a, stream=place.stream) for a in (bounds, order, interval_lut(bounds))]
        place.launch(encode_kernel, cfg.stride_blocks((n + 1) // 2), cfg.threads, flat, blocksize, absmax, *dev, packed)
    return place.result(h_packed), place.result(h_absmax)


def nf4_decode_cuda(packed, absmax, n: int, blocksize: int = 64, quant_type: str = "nf4"):
    place = Placement()
    packed = place.put(packed, "packed")
    absmax = place.put(absmax, "absmax")
    n, blocksize = check_decode(packed, absmax, n, blocksize, quant_type)
    out, handed = place.empty((n,), np.float32)
    if n:
        cfg = launch_config("quantize.nf4_decode")
        place.launch(decode_kernel, cfg.stride_blocks(n), cfg.threads, place.to_device(packed), place.to_device(absmax),
                     blocksize, cuda.to_device(code_table(quant_type), stream=place.stream), out)
    return place.result(handed)


def absmax_dq_encode_cuda(absmax, blocksize: int = 256):
    place = Placement()
    absmax = place.put(absmax, "absmax")
    blocksize = check_dq_encode(absmax, blocksize)
    m = absmax.shape[0]
    q, h_q = place.empty((m,), np.uint8)
    nested, h_nested = place.empty((-(-m // blocksize),), np.float32)
    offset, h_offset = place.empty((1,), np.float32)
    host = absmax if isinstance(absmax, np.ndarray) else absmax.copy_to_host(stream=place.stream)
    off = dq_offset(host)
    if not math.isfinite(float(off)):
        raise KernelArgumentError("absmax holds NaN or inf")
    offset.copy_to_device(np.array([off], np.float32), stream=place.stream)
    if m:
        cfg = launch_config("quantize.absmax_dq_encode")
        place.launch(dq_encode_kernel, cfg.stride_blocks(nested.shape[0]), cfg.threads, place.to_device(absmax), offset,
                     blocksize, cuda.to_device(quantize_lut(True), stream=place.stream), q, nested)
    return place.result(h_q), place.result(h_nested), place.result(h_offset)


def absmax_dq_decode_cuda(qabsmax, nested_absmax, offset, blocksize: int = 256):
    place = Placement()
    q = place.put(qabsmax, "qabsmax")
    nested = place.put(nested_absmax, "nested_absmax")
    offset = place.put(offset, "offset")
    blocksize = check_dq_decode(q, nested, offset, blocksize)
    out, handed = place.empty((q.shape[0],), np.float32)
    if q.shape[0]:
        cfg = launch_config("quantize.absmax_dq_decode")
        place.launch(dq_decode_kernel, cfg.stride_blocks(q.shape[0]), cfg.threads, place.to_device(q),
                     place.to_device(nested), place.to_device(offset), blocksize,
                     cuda.to_device(DYNAMIC_MAP, stream=place.stream), out)
    return place.result(handed)


nf4_encode_ptx = ptx_list(absmax_kernel, encode_kernel)
nf4_decode_ptx = ptx_list(decode_kernel)
absmax_dq_encode_ptx = ptx_list(dq_encode_kernel)
absmax_dq_decode_ptx = ptx_list(dq_decode_kernel)
