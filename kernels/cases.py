"""Conformance cases of the shared kernels, generated from fixed seeds so a failure
reproduces. ``<kernel>_valid_cases`` are inputs on which every backend must return what
the reference returns; ``<kernel>_invalid_cases`` (named ``invalid-...``) are inputs
that the reference and every backend reject with
:class:`~gpuforge.kernels.arguments.KernelArgumentError`; ``<kernel>_cases``, which the
specs register, returns both (the harness expects a backend to raise the same type as
the reference).

Cases marked ``simulator=False`` are too slow for Numba's CUDA simulator (blockwise
kernels synchronize threads; keep simulated inputs around 4k elements or fewer).
NumPy only: no Numba here.
"""
from __future__ import annotations

import numpy as np

from gpuforge.core.specs import KernelCase


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _normal(seed: int, shape) -> np.ndarray:
    return _rng(seed).standard_normal(shape).astype(np.float32)


# --- blockwise ---------------------------------------------------------------------------

def _special_values() -> np.ndarray:
    """Blocks of 8: NaN, +inf, -inf, +-inf with NaN, all zeros, -0.0, subnormals, normal."""
    x = _normal(7, 64)
    x[0] = np.nan
    x[9] = np.inf
    x[17] = -np.inf
    x[24], x[25] = np.inf, np.nan
    x[32:40] = 0.0
    x[40:48] = -0.0
    x[48:56] = np.float32(1e-45) * np.arange(8)
    return x


def _round_half_values() -> np.ndarray:
    """absmax 127, so codes are the values themselves: k + 0.5 must round half to even."""
    halves = np.arange(-20, 21, dtype=np.float32) + np.float32(0.5)
    x = np.concatenate([[np.float32(127)], halves, -halves[:22]]).astype(np.float32)
    assert np.array_equal(halves / np.float32(127) * np.float32(127), halves)
    return x


def blockwise_valid_cases() -> list[KernelCase]:
    """For blockwise_absmax and blockwise_quantize_absmax_int8: args (x, block_size)."""
    wide = _normal(3, (32, 40))
    return [
        KernelCase("random-1k-block64", (_normal(1, 1024), 64)),
        KernelCase("odd-size-1000-block64", (_normal(2, 1000), 64)),
        KernelCase("block-larger-than-n", (_normal(4, 10), 256)),
        KernelCase("block-size-1", (_normal(5, 100), 1)),
        KernelCase("block-size-3-odd", (_normal(6, 301), 3)),
        KernelCase("2d-33x31-block128", (_normal(8, (33, 31)), 128)),
        KernelCase("scalar-0d", (np.array(-2.5, np.float32), 64)),
        KernelCase("empty", (np.zeros(0, np.float32), 64)),
        KernelCase("empty-2d", (np.zeros((0, 7), np.float32), 16)),
        KernelCase("non-contiguous-stride2", (_normal(9, 2000)[::2], 64)),
        KernelCase("non-contiguous-transpose", (wide.T, 32)),
        KernelCase("fortran-order", (np.asfortranarray(_normal(10, (30, 20))), 50)),
        KernelCase("nan-inf-zero-subnormal", (_special_values(), 8)),
        KernelCase("round-half-to-even", (_round_half_values(), 128)),
        KernelCase("huge-and-tiny", (np.array([3e38, -3e38, 1e-38, 7], np.float32), 2)),
        KernelCase("random-1m-block4096", (_normal(11, 1 << 20), 4096), simulator=False),
        KernelCase("random-300k-block64", (_normal(12, 300_001), 64), simulator=False),
    ]


def blockwise_invalid_cases() -> list[KernelCase]:
    x = _normal(13, 100)
    return [
        KernelCase("invalid-float64-input", (x.astype(np.float64), 64)),
        KernelCase("invalid-int-input", (np.arange(10), 4)),
        KernelCase("invalid-block-size-0", (x, 0)),
        KernelCase("invalid-block-size-negative", (x, -64)),
        KernelCase("invalid-block-size-float", (x, 64.0)),
        KernelCase("invalid-block-size-bool", (x, True)),
    ]


# --- pack_bits / unpack_bits ---------------------------------------------------------------

def _codes(seed: int, shape, bits: int, dtype=np.uint8) -> np.ndarray:
    return _rng(seed).integers(0, 2 ** bits, shape).astype(dtype)


