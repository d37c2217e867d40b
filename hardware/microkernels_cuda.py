"""numba-cuda backends of :mod:`gpuforge.hardware.microkernels` (grid-stride loops, one
element per thread per step), plus two GPU-only microbenchmarks of ``hw bench``:
an empty kernel (launch latency) and a shared-memory read loop (shared-memory bandwidth,
after the Hopper microbenchmarking study's method: each warp reads 32 consecutive
words, so no bank conflicts).

Host wrappers take NumPy arrays (results come back as NumPy), Numba device arrays or
CUDA torch tensors (results stay on the device), like every gpuforge CUDA kernel.
"""
from __future__ import annotations

import numpy as np
from numba import cuda, float32

from gpuforge.core.tuning import launch_config
from gpuforge.hardware.microkernels import _same_shape, _scalar
from gpuforge.kernels.arguments import check_float32, check_int
from gpuforge.kernels.cuda_arrays import Placement
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list

SMEM_WORDS = 4096
"""float32 words of shared memory the bandwidth kernel reads (16 KiB, a power of two)."""
MAX_BLOCKS = 65535


@cuda_kernel("void(float32[::1], float32[::1])")
def copy_kernel(src, dst):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, src.size, stride):
        dst[i] = src[i]


@cuda_kernel("void(float32[::1], float32[::1], float32, float32[::1])")
def triad_kernel(b, c, s, out):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, out.size, stride):
        out[i] = b[i] + s * c[i]


@cuda_kernel("void(float32[::1], float32[::1], int64, float32, float32)")
def fma_kernel(x, out, iters, a, b):
    start, stride = cuda.grid(1), cuda.gridsize(1)
    for i in range(start, x.size, stride):
        y = x[i]
        for _ in range(iters):
            y = y * a + b
        out[i] = y


@cuda_kernel("void()")
def empty_kernel():
    pass


@cuda_kernel("void(float32[::1], int64)")
def smem_read_kernel(out, reps):
    sm = cuda.shared.array(SMEM_WORDS, float32)
    t = cuda.threadIdx.x
    for k in range(t, SMEM_WORDS, cuda.blockDim.x):
        sm[k] = float32(k)
    cuda.syncthreads()
    acc = float32(0.0)
    idx = t & (SMEM_WORDS - 1)
    for _ in range(reps):
        acc += sm[idx]
        idx = (idx + 32) & (SMEM_WORDS - 1)
    i = cuda.grid(1)
    if i < out.size:
        out[i] = acc


def copy_cuda(x):
    place = Placement()
    x = place.put(x, "x")
    check_float32("x", x.dtype)
    shape = x.shape
    src = place.to_device(x).reshape(x.size)
    out, handed = place.empty(shape, np.float32)
    cfg = launch_config("hardware.copy")
    place.launch(copy_kernel, cfg.stride_blocks(src.size, MAX_BLOCKS), cfg.threads, src, out.reshape(src.size))
    return place.result(handed)


def triad_cuda(b, c, scalar):
    place = Placement()
    b, c = place.put(b, "b"), place.put(c, "c")
    check_float32("b", b.dtype)
    check_float32("c", c.dtype)
    _same_shape(b, c)
    s = _scalar("scalar", scalar)
    n = b.size
    db, dc = place.to_device(b).reshape(n), place.to_device(c).reshape(n)
    out, handed = place.empty(b.shape, np.float32)
    cfg = launch_config("hardware.triad")
    place.launch(triad_kernel, cfg.stride_blocks(n, MAX_BLOCKS), cfg.threads, db, dc, s, out.reshape(n))
    return place.result(handed)


def fma_cuda(x, iters, a, b):
    place = Placement()
    x = place.put(x, "x")
    check_float32("x", x.dtype)
    iters = check_int("iters", iters, 0)
    a32, b32 = _scalar("a", a), _scalar("b", b)
    n = x.size
    src = place.to_device(x).reshape(n)
    out, handed = place.empty(x.shape, np.float32)
    cfg = launch_config("hardware.fma")
    place.launch(fma_kernel, cfg.stride_blocks(n, MAX_BLOCKS), cfg.threads, src, out.reshape(n), iters, a32, b32)
    return place.result(handed)


def launch_empty(blocks: int = 1, threads: int = 32) -> None:
    empty_kernel[blocks, threads]()


def smem_read(out, reps: int, blocks: int, threads: int) -> None:
    """Launch the shared-memory read loop on a device array ``out`` of blocks x threads."""
    smem_read_kernel[blocks, threads](out, reps)


# Every CUDA kernel of ``hw bench`` with the signature it is launched with.
ptx = ptx_list(copy_kernel, triad_kernel, fma_kernel, empty_kernel, smem_read_kernel)
copy_ptx = ptx_list(copy_kernel, empty_kernel, smem_read_kernel)
triad_ptx = ptx_list(triad_kernel)
fma_ptx = ptx_list(fma_kernel)
