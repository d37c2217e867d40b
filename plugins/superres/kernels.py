"""Kernels of the superres plugin: reference (NumPy) and numba-cpu backends.

- ``superres.shuffle_ycbcr_rgb``: the periodic shuffle of the sub-pixel layer's output
  (Shi et al. eq. 4), fused with the clamp of Y to [0, 1] and the full-range BT.601
  (JFIF, as PIL's "YCbCr" mode) YCbCr -> RGB conversion, rounded to uint8.
- ``superres.bicubic_resize``: PIL's ``Image.resize(..., BICUBIC)``: Keys' cubic with
  a = -0.5, the kernel stretched by the scale factor when shrinking (antialiasing),
  taps clipped at the borders and renormalised, horizontal pass then vertical pass,
  each optionally clamped to [0, 1] (PIL clamps to uint8 after each pass).
- ``superres.tile_split`` / ``superres.tile_stitch``: overlapping windows for tiled
  inference, and the seamless stitch that keeps only each window's core.

The CUDA backends are in :mod:`kernels_cuda`; the conformance cases in :mod:`kernel_cases`.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import njit, prange

# JFIF / PIL YCbCr -> RGB (Cb, Cr centred on 0.5 in [0, 1] units).
CR_R, CB_G, CR_G, CB_B = 1.402, 0.344136, 0.714136, 1.772


# ---------------------------------------------------------------- argument checks

def _f32(name: str, a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype != np.float32:
        raise TypeError(f"{name} must be float32, got {a.dtype}")
    return np.ascontiguousarray(a)


def shuffle_shapes(feats_shape, cbcr_shape) -> tuple[int, int, int]:
    """(r, h, w) of a valid call; ValueError otherwise."""
    if len(feats_shape) != 3:
        raise ValueError(f"feats must be (r*r, h, w), got shape {tuple(feats_shape)}")
    rr, h, w = (int(s) for s in feats_shape)
    r = math.isqrt(rr)
    if r < 1 or r * r != rr:
        raise ValueError(f"feats has {rr} channels; the sub-pixel layer gives r*r (1, 4, 9, 16, ...)")
    if tuple(int(s) for s in cbcr_shape) != (h * r, w * r, 2):
        raise ValueError(f"cbcr must be (h*r, w*r, 2) = {(h * r, w * r, 2)}, got {tuple(cbcr_shape)}")
    return r, h, w


def resize_shapes(x_shape, out_h, out_w) -> tuple[int, int, int]:
    if len(x_shape) != 3:
        raise ValueError(f"x must be (H, W, C), got shape {tuple(x_shape)}")
    h, w, c = (int(s) for s in x_shape)
    if h < 1 or w < 1:
        raise ValueError(f"cannot resize an empty image of shape {tuple(x_shape)}")
    if int(out_h) < 1 or int(out_w) < 1:
        raise ValueError(f"output size must be at least 1x1, got {out_h}x{out_w}")
    return h, w, c


def tile_grid(h: int, w: int, tile: int, pad: int):
    """Window geometry: (window height, width, top offsets, left offsets).

    Tile (i, j) owns the core rows [i*tile, (i+1)*tile) and columns likewise; its window
    is tile + 2*pad wide, shifted inwards at the image borders so it stays inside the
    image. Every core pixel is then >= pad pixels from any window edge that is not an
    image edge, so a network with receptive radius <= pad gives the same values.
    """
    if int(tile) < 1 or int(pad) < 0:
        raise ValueError(f"tile must be >= 1 and pad >= 0, got tile={tile}, pad={pad}")
    th, tw = min(tile + 2 * pad, h), min(tile + 2 * pad, w)
    ny, nx = -(-h // tile), -(-w // tile)
    oy = np.array([min(max(i * tile - pad, 0), h - th) for i in range(ny)], dtype=np.int64)
    ox = np.array([min(max(j * tile - pad, 0), w - tw) for j in range(nx)], dtype=np.int64)
    return th, tw, oy, ox


@lru_cache(maxsize=64)
def pil_coeffs(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PIL's ``precompute_coeffs`` for BICUBIC: first tap and tap count (int64, out)
    and the normalised weights (float32, out x ksize; zero past the clipped taps)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    center = (np.arange(out_size) + 0.5) * scale
    first = np.maximum(np.trunc(center - support + 0.5), 0).astype(np.int64)  # C's (int) truncates
    count = np.minimum(np.trunc(center + support + 0.5).astype(np.int64), in_size) - first
    taps = np.arange(ksize)
    k = _cubic((taps[None, :] + first[:, None] - center[:, None] + 0.5) / filterscale)
    k = np.where(taps[None, :] < count[:, None], k, 0.0)
    total = k.sum(axis=1, keepdims=True)
    weights = np.where(total != 0.0, k / np.where(total != 0.0, total, 1.0), k).astype(np.float32)
    for a in (first, count, weights):
        a.flags.writeable = False
    return first, count, weights


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    x = np.abs(x)
    return np.where(x < 1.0, ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
                    np.where(x < 2.0, (((x - 5.0) * x + 8.0) * x - 4.0) * a, 0.0))


# ---------------------------------------------------------------- references

def _clamp01(v: np.ndarray) -> np.ndarray:
    """Clamp to [0, 1]; NaN becomes 0."""
    return np.where(v >= 0, np.minimum(v, np.float32(1)), np.float32(0)).astype(np.float32)


def pixel_shuffle(feats: np.ndarray) -> np.ndarray:
    """(r*r, h, w) -> (h*r, w*r): channel i*r + j of LR pixel (y, x) is HR pixel (y*r + i, x*r + j)."""
    rr, h, w = feats.shape
    r = math.isqrt(rr)
    return feats.reshape(r, r, h, w).transpose(2, 0, 3, 1).reshape(h * r, w * r)


def shuffle_ycbcr_rgb_float(feats, cbcr) -> np.ndarray:
    """The reference's arithmetic before rounding: float32 RGB in [0, 1] (NaN -> 0).
    16-bit pictures are rounded from it to 65535 levels (no fused 16-bit kernel)."""
    feats, cbcr = _f32("feats", feats), _f32("cbcr", cbcr)
    shuffle_shapes(feats.shape, cbcr.shape)
    y = _clamp01(pixel_shuffle(feats))
    cb, cr = cbcr[..., 0] - np.float32(0.5), cbcr[..., 1] - np.float32(0.5)
    rgb = np.stack([y + np.float32(CR_R) * cr,
                    y - np.float32(CB_G) * cb - np.float32(CR_G) * cr,
                    y + np.float32(CB_B) * cb], axis=-1)
    return _clamp01(rgb)


def shuffle_ycbcr_rgb(feats, cbcr) -> np.ndarray:
    """(r*r, h, w) luma sub-pixels + (h*r, w*r, 2) CbCr -> (h*r, w*r, 3) uint8 RGB."""
    return np.floor(shuffle_ycbcr_rgb_float(feats, cbcr) * np.float32(255) + np.float32(0.5)).astype(np.uint8)


def bicubic_resize(x, out_h: int, out_w: int, clamp: bool = False) -> np.ndarray:
    """(H, W, C) float32 -> (out_h, out_w, C) float32, PIL's BICUBIC definition."""
    x = _f32("x", x)
    h, w, c = resize_shapes(x.shape, out_h, out_w)
    fx, nx, wx = pil_coeffs(w, int(out_w))
    fy, ny, wy = pil_coeffs(h, int(out_h))
    taps_x, taps_y = np.arange(wx.shape[1]), np.arange(wy.shape[1])
    ix = np.minimum(fx[:, None] + taps_x, w - 1)
    iy = np.minimum(fy[:, None] + taps_y, h - 1)
    mx = (taps_x < nx[:, None])[None, :, :, None]  # only the taps PIL uses
    my = (taps_y < ny[:, None])[:, :, None, None]
    tmp = np.where(mx, x[:, ix, :] * wx[None, :, :, None], np.float32(0)).sum(axis=2, dtype=np.float32)
    if clamp:
        tmp = np.clip(tmp, 0, 1)
    out = np.where(my, tmp[iy] * wy[:, :, None, None], np.float32(0)).sum(axis=1, dtype=np.float32)
    if clamp:
        out = np.clip(out, 0, 1)
    return out.astype(np.float32)