def pack_bits_valid_cases() -> list[KernelCase]:
    """args (values, bits)."""
    cases = []
    for bits in (2, 4):
        cases += [
            KernelCase(f"random-4x1000-{bits}bit", (_codes(20 + bits, (4, 1000), bits), bits)),
            KernelCase(f"odd-37-{bits}bit", (_codes(21 + bits, (3, 37), bits), bits)),
            KernelCase(f"1d-single-{bits}bit", (_codes(22 + bits, 1, bits), bits)),
            KernelCase(f"3d-{bits}bit", (_codes(23 + bits, (2, 3, 9), bits), bits)),
            KernelCase(f"int64-{bits}bit", (_codes(24 + bits, (5, 13), bits, np.int64), bits)),
            KernelCase(f"int8-{bits}bit", (_codes(25 + bits, 19, bits, np.int8), bits)),
            KernelCase(f"max-value-{bits}bit", (np.full((2, 7), 2 ** bits - 1, np.uint8), bits)),
            KernelCase(f"non-contiguous-slice-{bits}bit",
                       (_codes(26 + bits, (6, 50), bits)[::2, 1::3], bits)),
            KernelCase(f"non-contiguous-transpose-{bits}bit",
                       (_codes(27 + bits, (31, 4), bits).T, bits)),
            KernelCase(f"empty-{bits}bit", (np.zeros(0, np.uint8), bits)),
            KernelCase(f"empty-last-axis-{bits}bit", (np.zeros((3, 0), np.uint8), bits)),
            KernelCase(f"empty-rows-{bits}bit", (np.zeros((0, 5), np.uint8), bits)),
            KernelCase(f"random-16x65537-{bits}bit",
                       (_codes(28 + bits, (16, 65537), bits), bits), simulator=False),
        ]
    return cases


def pack_bits_invalid_cases() -> list[KernelCase]:
    return [
        KernelCase("invalid-value-too-large", (np.array([1, 16], np.uint8), 4)),
        KernelCase("invalid-value-too-large-2bit", (np.array([[0, 1], [4, 0]]), 2)),
        KernelCase("invalid-negative-value", (np.array([3, -1], np.int32), 4)),
        KernelCase("invalid-float-values", (np.array([1.0, 2.0]), 4)),
        KernelCase("invalid-bool-values", (np.array([True, False]), 4)),
        KernelCase("invalid-bits-3", (np.array([1, 2], np.uint8), 3)),
        KernelCase("invalid-bits-8", (np.array([1, 2], np.uint8), 8)),
        KernelCase("invalid-0d-values", (np.array(3, np.uint8), 4)),
    ]


def unpack_bits_valid_cases() -> list[KernelCase]:
    """args (packed, bits, n); packed holds random bytes (pad bits included)."""
    cases = []
    for bits in (2, 4):
        per = 8 // bits
        cases += [
            KernelCase(f"random-4x500-{bits}bit",
                       (_codes(40 + bits, (4, 500), 8), bits, 500 * per)),
            KernelCase(f"odd-n-{bits}bit",
                       (_codes(41 + bits, (3, 10), 8), bits, 10 * per - 1)),
            KernelCase(f"1d-{bits}bit", (_codes(42 + bits, 7, 8), bits, 7 * per - per + 1)),
            KernelCase(f"non-contiguous-{bits}bit",
                       (_codes(43 + bits, (20, 8), 8)[::3], bits, 8 * per)),
            KernelCase(f"transpose-{bits}bit", (_codes(44 + bits, (5, 6), 8).T, bits, 5 * per)),
            KernelCase(f"empty-{bits}bit", (np.zeros(0, np.uint8), bits, 0)),
            KernelCase(f"empty-rows-{bits}bit", (np.zeros((0, 2), np.uint8), bits, 2 * per)),
            KernelCase(f"random-16x65537-{bits}bit",
                       (_codes(45 + bits, (16, 65537), 8), bits, 65537 * per - 1),
                       simulator=False),
        ]
    return cases


def unpack_bits_invalid_cases() -> list[KernelCase]:
    packed = _codes(46, (2, 5), 8)
    return [
        KernelCase("invalid-too-few-bytes", (packed, 4, 11)),
        KernelCase("invalid-too-many-bytes", (packed, 4, 8)),
        KernelCase("invalid-int8-packed", (packed.astype(np.int8), 4, 10)),
        KernelCase("invalid-bits-8", (packed, 8, 5)),
        KernelCase("invalid-negative-n", (packed, 4, -1)),
        KernelCase("invalid-0d-packed", (np.array(3, np.uint8), 4, 2)),
    ]


# --- pack_int32 / unpack_int32 (GPTQ) ------------------------------------------------------

