"""Inputs on which every backend of the quantize kernels must agree with the reference,
and inputs every backend must reject (the reference raises). Fixed seeds; NumPy only."""
from __future__ import annotations

import numpy as np

from gpuforge.core.specs import KernelCase


def _normal(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _ties() -> np.ndarray:
    """absmax 1 in every block, then the NF4 midpoints themselves and their neighbours."""
    from gpuforge.plugins.quantize.nf4 import bounds_and_order

    b, _ = bounds_and_order("nf4")
    vals = np.concatenate([b, np.nextafter(b, np.float32(2)), np.nextafter(b, np.float32(-2))])
    x = np.zeros(64 * 3, np.float32)
    for k in range(3):
        x[64 * k] = 1.0
        x[64 * k + 1: 64 * k + 1 + 15] = vals[15 * k: 15 * k + 15]
    return x


def nf4_encode_cases() -> list[KernelCase]:
    wide = _normal(3, (64, 40))
    zeros = _normal(4, 300)
    zeros[64:128] = 0.0
    cases = []
    for qt in ("nf4", "fp4"):
        cases += [
            KernelCase(f"{qt}-random-4k-bs64", (_normal(1, 4096), 64, qt)),
            KernelCase(f"{qt}-odd-999-bs64", (_normal(2, 999), 64, qt)),
            KernelCase(f"{qt}-odd-blocksize-37", (_normal(5, 301), 37, qt)),
            KernelCase(f"{qt}-zero-block", (zeros, 64, qt)),
            KernelCase(f"{qt}-midpoint-ties", (_ties(), 64, qt)),
        ]
    cases += [
        KernelCase("2d-weight-bs128", (_normal(6, (32, 48)), 128)),
        KernelCase("non-contiguous-transpose", (wide.T, 64)),
        KernelCase("block-larger-than-n", (_normal(7, 10), 256)),
        KernelCase("one-value", (np.array([-2.5], np.float32), 64)),
        KernelCase("empty", (np.zeros(0, np.float32), 64)),
        KernelCase("random-1m-bs64", (_normal(8, 1 << 20), 64), simulator=False),
        KernelCase("random-100k-bs4096", (_normal(9, 100_001), 4096), simulator=False),
    ]
    return cases


def nf4_encode_invalid_cases() -> list[KernelCase]:
    x = _normal(10, 128)
    nan, inf = x.copy(), x.copy()
    nan[77] = np.nan
    inf[3] = np.inf
    return [
        KernelCase("nan", (nan, 64)),
        KernelCase("inf", (inf, 64)),
        KernelCase("float64", (x.astype(np.float64), 64)),
        KernelCase("blocksize-0", (x, 0)),
        KernelCase("unknown-quant-type", (x, 64, "int4")),
    ]


def _encoded(seed, n, bs, qt="nf4"):
    from gpuforge.plugins.quantize.nf4 import nf4_encode

    p, a = nf4_encode(_normal(seed, n), bs, qt)
    return p, a, n, bs, qt


def nf4_decode_cases() -> list[KernelCase]:
    return [
        KernelCase("nf4-4k-bs64", _encoded(1, 4096, 64)),
        KernelCase("fp4-4k-bs64", _encoded(2, 4096, 64, "fp4")),
        KernelCase("odd-999-bs64", _encoded(3, 999, 64)),
        KernelCase("odd-blocksize-37", _encoded(4, 301, 37, "fp4")),
        KernelCase("empty", _encoded(5, 0, 64)),
        KernelCase("all-codes", (np.arange(256, dtype=np.uint8), np.array([2.0, -0.5, 3.0, 1.0], np.float32), 512, 128, "nf4")),
        KernelCase("random-1m-bs64", _encoded(6, 1 << 20, 64), simulator=False),
    ]


def nf4_decode_invalid_cases() -> list[KernelCase]:
    p, a, n, bs, qt = _encoded(7, 128, 64)
    return [
        KernelCase("wrong-n", (p, a, 130, 64)),
        KernelCase("wrong-absmax-count", (p, a[:1], 128, 64)),
        KernelCase("packed-int8", (p.view(np.int8), a, 128, 64)),
    ]


def llm_absmax(seed: int, blocks: int) -> np.ndarray:
    """Block absmax (blocks of 64) of an LLM-like weight: N(0, 0.02^2) rounded to bf16."""
    w = (_normal(seed, blocks * 64) * np.float32(0.02)).view(np.uint32) & np.uint32(0xFFFF0000)
    return np.abs(w.view(np.float32)).reshape(blocks, 64).max(axis=1)


def absmax_dq_encode_cases() -> list[KernelCase]:
    a = np.abs(_normal(11, 3000)) + np.float32(0.5)
    const = np.full(300, 0.75, np.float32)
    return [
        KernelCase("absmax-3000-bs256", (a, 256)),
        KernelCase("llm-bf16-absmax-3000", (llm_absmax(16, 3000), 256)),
        KernelCase("llm-bf16-absmax-180k", (llm_absmax(17, 180_224), 256), simulator=False),
        KernelCase("absmax-odd-bs100", (a[:777], 100)),
        KernelCase("constant", (const, 256)),
        KernelCase("one-value", (np.array([1.5], np.float32), 256)),
        KernelCase("empty", (np.zeros(0, np.float32), 256)),
        KernelCase("absmax-262k", (np.abs(_normal(12, 262_144)), 256), simulator=False),
    ]


def absmax_dq_encode_invalid_cases() -> list[KernelCase]:
    a = np.abs(_normal(13, 100))
    a[5] = np.nan
    return [KernelCase("nan", (a, 256)), KernelCase("2d", (np.ones((2, 2), np.float32), 256))]


def absmax_dq_decode_cases() -> list[KernelCase]:
    from gpuforge.plugins.quantize.nf4 import absmax_dq_encode

    a = np.abs(_normal(14, 3000))
    return [
        KernelCase("3000-bs256", (*absmax_dq_encode(a, 256), 256)),
        KernelCase("odd-bs100", (*absmax_dq_encode(a[:777], 100), 100)),
        KernelCase("empty", (*absmax_dq_encode(np.zeros(0, np.float32), 256), 256)),
    ]


def absmax_dq_decode_invalid_cases() -> list[KernelCase]:
    from gpuforge.plugins.quantize.nf4 import absmax_dq_encode

    q, nested, off = absmax_dq_encode(np.abs(_normal(15, 600)), 256)
    return [KernelCase("wrong-nested-count", (q, nested[:1], off, 256)),
            KernelCase("offset-shape", (q, nested, off.reshape(1, 1), 256))]


def _all(valid, invalid):
    return valid() + invalid()


def nf4_encode_all():
    return _all(nf4_encode_cases, nf4_encode_invalid_cases)


def nf4_decode_all():
    return _all(nf4_decode_cases, nf4_decode_invalid_cases)


def absmax_dq_encode_all():
    return _all(absmax_dq_encode_cases, absmax_dq_encode_invalid_cases)


def absmax_dq_decode_all():
    return _all(absmax_dq_decode_cases, absmax_dq_decode_invalid_cases)


# --- int8 -----------------------------------------------------------------------------

def int8_vectorwise_quant_all() -> list[KernelCase]:
    x = _normal(20, (16, 64))
    x[:, 5] *= 20.0           # an outlier feature dimension
    x[3, 40] = 7.5            # one outlier value makes column 40 an outlier column
    half = np.full((2, 4), 0.5, np.float32) * np.array([1, 3, 5, 127], np.float32) / 127 * 127
    nan = _normal(21, (4, 8))
    nan[1, 2] = np.nan
    return [
        KernelCase("random-16x64-no-threshold", (x, 0.0)),
        KernelCase("random-16x64-threshold-6", (x, 6.0)),
        KernelCase("zero-row", (np.vstack([np.zeros((1, 64), np.float32), x[:3]]), 6.0)),
        KernelCase("round-half-even", (half, 0.0)),
        KernelCase("odd-33x17", (_normal(22, (33, 17)), 2.0)),
        KernelCase("non-contiguous", (_normal(23, (40, 30)).T, 0.0)),
        KernelCase("empty-rows", (np.zeros((0, 8), np.float32), 6.0)),
        KernelCase("big-512x1024", (_normal(24, (512, 1024)), 3.0), simulator=False),
        KernelCase("nan", (nan, 6.0)),
        KernelCase("1d", (_normal(25, 8), 6.0)),
        KernelCase("float64", (x.astype(np.float64), 6.0)),
    ]


def _i8(seed, shape):
    return np.random.default_rng(seed).integers(-127, 128, shape).astype(np.int8)


def int8_matmul_all() -> list[KernelCase]:
    return [
        KernelCase("16x64-by-24x64", (_i8(30, (16, 64)), _i8(31, (24, 64)))),
        KernelCase("extremes", (np.full((3, 300), -128, np.int8), np.full((2, 300), 127, np.int8))),
        KernelCase("odd-7x33-by-5x33", (_i8(32, (7, 33)), _i8(33, (5, 33)))),
        KernelCase("k-0", (np.zeros((3, 0), np.int8), np.zeros((2, 0), np.int8))),
        KernelCase("empty", (np.zeros((0, 4), np.int8), _i8(34, (3, 4)))),
        KernelCase("big-64x1024-by-256x1024", (_i8(35, (64, 1024)), _i8(36, (256, 1024))), simulator=False),
        KernelCase("k-mismatch", (_i8(37, (2, 4)), _i8(38, (2, 5)))),
        KernelCase("int16", (_i8(39, (2, 4)).astype(np.int16), _i8(40, (2, 4)))),
    ]


# --- matvec / GPTQ dequantize -----------------------------------------------------------------

def nf4_matvec_all() -> list[KernelCase]:
    from gpuforge.plugins.quantize.nf4 import nf4_encode

    def case(name, out, n_in, bs, qt="nf4", seed=40, sim=True):
        p, a = nf4_encode(_normal(seed, (out, n_in)), bs, qt)
        return KernelCase(name, (p, a, _normal(seed + 1, n_in), out, bs, qt), simulator=sim)

    p, a = nf4_encode(_normal(41, (8, 64)), 64)
    return [
        case("16x128-bs64", 16, 128, 64),
        case("fp4-16x128-bs64", 16, 128, 64, "fp4"),
        case("blocks-span-rows-7x37-bs64", 7, 37, 64),
        case("odd-blocksize-5x30-bs7", 5, 30, 7),
        case("tail-rows-11x256-bs64", 11, 256, 64),
        case("bs128-6x512", 6, 512, 128),
        case("bs8-5x24", 5, 24, 8),
        case("bs256-3x1024", 3, 1024, 256),   # several steps of the byte-shuffle kernel per block
        case("big-512x1024", 512, 1024, 64, sim=False),
        KernelCase("wrong-x-size", (p, a, _normal(42, 63), 8, 64)),
        KernelCase("x-float64", (p, a, _normal(42, 64).astype(np.float64), 8, 64)),
    ]


def _gptq(seed, n_in, out, bits, gs, act_order=False):
    from gpuforge.kernels.packing import pack_int32

    rng = np.random.default_rng(seed)
    maxq = 2 ** bits - 1
    q = rng.integers(0, maxq + 1, (n_in, out)).astype(np.uint8)
    ng = -(-n_in // gs)
    z1 = rng.integers(0, maxq, (ng, out)).astype(np.uint8)
    scales = (rng.random((ng, out)) * 0.1 + 0.01).astype(np.float16).astype(np.float32)
    g_idx = (np.arange(n_in) // gs).astype(np.int32)
    if act_order:
        g_idx = rng.permutation(g_idx).astype(np.int32)
    return pack_int32(q, bits), np.ascontiguousarray(pack_int32(np.ascontiguousarray(z1.T), bits).T), scales, g_idx, bits


def gptq_dequantize_all() -> list[KernelCase]:
    bad = list(_gptq(50, 64, 32, 4, 32))
    bad[3] = bad[3].copy()
    bad[3][5] = 7
    return [
        KernelCase("4bit-64x32-g32", _gptq(51, 64, 32, 4, 32)),
        KernelCase("3bit-64x32-g32", _gptq(52, 64, 32, 3, 32)),
        KernelCase("2bit-64x32-g16", _gptq(53, 64, 32, 2, 16)),
        KernelCase("8bit-32x8-g32", _gptq(54, 32, 8, 8, 32)),
        KernelCase("act-order-4bit", _gptq(55, 128, 32, 4, 32, True)),
        KernelCase("big-1024x512-g128", _gptq(56, 1024, 512, 4, 128), simulator=False),
        KernelCase("4bit-ragged-60x24-g20", _gptq(61, 60, 24, 4, 20)),
        KernelCase("g_idx-out-of-range", tuple(bad)),
        KernelCase("bits-5", _gptq(57, 64, 32, 4, 32)[:4] + (5,)),
    ]


def gptq_matvec_all() -> list[KernelCase]:
    return [KernelCase(c.name, c.args + (_normal(60 + i, c.args[3].shape[0]),), simulator=c.simulator)
            for i, c in enumerate(gptq_dequantize_all()[:7])] + [
        # the 4-bit group kernel: 16-column blocks, single vectors and scalar tail columns;
        # one group over a partial last word
        KernelCase("4bit-cols45-64x45-g32", _gptq(62, 64, 45, 4, 32) + (_normal(63, 64),)),
        KernelCase("4bit-one-group-60x16", _gptq(64, 60, 16, 4, 60) + (_normal(65, 60),)),
        KernelCase("wrong-x-size", _gptq(58, 64, 32, 4, 32) + (_normal(59, 63),))]


# --- 2:4 sparsity ---------------------------------------------------------------------------

def mask_2to4_all() -> list[KernelCase]:
    ties = np.array([[1, 1, 1, 1, 0, 2, 2, 0, -1, -1, -3, -2]], np.float32)
    nan = _normal(70, (4, 8))
    nan[2, 3] = np.nan
    return [
        KernelCase("random-32x64", (np.abs(_normal(71, (32, 64))),)),
        KernelCase("signed-16x16", (_normal(72, (16, 16)),)),
        KernelCase("ties", (ties,)),
        KernelCase("non-contiguous", (_normal(73, (64, 40)).T,)),
        KernelCase("empty", (np.zeros((0, 8), np.float32),)),
        KernelCase("big-1024x1024", (_normal(74, (1024, 1024)),), simulator=False),
        KernelCase("nan", (nan,)),
        KernelCase("cols-not-multiple-of-4", (_normal(75, (4, 6)),)),
    ]


def compress_2to4_all() -> list[KernelCase]:
    from gpuforge.plugins.quantize.sparse24 import mask_2to4

    w = _normal(80, (32, 64))
    bad = mask_2to4(np.abs(w))
    bad[0, :4] = True
    big = _normal(81, (1024, 1024))
    return [
        KernelCase("random-32x64", (w, mask_2to4(np.abs(w)))),
        KernelCase("ties", (np.ones((3, 8), np.float32), mask_2to4(np.ones((3, 8), np.float32)))),
        KernelCase("empty", (np.zeros((0, 8), np.float32), np.zeros((0, 8), bool))),
        KernelCase("big-1024x1024", (big, mask_2to4(np.abs(big))), simulator=False),
        KernelCase("mask-keeps-4", (w, bad)),
    ]
