"""numba-cuda backends of :mod:`gpuforge.plugins.finetune.adam` (same signatures).

AdamW is one elementwise grid-stride kernel; the 8-bit quantizer runs one thread
block per quantization block (shared-memory absmax tree, then a binary search over
the 255 code midpoints per element); dequantization is a table lookup.
Launch parameters come from ``tuning.toml`` (``threads_per_block``).
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32

from gpuforge.core.tuning import launch_config
from gpuforge.kernels.blockwise_cuda import MAX_THREADS, block_absmax_cuda
from gpuforge.kernels.cuda_arrays import Placement
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list
from gpuforge.plugins.finetune import adam as _ref


@cuda_kernel("void(float32[::1], float32[::1], float32[::1], float32[::1], float32, float32, float32, "
              "float32, float32, float32, float32)")
def adamw_kernel(p, g, m, v, decay, omb1, b2, omb2, step_size, bc2_sqrt, eps):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, p.size, stride):
        gi = g[i]
        mi = m[i] + (gi - m[i]) * omb1
        vi = v[i] * b2 + gi * gi * omb2
        m[i] = mi
        v[i] = vi
        p[i] = p[i] * decay - step_size * (mi / (math.sqrt(vi) / bc2_sqrt + eps))


@cuda_kernel("void(float32[::1], float32[::1], int64, uint8[::1], float32[::1])")
def quantize8_kernel(x, bounds, blocksize, codes, absmax):
    part = cuda.shared.array(MAX_THREADS, float32)
    t, nt = cuda.threadIdx.x, cuda.blockDim.x
    lo = cuda.blockIdx.x * blocksize
    hi = min(lo + blocksize, x.size)
    amax = block_absmax_cuda(x, blocksize, part)   # the shared-memory tree of kernels.blockwise_absmax
    if t == 0:
        absmax[cuda.blockIdx.x] = amax
    scale = max(amax, float32(1e-38))
    for i in range(lo + t, hi, nt):
        sv = min(max(x[i] / scale, float32(-1.0)), float32(1.0))
        a, b = 0, bounds.size
        while a < b:
            mid = (a + b) // 2
            if bounds[mid] < sv:
                a = mid + 1
            else:
                b = mid
        codes[i] = a


@cuda_kernel("void(uint8[::1], float32[::1], float32[::1], int64, float32[::1])")
def dequantize8_kernel(codes, absmax, code, blocksize, out):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, codes.size, stride):
        out[i] = code[codes[i]] * absmax[i // blocksize]


def adamw_step_inplace_cuda(p, g, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01) -> None:
    """In place on device buffers (numba device arrays or CUDA torch tensors, flat float32)."""
    arrs = [cuda.as_cuda_array(a) if not hasattr(a, "copy_to_host") else a for a in (p, g, m, v)]
    n = arrs[0].size
    if n:
        cfg = launch_config("finetune.adamw_step")
        adamw_kernel[cfg.stride_blocks(n), cfg.threads](*arrs, np.float32(1 - lr * weight_decay), np.float32(1 - beta1),
                                           np.float32(beta2), np.float32(1 - beta2), np.float32(lr / (1 - beta1 ** step)),
                                           np.float32(math.sqrt(1 - beta2 ** step)), np.float32(eps))


def adamw_step_cuda(param, grad, exp_avg, exp_avg_sq, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
    place = Placement()
    arrs = [place.put(a, name) for a, name in zip((param, grad, exp_avg, exp_avg_sq), ("param", "grad", "exp_avg", "exp_avg_sq"))]
    shapes = [tuple(a.shape) for a in arrs]
    if len(set(shapes)) != 1:
        raise ValueError(f"shapes differ: param {shapes[0]}, grad {shapes[1]}, exp_avg {shapes[2]}, exp_avg_sq {shapes[3]}")
    if step < 1:
        raise ValueError(f"step counts from 1, got {step}")
    shape, n = shapes[0], int(np.prod(shapes[0]))
    if n == 0:
        return tuple(np.zeros(shape, np.float32) if isinstance(a, np.ndarray) else a for a in (arrs[0], arrs[2], arrs[3]))
    outs = []
    for a in (arrs[0], arrs[2], arrs[3]):  # fresh outputs: the inputs stay untouched
        d, handed = place.empty((n,), np.float32)
        if isinstance(a, np.ndarray):
            d.copy_to_device(np.ascontiguousarray(a, np.float32).reshape(n), stream=place.stream)
        else:
            d.copy_to_device(a.reshape(n), stream=place.stream)
        outs.append((d, handed))
    g = arrs[1]
    g = place.to_device(np.ascontiguousarray(g, np.float32).reshape(n)) if isinstance(g, np.ndarray) else g.reshape(n)
    cfg = launch_config("finetune.adamw_step")
    place.launch(adamw_kernel, cfg.stride_blocks(n), cfg.threads, outs[0][0], g, outs[1][0], outs[2][0],
                 np.float32(1 - lr * weight_decay), np.float32(1 - beta1), np.float32(beta2), np.float32(1 - beta2),
                 np.float32(lr / (1 - beta1 ** step)), np.float32(math.sqrt(1 - beta2 ** step)), np.float32(eps))
    return tuple(place.result(h).reshape(shape) for _, h in outs)


def quantize_blockwise_8bit_cuda(x, blocksize: int = 256, signed: bool = True):
    place = Placement()
    xd = place.put(x, "x")
    if len(xd.shape) != 1:
        raise ValueError(f"expected a 1-D array, got shape {tuple(xd.shape)}")
    if blocksize < 1:
        raise ValueError(f"blocksize must be >= 1, got {blocksize}")
    if isinstance(xd, np.ndarray):
        xd = place.to_device(np.ascontiguousarray(xd, np.float32))
    n = xd.size
    nb = -(-n // blocksize)
    codes, codes_h = place.empty((n,), np.uint8)
    absmax, absmax_h = place.empty((nb,), np.float32)
    threads = launch_config("finetune.quantize_blockwise_8bit", power_of_two=True, max_threads=MAX_THREADS).threads
    t = 1
    while t < blocksize and t < threads:
        t *= 2
    place.launch(quantize8_kernel, nb, t, xd, place.to_device(_ref._BOUNDS[bool(signed)]), blocksize, codes, absmax)
    return place.result(codes_h), place.result(absmax_h)


def dequantize_blockwise_8bit_cuda(codes, absmax, blocksize: int = 256, signed: bool = True):
    place = Placement()
    c = place.put(codes, "codes")
    if len(c.shape) != 1 or np.dtype(c.dtype) != np.uint8:
        raise ValueError(f"codes must be a 1-D uint8 array, got {c.dtype} {tuple(c.shape)}")
    a = place.put(absmax, "absmax")
    if tuple(a.shape) != (-(-c.size // blocksize),):
        raise ValueError(f"absmax has shape {tuple(a.shape)}, expected ({-(-c.size // blocksize)},)")
    c = place.to_device(c) if isinstance(c, np.ndarray) else c
    a = place.to_device(np.ascontiguousarray(a, np.float32)) if isinstance(a, np.ndarray) else a
    out, out_h = place.empty((c.size,), np.float32)
    cfg = launch_config("finetune.dequantize_blockwise_8bit")
    if c.size:
        place.launch(dequantize8_kernel, cfg.stride_blocks(c.size), cfg.threads, c, a, place.to_device(_ref._CODES[bool(signed)]),
                     blocksize, out)
    return place.result(out_h)


adamw_ptx = ptx_list(adamw_kernel)
quantize8_ptx = ptx_list(quantize8_kernel)
dequantize8_ptx = ptx_list(dequantize8_kernel)