def tile_split(x, tile: int, pad: int) -> np.ndarray:
    """(C, H, W) -> (n, C, th, tw) windows, row-major over the tile grid."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must be (C, H, W), got shape {x.shape}")
    th, tw, oy, ox = tile_grid(x.shape[1], x.shape[2], int(tile), int(pad))
    wins = [x[:, a:a + th, b:b + tw] for a in oy for b in ox]
    return np.stack(wins) if wins else np.zeros((0, x.shape[0], th, tw), x.dtype)


def tile_stitch(windows, h: int, w: int, tile: int, pad: int) -> np.ndarray:
    """(n, C, th, tw) windows -> (C, h, w), each pixel taken from the tile owning it."""
    windows = np.asarray(windows)
    th, tw, oy, ox = tile_grid(int(h), int(w), int(tile), int(pad))
    if windows.ndim != 4 or windows.shape[0] != len(oy) * len(ox) or windows.shape[2:] != (th, tw):
        raise ValueError(f"windows must be ({len(oy) * len(ox)}, C, {th}, {tw}) for a {h}x{w} image, got {windows.shape}")
    out = np.empty((windows.shape[1], int(h), int(w)), windows.dtype)
    for i, a in enumerate(oy):
        for j, b in enumerate(ox):
            y0, x0 = i * tile, j * tile
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            out[:, y0:y1, x0:x1] = windows[i * len(ox) + j, :, y0 - a:y1 - a, x0 - b:x1 - b]
    return out


# ---------------------------------------------------------------- numba-cpu

@njit(cache=True, inline="always")
def _clamp01_scalar(v):
    if v >= 0.0:
        return min(v, np.float32(1.0))
    return np.float32(0.0)


@njit(parallel=True, cache=True)
def _shuffle_cpu(feats, cbcr, r, out):
    hh, ww = out.shape[0], out.shape[1]
    for yy in prange(hh):
        y, i = yy // r, yy % r
        for xx in range(ww):
            x, j = xx // r, xx % r
            lum = _clamp01_scalar(feats[i * r + j, y, x])
            cb = cbcr[yy, xx, 0] - np.float32(0.5)
            cr = cbcr[yy, xx, 1] - np.float32(0.5)
            rr = lum + np.float32(CR_R) * cr
            gg = lum - np.float32(CB_G) * cb - np.float32(CR_G) * cr
            bb = lum + np.float32(CB_B) * cb
            out[yy, xx, 0] = np.uint8(math.floor(_clamp01_scalar(rr) * np.float32(255.0) + np.float32(0.5)))
            out[yy, xx, 1] = np.uint8(math.floor(_clamp01_scalar(gg) * np.float32(255.0) + np.float32(0.5)))
            out[yy, xx, 2] = np.uint8(math.floor(_clamp01_scalar(bb) * np.float32(255.0) + np.float32(0.5)))


def shuffle_ycbcr_rgb_cpu(feats, cbcr) -> np.ndarray:
    feats, cbcr = _f32("feats", feats), _f32("cbcr", cbcr)
    r, h, w = shuffle_shapes(feats.shape, cbcr.shape)
    out = np.empty((h * r, w * r, 3), np.uint8)
    if out.size:
        _shuffle_cpu(feats, cbcr, r, out)
    return out


@njit(parallel=True, cache=True)
def _resize_h_cpu(x, first, count, weights, clamp, out):
    """(H, W, C) -> planar (C, H, OW): one (channel, row) per parallel iteration."""
    h, c = x.shape[0], x.shape[2]
    ow = out.shape[2]
    for k in prange(c * h):
        ch, y = k // h, k % h
        for o in range(ow):
            f = first[o]
            acc = np.float32(0.0)
            for t in range(count[o]):
                acc += weights[o, t] * x[y, f + t, ch]
            if clamp and acc == acc:
                acc = min(max(acc, np.float32(0.0)), np.float32(1.0))
            out[ch, y, o] = acc


@njit(parallel=True, cache=True)
def _resize_v_cpu(tmp, first, count, weights, clamp, out):
    """planar (C, H, OW) -> (OH, OW, C); the tap loop runs over whole rows (vectorises)."""
    c, ow = tmp.shape[0], tmp.shape[2]
    oh = out.shape[0]
    for o in prange(oh):
        f = first[o]
        row = np.empty(ow, np.float32)
        for ch in range(c):
            row[:] = 0.0
            for t in range(count[o]):
                wt = weights[o, t]
                src = tmp[ch, f + t]
                for xx in range(ow):
                    row[xx] += wt * src[xx]
            for xx in range(ow):
                v = row[xx]
                if clamp and v == v:
                    v = min(max(v, np.float32(0.0)), np.float32(1.0))
                out[o, xx, ch] = v


def bicubic_resize_cpu(x, out_h: int, out_w: int, clamp: bool = False) -> np.ndarray:
    x = _f32("x", x)
    h, w, c = resize_shapes(x.shape, out_h, out_w)
    fx, nx, wx = pil_coeffs(w, int(out_w))
    fy, ny, wy = pil_coeffs(h, int(out_h))
    tmp = np.empty((c, h, int(out_w)), np.float32)
    _resize_h_cpu(x, fx, nx, wx, bool(clamp), tmp)
    out = np.empty((int(out_h), int(out_w), c), np.float32)
    _resize_v_cpu(tmp, fy, ny, wy, bool(clamp), out)
    return out


@njit(parallel=True, cache=True)
def _split_cpu(x, oy, ox, out):
    nx = ox.shape[0]
    th, tw = out.shape[2], out.shape[3]
    for t in prange(out.shape[0]):
        a, b = oy[t // nx], ox[t % nx]
        out[t] = x[:, a:a + th, b:b + tw]  # whole-row copies


def tile_split_cpu(x, tile: int, pad: int) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must be (C, H, W), got shape {x.shape}")
    x = np.ascontiguousarray(x)
    th, tw, oy, ox = tile_grid(x.shape[1], x.shape[2], int(tile), int(pad))
    out = np.empty((len(oy) * len(ox), x.shape[0], th, tw), x.dtype)
    if out.size:
        _split_cpu(x, oy, ox, out)
    return out


@njit(parallel=True, cache=True)
def _stitch_cpu(win, oy, ox, tile, out):
    h, w = out.shape[1], out.shape[2]
    ny, nx = oy.shape[0], ox.shape[0]
    for t in prange(ny * nx):
        i, j = t // nx, t % nx
        y0, x0 = i * tile, j * tile
        y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
        out[:, y0:y1, x0:x1] = win[t, :, y0 - oy[i]:y1 - oy[i], x0 - ox[j]:x1 - ox[j]]


def tile_stitch_cpu(windows, h: int, w: int, tile: int, pad: int) -> np.ndarray:
    windows = np.asarray(windows)
    th, tw, oy, ox = tile_grid(int(h), int(w), int(tile), int(pad))
    if windows.ndim != 4 or windows.shape[0] != len(oy) * len(ox) or windows.shape[2:] != (th, tw):
        raise ValueError(f"windows must be ({len(oy) * len(ox)}, C, {th}, {tw}) for a {h}x{w} image, got {windows.shape}")
    windows = np.ascontiguousarray(windows)
    out = np.empty((windows.shape[1], int(h), int(w)), windows.dtype)
    if out.size:
        _stitch_cpu(windows, oy, ox, int(tile), out)
    return out
