"""CUDA backend of :mod:`.nf4`: the same layout and rounding as the reference.

- encode: one thread per quantization block finds its absmax (and flags NaN/inf), then
  one thread per output byte encodes its two values (consecutive threads, consecutive
  bytes);
- decode: one thread per output value;
- double quantization: the mean offset is a float64 sum of absmax (n/64 values) in two
  passes, per-block partial sums then one block over them (tree reductions in shared
  memory; the number of blocks depends only on the length, so the rounding is the same
  on every GPU); then one thread per nested block of 256 finds its max and writes codes.
Grid-stride loops everywhere; launch sizes from ``tuning.toml``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32, float64, int64

from gpuforge.core.tuning import launch_params
from gpuforge.kernels.arguments import KernelArgumentError
from gpuforge.kernels.cuda_arrays import Placement, check_threads, zeros_flag
from gpuforge.plugins.quantize.nf4 import (DYNAMIC_MAP, LUT_BINS, bounds_and_order, check_decode,
                                           check_dq_decode, check_dq_encode, check_encode,
                                           code_table, interval_lut, nearest_idx, non_finite)

MAX_BLOCKS = 65535 * 32


def _blocks(total: int, threads: int) -> int:
    return max(1, min(-(-total // threads), MAX_BLOCKS))


def _threads(kernel: str) -> int:
    return check_threads(launch_params("quantize", kernel, {"threads_per_block": 256})["threads_per_block"])


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


def decode_kernel(packed, absmax, bs, code, out):
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        byte = int64(packed[i // 2])
        q = byte >> 4 if i % 2 == 0 else byte & 15
        out[i] = code[q] * absmax[i // bs]


SUM_THREADS = 256
"""Threads of each block of the two-pass float64 sum (a power of two: tree reduction)."""
SUM_PER_THREAD = 16
"""At least this many values per thread before another block is added (few blocks for
short inputs; a one-thread sum took O(n) steps on one lane: `kernels inspect` flagged it)."""
SUM_MAX_BLOCKS = 1024


def _tree_sum(buf, s):
    """Every thread's float64 ``s`` summed over the block; valid in thread 0."""
    t = cuda.threadIdx.x
    buf[t] = s
    cuda.syncthreads()
    step = SUM_THREADS // 2
    while step > 0:
        if t < step:
            buf[t] += buf[t + step]
        cuda.syncthreads()
        step //= 2
    return buf[0]


_tree_sum_dev = cuda.jit(device=True, inline="always")(_tree_sum)


def partial_sum_kernel(a, partial):
    buf = cuda.shared.array(SUM_THREADS, float64)
    s = float64(0.0)
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        s += float64(a[i])
    s = _tree_sum_dev(buf, s)
    if cuda.threadIdx.x == 0:
        partial[cuda.blockIdx.x] = s


def mean_kernel(partial, n, total, offset):
    """One block: the sum of the partial sums, and the mean of ``n`` values."""
    buf = cuda.shared.array(SUM_THREADS, float64)
    s = float64(0.0)
    for i in range(cuda.threadIdx.x, partial.size, SUM_THREADS):
        s += partial[i]
    s = _tree_sum_dev(buf, s)
    if cuda.threadIdx.x == 0:
        total[0] = s
        offset[0] = float32(s / n) if n > 0 else float32(0.0)


