"""CUDA backend of :mod:`.matvec`: one thread per output value (row of W for NF4, column
of the GPTQ (in, out) matrix; consecutive threads read consecutive qweight columns, so
GPTQ reads coalesce), one thread per element for the dequantization."""
from __future__ import annotations

import numpy as np
from numba import cuda, float32, int64

from gpuforge.kernels.arguments import KernelArgumentError
from gpuforge.kernels.cuda_arrays import Placement, zeros_flag
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list
from gpuforge.kernels.packing import gptq_group, word_value
from gpuforge.plugins.quantize.matvec import check_gptq, check_gptq_matvec, check_nf4_matvec
from gpuforge.plugins.quantize.nf4 import code_table
from gpuforge.core.tuning import launch_config


@cuda_kernel("void(uint8[::1], float32[::1], float32[::1], int64, int64, float32[::1], float32[::1])")
def nf4_matvec_kernel(packed, absmax, x, out_features, bs, code, y):
    n_in = x.size
    for o in range(cuda.grid(1), out_features, cuda.gridsize(1)):
        acc = float32(0.0)
        base = o * n_in
        for k in range(n_in):
            i = base + k
            byte = int64(packed[i // 2])
            q = byte >> 4 if i % 2 == 0 else byte & 15
            acc += code[q] * absmax[i // bs] * x[k]
        y[o] = acc


_value = cuda.jit(device=True, inline="always")(word_value)


@cuda_kernel("void(int32[:, ::1], int32[:, ::1], float32[:, ::1], int32[::1], int64, int64, int64, "
              "float32[:, ::1], int32[::1])")
def gptq_deq_kernel(qweight, qzeros, scales, g_idx, bits, group, words, out, bad):
    rows, cols = out.shape
    for t in range(cuda.grid(1), rows * cols, cuda.gridsize(1)):
        r = t // cols
        c = t - r * cols
        g = g_idx[r]
        if g < 0 or g >= scales.shape[0]:
            bad[0] = 1
        else:
            z = _value(qzeros.T, c, g, bits, group, words) + 1
            out[r, c] = scales[g, c] * float32(_value(qweight, r, c, bits, group, words) - z)


@cuda_kernel("void(int32[:, ::1], int32[:, ::1], float32[:, ::1], int32[::1], int64, int64, int64, "
              "float32[::1], float32[::1], int32[::1])")
def gptq_mv_kernel(qweight, qzeros, scales, g_idx, bits, group, words, x, y, bad):
    rows = x.size
    for c in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        acc = float32(0.0)
        for r in range(rows):
            g = g_idx[r]
            if g < 0 or g >= scales.shape[0]:
                bad[0] = 1
            else:
                z = _value(qzeros.T, c, g, bits, group, words) + 1
                acc += x[r] * scales[g, c] * float32(_value(qweight, r, c, bits, group, words) - z)
        y[c] = acc


def nf4_matvec_cuda(packed, absmax, x, out_features: int, blocksize: int = 64, quant_type: str = "nf4"):
    place = Placement()
    packed, absmax, x = place.put(packed, "packed"), place.put(absmax, "absmax"), place.put(x, "x")
    out_features, blocksize = check_nf4_matvec(packed, absmax, x, out_features, blocksize, quant_type)
    y, handed = place.empty((out_features,), np.float32)
    if out_features:
        cfg = launch_config("quantize.nf4_matvec")
        place.launch(nf4_matvec_kernel, cfg.stride_blocks(out_features), cfg.threads, place.to_device(packed), place.to_device(absmax),
                     place.to_device(x), out_features, blocksize,
                     cuda.to_device(code_table(quant_type), stream=place.stream), y)
    return place.result(handed)


def gptq_dequantize_cuda(qweight, qzeros, scales, g_idx, bits: int):
    place = Placement()
    qweight, qzeros = place.put(qweight, "qweight"), place.put(qzeros, "qzeros")
    scales, g_idx = place.put(scales, "scales"), place.put(g_idx, "g_idx")
    bits = check_gptq(qweight, qzeros, scales, g_idx, bits)
    group, words = gptq_group(bits)
    out, handed = place.empty((g_idx.shape[0], qweight.shape[1]), np.float32)
    if out.shape[0] * out.shape[1]:
        cfg = launch_config("quantize.gptq_dequantize")
        bad = zeros_flag(place)
        place.launch(gptq_deq_kernel, cfg.stride_blocks(out.shape[0] * out.shape[1]), cfg.threads, place.to_device(qweight),
                     place.to_device(qzeros), place.to_device(scales), place.to_device(g_idx), bits, group, words,
                     out, bad)
        if place.read_flag(bad):
            raise KernelArgumentError(f"g_idx must lie in [0, {scales.shape[0]})")
    return place.result(handed)


def gptq_matvec_cuda(qweight, qzeros, scales, g_idx, bits: int, x):
    place = Placement()
    qweight, qzeros = place.put(qweight, "qweight"), place.put(qzeros, "qzeros")
    scales, g_idx, x = place.put(scales, "scales"), place.put(g_idx, "g_idx"), place.put(x, "x")
    bits = check_gptq_matvec(qweight, qzeros, scales, g_idx, bits, x)
    group, words = gptq_group(bits)
    y, handed = place.empty((qweight.shape[1],), np.float32)
    if qweight.shape[1]:
        cfg = launch_config("quantize.gptq_matvec")
        bad = zeros_flag(place)
        place.launch(gptq_mv_kernel, cfg.stride_blocks(qweight.shape[1]), cfg.threads, place.to_device(qweight), place.to_device(qzeros),
                     place.to_device(scales), place.to_device(g_idx), bits, group, words, place.to_device(x), y, bad)
        if place.read_flag(bad):
            raise KernelArgumentError(f"g_idx must lie in [0, {scales.shape[0]})")
    return place.result(handed)


nf4_matvec_ptx = ptx_list(nf4_matvec_kernel)
gptq_dequantize_ptx = ptx_list(gptq_deq_kernel)
gptq_matvec_ptx = ptx_list(gptq_mv_kernel)
