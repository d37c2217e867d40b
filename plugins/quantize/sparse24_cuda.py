"""CUDA backend of :mod:`.sparse24`: one thread per group of 4 values."""
from __future__ import annotations

import numpy as np
from numba import cuda

from gpuforge.kernels.arguments import KernelArgumentError
from gpuforge.kernels.cuda_arrays import Placement, zeros_flag
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list
from gpuforge.core.tuning import launch_config
from gpuforge.plugins.quantize.sparse24 import _check, _check_mask, compress_group, mask_group


_mask_group = cuda.jit(device=True, inline="always")(mask_group)
_compress_group = cuda.jit(device=True, inline="always")(compress_group)


@cuda_kernel("void(float32[:, ::1], boolean[:, ::1], int32[::1])")
def mask_kernel(scores, out, bad):
    r, c = scores.shape
    ng = c // 4
    for t in range(cuda.grid(1), r * ng, cuda.gridsize(1)):
        i = t // ng
        if _mask_group(scores, out, i, 4 * (t - i * ng)):
            bad[0] = 1


@cuda_kernel("void(float32[:, ::1], boolean[:, ::1], float32[:, ::1], uint8[:, ::1], int32[::1])")
def compress_kernel(w, mask, vals, meta, bad):
    r, c = w.shape
    ng = c // 4
    for t in range(cuda.grid(1), r * ng, cuda.gridsize(1)):
        i = t // ng
        if _compress_group(w, mask, vals, meta, i, t - i * ng):
            bad[0] = 1


def mask_2to4_cuda(scores):
    place = Placement()
    scores = place.put(scores, "scores")
    _check(scores)
    r, c = scores.shape
    out, handed = place.empty((r, c), np.bool_)
    if r * c:
        cfg = launch_config("quantize.mask_2to4")
        bad = zeros_flag(place)
        place.launch(mask_kernel, cfg.stride_blocks(r * c // 4), cfg.threads, place.to_device(scores), out, bad)
        if place.read_flag(bad):
            raise KernelArgumentError("scores hold NaN")
    return place.result(handed)


def compress_2to4_cuda(w, mask):
    place = Placement()
    w, mask = place.put(w, "w"), place.put(mask, "mask")
    _check_mask(w, mask)
    r, c = w.shape
    vals, h_vals = place.empty((r, c // 2), np.float32)
    meta, h_meta = place.empty((r, c // 4), np.uint8)
    if r * c:
        cfg = launch_config("quantize.compress_2to4")
        bad = zeros_flag(place)
        place.launch(compress_kernel, cfg.stride_blocks(r * c // 4), cfg.threads, place.to_device(w), place.to_device(mask), vals, meta, bad)
        if place.read_flag(bad):
            raise KernelArgumentError("mask must keep exactly 2 of every 4 values")
    return place.result(h_vals), place.result(h_meta)


mask_2to4_ptx = ptx_list(mask_kernel)
compress_2to4_ptx = ptx_list(compress_kernel)