def pack_int32_valid_cases() -> list[KernelCase]:
    """args (values, bits)."""
    cases = []
    for bits in (2, 3, 4, 8):
        cases += [
            KernelCase(f"gptq-128x16-{bits}bit", (_codes(60 + bits, (128, 16), bits), bits)),
            KernelCase(f"odd-rows-45x7-{bits}bit", (_codes(61 + bits, (45, 7), bits), bits)),
            KernelCase(f"1d-64-{bits}bit", (_codes(62 + bits, 64, bits, np.int32), bits)),
            KernelCase(f"3d-40x3x2-{bits}bit",
                       (_codes(63 + bits, (40, 3, 2), bits, np.int64), bits)),
            KernelCase(f"max-value-{bits}bit", (np.full((96, 3), 2 ** bits - 1, np.int64), bits)),
            KernelCase(f"non-contiguous-{bits}bit",
                       (_codes(64 + bits, (96, 20), bits)[:, ::3], bits)),
            KernelCase(f"transpose-{bits}bit", (_codes(65 + bits, (9, 64), bits).T, bits)),
            KernelCase(f"empty-rows-{bits}bit", (np.zeros((0, 4), np.uint8), bits)),
            KernelCase(f"empty-cols-{bits}bit", (np.zeros((32, 0), np.uint8), bits)),
            KernelCase(f"layer-4096x256-{bits}bit",
                       (_codes(66 + bits, (4096, 256), bits), bits), simulator=False),
        ]
    return cases


def pack_int32_invalid_cases() -> list[KernelCase]:
    return [
        KernelCase("invalid-value-too-large-3bit", (np.full((32, 2), 8, np.int32), 3)),
        KernelCase("invalid-negative-value", (np.full((32, 2), -1, np.int64), 4)),
        KernelCase("invalid-float-values", (np.zeros((32, 2)), 4)),
        KernelCase("invalid-bits-5", (np.zeros((32, 2), np.uint8), 5)),
        KernelCase("invalid-0d-values", (np.array(1, np.uint8), 4)),
    ]


def _words(seed: int, shape) -> np.ndarray:
    """Random 32-bit words, negative ones included (bit 31 set)."""
    return _rng(seed).integers(-(2 ** 31), 2 ** 31, shape, dtype=np.int64).astype(np.int32)


