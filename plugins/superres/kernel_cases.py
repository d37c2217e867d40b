"""Conformance cases of the superres kernels (random inputs, edge and error cases)."""
from __future__ import annotations

import numpy as np

from gpuforge.core.specs import KernelCase


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def compare_u8(expected, actual, case) -> None:
    """uint8 outputs: same shape and dtype, at most 1 LSB apart (float32 rounding at
    .5 boundaries may differ between NumPy, LLVM and a GPU's fused multiply-add), and
    at least 99% identical."""
    expected, actual = np.asarray(expected), np.asarray(actual.copy_to_host() if hasattr(actual, "copy_to_host") else actual)
    if expected.shape != actual.shape or expected.dtype != actual.dtype:
        raise AssertionError(f"shape/dtype {actual.shape} {actual.dtype} != reference {expected.shape} {expected.dtype}")
    d = np.abs(expected.astype(np.int16) - actual.astype(np.int16))
    if d.size and (d.max() > 1 or (d > 0).mean() > 0.01):
        raise AssertionError(f"max difference {d.max()} LSB, {(d > 0).mean():.2%} of values differ")


def shuffle_cases() -> list[KernelCase]:
    g = _rng(1)

    def make(r, h, w, lo=-0.2, hi=1.2):
        feats = g.uniform(lo, hi, (r * r, h, w)).astype(np.float32)
        cbcr = g.uniform(0, 1, (h * r, w * r, 2)).astype(np.float32)
        return feats, cbcr

    cases = [
        KernelCase("x3 4x5", make(3, 4, 5)),
        KernelCase("x2 1x1", make(2, 1, 1)),
        KernelCase("x1 3x7", make(1, 3, 7)),
        KernelCase("x4 odd 7x3", make(4, 7, 3)),
        KernelCase("empty h=0", (np.zeros((9, 0, 5), np.float32), np.zeros((0, 15, 2), np.float32))),
    ]
    f, c = make(3, 5, 6, -3, 3)
    f[0, 0, 0], f[1, 2, 3], f[4, 4, 5] = np.nan, np.inf, -np.inf
    c[0, 0, 0], c[3, 3, 1] = np.nan, np.inf
    cases.append(KernelCase("nan/inf", (f, c)))
    f, c = make(2, 6, 4)
    cases.append(KernelCase("non-contiguous", (np.ascontiguousarray(f.transpose(0, 2, 1)).transpose(0, 2, 1),
                                               c[:, :, ::-1][:, :, ::-1])))
    cases.append(KernelCase("x3 90x160", make(3, 90, 160), simulator=False))
    bad = make(3, 4, 5)
    cases += [
        KernelCase("error: 8 channels", (np.zeros((8, 4, 5), np.float32), bad[1])),
        KernelCase("error: cbcr shape", (bad[0], bad[1][:-1])),
        KernelCase("error: float64", (bad[0].astype(np.float64), bad[1])),
    ]
    return cases


def resize_cases() -> list[KernelCase]:
    g = _rng(2)

    def img(h, w, c, lo=0.0, hi=1.0):
        return g.uniform(lo, hi, (h, w, c)).astype(np.float32)

    nan_img = img(6, 5, 1, -1, 2)
    nan_img[2, 2, 0], nan_img[0, 4, 0] = np.nan, np.inf
    ycc = img(8, 9, 3)
    return [
        KernelCase("x3 up 6x7x2", (img(6, 7, 2), 18, 21)),
        KernelCase("down 20x30x3 -> 7x10 clamp", (img(20, 30, 3), 7, 10), {"clamp": True}),
        KernelCase("non-integer 13x17 -> 29x11", (img(13, 17, 1, -0.5, 1.5), 29, 11)),
        KernelCase("identity 5x6", (img(5, 6, 1), 5, 6)),
        KernelCase("1x1 -> 3x4 clamp", (img(1, 1, 2), 3, 4), {"clamp": True}),
        KernelCase("to 1x1", (img(9, 4, 1), 1, 1)),
        KernelCase("nan/inf", (nan_img, 12, 10)),
        KernelCase("nan/inf clamp", (nan_img, 9, 7), {"clamp": True}),
        KernelCase("non-contiguous chroma view", (ycc[..., 1:], 16, 18), {"clamp": True}),
        KernelCase("x3 120x160x2", (img(120, 160, 2), 360, 480), {"clamp": True}, simulator=False),
        KernelCase("error: empty", (np.zeros((0, 4, 1), np.float32), 3, 3)),
        KernelCase("error: zero output", (img(4, 4, 1), 0, 3)),
        KernelCase("error: 2-D", (np.zeros((4, 4), np.float32), 8, 8)),
        KernelCase("error: float64", (img(4, 4, 1).astype(np.float64), 8, 8)),
    ]


def split_cases() -> list[KernelCase]:
    g = _rng(3)
    x = g.standard_normal((1, 37, 50)).astype(np.float32)
    return [
        KernelCase("37x50 tile 16 pad 4", (x, 16, 4)),
        KernelCase("3ch tile 7 pad 0", (g.standard_normal((3, 20, 20)).astype(np.float32), 7, 0)),
        KernelCase("tile larger than image", (x, 64, 8)),
        KernelCase("pad larger than tile", (x, 5, 9)),
        KernelCase("uint8", (g.integers(0, 255, (2, 11, 9), dtype=np.uint8), 4, 2)),
        KernelCase("non-contiguous", (np.ascontiguousarray(x[0].T)[None].transpose(0, 2, 1), 10, 3)),
        KernelCase("empty H=0", (np.zeros((2, 0, 7), np.float32), 4, 2)),
        KernelCase("big 9x360x640", (g.standard_normal((9, 360, 640)).astype(np.float32), 128, 8), simulator=False),
        KernelCase("error: tile 0", (x, 0, 2)),
        KernelCase("error: 2-D", (x[0], 8, 2)),
    ]


def stitch_cases() -> list[KernelCase]:
    from .kernels import tile_grid

    g = _rng(4)
    cases = []
    for name, (c, h, w, tile, pad), sim in [
        ("37x50 tile 16 pad 4", (1, 37, 50, 16, 4), True),
        ("9ch 20x21 tile 7 pad 0", (9, 20, 21, 7, 0), True),
        ("tile larger than image", (2, 13, 11, 64, 8), True),
        ("pad larger than tile", (1, 23, 17, 5, 9), True),
        ("big 9x360x640", (9, 360, 640, 128, 8), False),
    ]:
        th, tw, oy, ox = tile_grid(h, w, tile, pad)
        wins = g.standard_normal((len(oy) * len(ox), c, th, tw)).astype(np.float32)
        cases.append(KernelCase(name, (wins, h, w, tile, pad), simulator=sim))
    cases.append(KernelCase("empty H=0", (np.zeros((0, 2, 0, 7), np.float32), 0, 7, 4, 3)))
    cases.append(KernelCase("error: window count", (np.zeros((3, 1, 8, 8), np.float32), 20, 20, 4, 2)))
    return cases
