"""CUDA backend of :mod:`gpuforge.kernels.blockwise`: one thread block per quantization
block; its threads stride over the block, then reduce their maxima in shared memory
(a tree of ``syncthreads`` steps, so ``threads_per_block`` is a power of two).
The quantizer reuses the reduced absmax in the same launch to write the codes.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, float32

from gpuforge.kernels.arguments import check_float32, check_int
from gpuforge.kernels.blockwise import absmax_step, num_blocks, quantize_code
from gpuforge.core.tuning import launch_config
from gpuforge.kernels.cuda_arrays import Placement
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list

MAX_THREADS = 1024
"""Size of the shared reduction buffer: the largest ``threads_per_block`` accepted."""

# Device functions are inlined at Numba-IR level: a non-inlined device function is
# compiled for the *current* device, which makes compile_ptx need a GPU driver.
absmax_step_cuda = cuda.jit(device=True, inline="always")(absmax_step)
_quantize_code = cuda.jit(device=True, inline="always")(quantize_code)


def _block_absmax(flat, block_size, part):
    """Every thread of the block returns the absmax of quantization block blockIdx.x."""
    t = cuda.threadIdx.x
    nt = cuda.blockDim.x
    start = cuda.blockIdx.x * block_size
    stop = min(start + block_size, flat.size)
    m = float32(0.0)
    for i in range(start + t, stop, nt):
        m = absmax_step_cuda(m, abs(flat[i]))
    part[t] = m
    cuda.syncthreads()
    s = nt // 2
    while s > 0:
        if t < s:
            part[t] = absmax_step_cuda(part[t], part[t + s])
        cuda.syncthreads()
        s //= 2
    return part[0]


block_absmax_cuda = cuda.jit(device=True, inline="always")(_block_absmax)
"""Public device function: every thread of the block gets the absmax of quantization block
blockIdx.x, reduced through ``part`` (a shared array of ``blockDim.x`` float32)."""


@cuda_kernel("void(float32[::1], int64, float32[::1])")
def absmax_kernel(flat, block_size, absmax):
    part = cuda.shared.array(MAX_THREADS, float32)
    m = block_absmax_cuda(flat, block_size, part)
    if cuda.threadIdx.x == 0:
        absmax[cuda.blockIdx.x] = m


@cuda_kernel("void(float32[::1], int64, int8[::1], float32[::1])")
def quantize_int8_kernel(flat, block_size, codes, absmax):
    part = cuda.shared.array(MAX_THREADS, float32)
    m = block_absmax_cuda(flat, block_size, part)
    if cuda.threadIdx.x == 0:
        absmax[cuda.blockIdx.x] = m
    start = cuda.blockIdx.x * block_size
    stop = min(start + block_size, flat.size)
    for i in range(start + cuda.threadIdx.x, stop, cuda.blockDim.x):
        codes[i] = round(_quantize_code(flat[i], m))  # round = rint: half to even


def _threads_for(block_size: int, threads_per_block: int) -> int:
    """The power of two <= threads_per_block that covers a block, at most."""
    t = 1
    while t < block_size and t < threads_per_block:
        t *= 2
    return t


def _prepare(kernel, x, block_size):
    place = Placement()
    x = place.put(x, "x")
    check_float32("x", x.dtype)
    block_size = check_int("block_size", block_size, 1)
    threads = launch_config(kernel, power_of_two=True, max_threads=MAX_THREADS).threads
    flat = place.to_device(x).reshape(x.size)
    return place, x.shape, flat, block_size, _threads_for(block_size, threads)


def blockwise_absmax_cuda(x, block_size: int):
    place, shape, flat, block_size, threads = _prepare("kernels.blockwise_absmax", x, block_size)
    nblocks = num_blocks(flat.size, block_size)
    absmax, handed = place.empty((nblocks,), np.float32)
    place.launch(absmax_kernel, nblocks, threads, flat, block_size, absmax)
    return place.result(handed)


def blockwise_quantize_absmax_int8_cuda(x, block_size: int):
    place, shape, flat, block_size, threads = _prepare("kernels.blockwise_quantize_absmax_int8", x, block_size)
    nblocks = num_blocks(flat.size, block_size)
    codes, codes_handed = place.empty(shape, np.int8)
    absmax, absmax_handed = place.empty((nblocks,), np.float32)
    place.launch(quantize_int8_kernel, nblocks, threads, flat, block_size,
                 codes.reshape(flat.size), absmax)
    return place.result(codes_handed), place.result(absmax_handed)


blockwise_absmax_ptx = ptx_list(absmax_kernel)
blockwise_quantize_absmax_int8_ptx = ptx_list(quantize_int8_kernel)