def unpack_int32_valid_cases() -> list[KernelCase]:
    """args (packed, bits, rows); packed holds random words (pad bits included)."""
    cases = []
    for bits in (2, 3, 4, 8):
        group, words = (32, 3) if bits == 3 else (32 // bits, 1)
        cases += [
            KernelCase(f"gptq-128-rows-{bits}bit",
                       (_words(80 + bits, (128 // group * words, 16)), bits, 128)),
            KernelCase(f"odd-rows-45-{bits}bit",
                       (_words(81 + bits, (-(-45 // group) * words, 7)), bits, 45)),
            KernelCase(f"1d-{bits}bit", (_words(82 + bits, 2 * words), bits, 2 * group - 1)),
            KernelCase(f"3d-{bits}bit", (_words(83 + bits, (words, 3, 2)), bits, group)),
            KernelCase(f"non-contiguous-{bits}bit",
                       (_words(84 + bits, (3 * words, 21))[:, ::4], bits, 3 * group)),
            KernelCase(f"empty-rows-{bits}bit", (np.zeros((0, 4), np.int32), bits, 0)),
            KernelCase(f"layer-4096x256-{bits}bit",
                       (_words(85 + bits, (4096 // group * words, 256)), bits, 4096),
                       simulator=False),
        ]
    return cases


def unpack_int32_invalid_cases() -> list[KernelCase]:
    packed = _words(86, (6, 4))
    return [
        KernelCase("invalid-rows-mismatch", (packed, 3, 65)),
        KernelCase("invalid-uint32-packed", (packed.view(np.uint32), 3, 64)),
        KernelCase("invalid-bits-6", (packed, 6, 64)),
        KernelCase("invalid-negative-rows", (packed, 4, -8)),
    ]


# --- pairwise_topk ---------------------------------------------------------------------------

def _grid_points(n: int, d: int, seed: int) -> np.ndarray:
    """Small integer coordinates: many exactly equal distances (ties)."""
    return _rng(seed).integers(-2, 3, (n, d)).astype(np.float32)


def _with_nonfinite(seed: int) -> tuple[np.ndarray, np.ndarray]:
    x = _normal(seed, (20, 4))
    y = _normal(seed + 1, (30, 4))
    y[3, 1] = np.nan
    y[7, 0] = np.inf
    y[8, 2] = -np.inf
    x[5, 3] = np.inf  # inf - inf = NaN against y[7]; inf against the rest
    x[6, 0] = np.nan  # a row whose distances are all NaN
    return x, y


def pairwise_topk_valid_cases() -> list[KernelCase]:
    """args (x, y, k), kwargs {exclude_self}."""
    x40 = _normal(100, (40, 5))
    y70 = _normal(101, (70, 5))
    pts = _normal(102, (48, 3))
    ties_y = _grid_points(60, 2, 103)
    xn, yn = _with_nonfinite(104)
    return [
        KernelCase("random-40x70-d5-k8", (x40, y70, 8)),
        KernelCase("k-equals-m", (x40[:10], y70[:12], 12)),
        KernelCase("k-1", (x40, y70, 1)),
        KernelCase("k-0", (x40, y70, 0)),
        KernelCase("k-20-bucket-32", (x40[:16], y70, 20)),
        KernelCase("exclude-self", (pts, pts, 6), {"exclude_self": True}),
        KernelCase("exclude-self-k-max", (pts[:9], pts[:9], 8), {"exclude_self": True}),
        KernelCase("ties-duplicate-rows", (x40[:8], np.repeat(y70[:10], 3, axis=0), 7)),
        KernelCase("ties-integer-grid", (_grid_points(20, 2, 105), ties_y, 15)),
        KernelCase("nan-inf", (xn, yn, 30)),
        KernelCase("d-1", (_normal(106, (30, 1)), _normal(107, (50, 1)), 5)),
        KernelCase("d-40-two-column-tiles", (_normal(108, (12, 40)), _normal(109, (40, 40)), 4)),
        KernelCase("m-100-partial-tile", (_normal(110, (10, 3)), _normal(111, (100, 3)), 9)),
        KernelCase("empty-x", (np.zeros((0, 4), np.float32), _normal(112, (5, 4)), 3)),
        KernelCase("empty-y-k-0", (_normal(113, (3, 4)), np.zeros((0, 4), np.float32), 0)),
        KernelCase("zero-columns", (np.zeros((4, 0), np.float32), np.zeros((6, 0), np.float32), 3)),
        KernelCase("non-contiguous-x-slice", (_normal(114, (60, 4))[::3], y70[:, :4], 5)),
        KernelCase("non-contiguous-y-transpose", (x40[:10], _normal(115, (5, 33)).T, 5)),
        KernelCase("random-2000x3000-d32-k16",
                   (_normal(116, (2000, 32)), _normal(117, (3000, 32)), 16), simulator=False),
        KernelCase("self-1500-d8-k10", (_normal(118, (1500, 8)), _normal(118, (1500, 8)), 10),
                   {"exclude_self": True}, simulator=False),
    ]


def pairwise_topk_invalid_cases() -> list[KernelCase]:
    x = _normal(120, (6, 3))
    return [
        KernelCase("invalid-k-greater-than-m", (x, x[:4], 5)),
        KernelCase("invalid-exclude-self-k-equals-m", (x, x, 6), {"exclude_self": True}),
        KernelCase("invalid-exclude-self-shape-mismatch", (x, x[:5], 2), {"exclude_self": True}),
        KernelCase("invalid-negative-k", (x, x, -1)),
        KernelCase("invalid-column-mismatch", (x, x[:, :2], 2)),
        KernelCase("invalid-float64", (x.astype(np.float64), x, 2)),
        KernelCase("invalid-1d-x", (x[0], x, 2)),
    ]


# --- what the specs register: valid and invalid cases together ---------------------------

def blockwise_cases() -> list[KernelCase]:
    return blockwise_valid_cases() + blockwise_invalid_cases()


def pack_bits_cases() -> list[KernelCase]:
    return pack_bits_valid_cases() + pack_bits_invalid_cases()


def unpack_bits_cases() -> list[KernelCase]:
    return unpack_bits_valid_cases() + unpack_bits_invalid_cases()


def pack_int32_cases() -> list[KernelCase]:
    return pack_int32_valid_cases() + pack_int32_invalid_cases()


def unpack_int32_cases() -> list[KernelCase]:
    return unpack_int32_valid_cases() + unpack_int32_invalid_cases()


def pairwise_topk_cases() -> list[KernelCase]:
    return pairwise_topk_valid_cases() + pairwise_topk_invalid_cases()