def sum_blocks(n: int) -> int:
    return max(1, min(SUM_MAX_BLOCKS, -(-n // (SUM_THREADS * SUM_PER_THREAD))))


_nearest_idx = cuda.jit(device=True, inline="always")(nearest_idx)


def dq_encode_kernel(absmax, offset, bs, code, q, nested):
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
        for i in range(start, stop):
            v = absmax[i] - off
            s = v / mx if mx > float32(0.0) else float32(0.0)
            q[i] = _nearest_idx(code, s)


def dq_decode_kernel(q, nested, offset, bs, code, out):
    off = offset[0]
    for i in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        out[i] = code[q[i]] * nested[i // bs] + off


_absmax = cuda.jit(absmax_kernel)
_encode = cuda.jit(encode_kernel)
_decode = cuda.jit(decode_kernel)
_partial_sum = cuda.jit(partial_sum_kernel)
_mean = cuda.jit(mean_kernel)
_dq_encode = cuda.jit(dq_encode_kernel)
_dq_decode = cuda.jit(dq_decode_kernel)


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
        threads = _threads("quantize.nf4_encode")
        bad = zeros_flag(place)
        place.launch(_absmax, _blocks(nb, threads), threads, flat, blocksize, absmax, bad)
        if place.read_flag(bad):
            raise non_finite()
        bounds, order = bounds_and_order(quant_type)
        dev = [cuda.to_device(a, stream=place.stream) for a in (bounds, order, interval_lut(bounds))]
        place.launch(_encode, _blocks((n + 1) // 2, threads), threads, flat, blocksize, absmax, *dev, packed)
    return place.result(h_packed), place.result(h_absmax)


def nf4_decode_cuda(packed, absmax, n: int, blocksize: int = 64, quant_type: str = "nf4"):
    place = Placement()
    packed = place.put(packed, "packed")
    absmax = place.put(absmax, "absmax")
    n, blocksize = check_decode(packed, absmax, n, blocksize, quant_type)
    out, handed = place.empty((n,), np.float32)
    if n:
        threads = _threads("quantize.nf4_decode")
        place.launch(_decode, _blocks(n, threads), threads, place.to_device(packed), place.to_device(absmax),
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
    total = cuda.device_array(1, np.float64, stream=place.stream)
    a = place.to_device(absmax)
    blocks = sum_blocks(m)
    partial = cuda.device_array(blocks, np.float64, stream=place.stream)
    place.launch(_partial_sum, blocks, SUM_THREADS, a, partial)
    place.launch(_mean, 1, SUM_THREADS, partial, m, total, offset)
    if m:
        if not math.isfinite(float(total.copy_to_host(stream=place.stream)[0])):
            raise KernelArgumentError("absmax holds NaN or inf")
        threads = _threads("quantize.absmax_dq_encode")
        place.launch(_dq_encode, _blocks(nested.shape[0], threads), threads, a, offset, blocksize,
                     cuda.to_device(DYNAMIC_MAP, stream=place.stream), q, nested)
    return place.result(h_q), place.result(h_nested), place.result(h_offset)


def absmax_dq_decode_cuda(qabsmax, nested_absmax, offset, blocksize: int = 256):
    place = Placement()
    q = place.put(qabsmax, "qabsmax")
    nested = place.put(nested_absmax, "nested_absmax")
    offset = place.put(offset, "offset")
    blocksize = check_dq_decode(q, nested, offset, blocksize)
    out, handed = place.empty((q.shape[0],), np.float32)
    if q.shape[0]:
        threads = _threads("quantize.absmax_dq_decode")
        place.launch(_dq_decode, _blocks(q.shape[0], threads), threads, place.to_device(q),
                     place.to_device(nested), place.to_device(offset), blocksize,
                     cuda.to_device(DYNAMIC_MAP, stream=place.stream), out)
    return place.result(handed)


def nf4_encode_ptx():
    return [(absmax_kernel, "void(float32[::1], int64, float32[::1], int32[::1])"),
            (encode_kernel, "void(float32[::1], int64, float32[::1], float32[::1], int64[::1], int64[::1], uint8[::1])")]


def nf4_decode_ptx():
    return [(decode_kernel, "void(uint8[::1], float32[::1], int64, float32[::1], float32[::1])")]


def absmax_dq_encode_ptx():
    fixed = {"threads_per_block": SUM_THREADS}
    return [(partial_sum_kernel, "void(float32[::1], float64[::1])", fixed),
            (mean_kernel, "void(float64[::1], int64, float64[::1], float32[::1])", fixed),
            (dq_encode_kernel, "void(float32[::1], float32[::1], int64, float32[::1], uint8[::1], float32[::1])")]


def absmax_dq_decode_ptx():
    return [(dq_decode_kernel, "void(uint8[::1], float32[::1], float32[::1], int64, float32[::1], float32[::1])")]
