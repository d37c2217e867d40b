"""Upscaling one picture (an image or a video frame) with ESPCN, a band of rows at a time.

A picture is an (h, w, C) uint8 or uint16 array: C = 1 gray, 2 gray + alpha, 3 RGB,
4 RGBA. The output has the same channels and the same depth.

Y-models (the built-ins): RGB -> full-range YCbCr; the network runs on Y (in tiles:
``superres.tile_split`` -> convolutions -> ``superres.tile_stitch`` of the r*r sub-pixel
maps at low resolution); Cb and Cr are upscaled with ``superres.bicubic_resize`` (PIL's
bicubic); ``superres.shuffle_ycbcr_rgb`` then shuffles, clamps and converts to RGB uint8
in one pass. 16-bit RGB takes the same arithmetic (the kernel's NumPy reference before
its rounding) rounded to 65535 levels. A gray picture is its own Y (Cb = Cr = 0.5 gives
R = G = B = Y), so only its plane goes through the network and the shuffle. Alpha is
upscaled with ``superres.bicubic_resize`` (``alpha="bicubic"``) or run through the
network like a gray plane (``alpha="espcn"``, what Real-ESRGAN's ``realesrgan`` alpha
upsampler does with its network).
RGB-models: the network runs on R, G, B; pixel shuffle and clamp in torch.

Memory is bounded by the tile, not by the picture: a tiled picture is processed in
bands of LR rows, each band a slab with ``tile_pad`` rows of context above and below
(cut off afterwards), run through the network in windows of at most
(tile + 2 tile_pad)^2 LR pixels, at most ``batch_pixels`` LR pixels per forward pass;
the band's HR rows are written into the output before the next band starts. What stays
is the input and the output picture. Without ``tile``, pictures above
``AUTO_TILE_PIXELS`` LR pixels are tiled with ``AUTO_TILE`` (``tile=0`` never tiles).

Tiled and banded output equals untiled output when ``tile_pad`` >= the network's
receptive radius (4 LR pixels): each core pixel is computed from exactly the pixels the
whole-image run uses, and windows at the border end at the image border, where the
convolutions' replicate padding applies in both runs; the bicubic chroma needs 2 rows of
context, which the band has.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gpuforge.core.kernels import call

from .espcn import ESPCN, RECEPTIVE_RADIUS

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
AUTO_TILE = 512
"""Largest tile (LR pixels) used when none is given and the picture is large (the tile
is fitted to split the width evenly): one window of 512 x 528 holds about the
activations of an untiled AUTO_TILE_PIXELS picture, and the recomputed overlap is
~7% (13% with 256 square tiles)."""
AUTO_TILE_PIXELS = 512 * 512
"""LR pixels above which a picture is tiled automatically: the untiled network's
activations are ~0.65-1 KB per LR pixel (measured), 0.25 GB at this size."""
BATCH_PIXELS = 512 * 512
"""LR pixels of windows per forward pass (the same activation bound; at least one window)."""
ALPHA_UPSAMPLERS = ("bicubic", "espcn")


def ycbcr_torch(rgb: torch.Tensor, peak: float = 255.0) -> torch.Tensor:
    """(h, w, 3) integer tensor -> float32 full-range BT.601 YCbCr (same as images.rgb_to_ycbcr)."""
    from .images import RGB_TO_YCBCR

    m = torch.tensor(RGB_TO_YCBCR, dtype=torch.float32, device=rgb.device)
    out = (rgb.float() / peak) @ m.T
    out[..., 1:] += 0.5
    return out


def _clamp01(v: np.ndarray) -> np.ndarray:
    """Clamp to [0, 1] with NaN -> 0, as the fused kernel does."""
    return np.clip(np.nan_to_num(v, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def _levels(v: np.ndarray, dtype) -> np.ndarray:
    """[0, 1] floats -> uint8/uint16, rounded floor(peak v + 0.5) like the fused kernel."""
    peak = np.float32(np.iinfo(dtype).max)
    return np.floor(_clamp01(v) * peak + np.float32(0.5)).astype(dtype)


def tile_for(h: int, w: int, tile: int | None) -> int | None:
    """The tile an h x w picture runs with (None: one forward pass over the whole picture).
    ``tile`` None: automatic; 0: never."""
    if tile == 0:
        return None
    t = tile
    if t is None and h * w > AUTO_TILE_PIXELS:
        # the widest tile up to AUTO_TILE that splits the width evenly: no window of
        # mostly shifted-in overlap at the right border
        t = -(-w // -(-w // AUTO_TILE)) if w > AUTO_TILE else AUTO_TILE
    if t is None or (h <= t and w <= t):
        return None
    return t


def bands(h: int, w: int, tile: int | None, tile_pad: int) -> tuple[int | None, list[tuple[int, int, int, int]]]:
    """(tile, [(core start, core end, slab start, slab end)]) in LR rows. An interior slab
    is one tile tall (one row of windows) when the tile exceeds 4 pads, else the fewest
    whole tiles whose core is positive: no window row is computed twice."""
    t = tile_for(h, w, tile)
    if t is None:
        return None, [(0, h, 0, h)]
    c = tile_pad
    m = 1 if t > 4 * c else 1 + -(-2 * c // t)
    core = m * t - 2 * c
    out, y = [], 0
    while y < h:
        y1 = min(y + core, h)
        out.append((y, y1, max(0, y - c), min(h, y1 + c)))
        y = y1
    return t, out


@dataclass
class Upscaler:
    model: ESPCN
    tile: int | None = None
    """LR tile size; None: automatic (tiled above AUTO_TILE_PIXELS); 0: never tiled."""
    tile_pad: int = 8
    precision: str = "fp32"
    batch_pixels: int = BATCH_PIXELS
    device: torch.device | str = "cpu"
    alpha: str = "bicubic"

    def __post_init__(self):
        self.dtype = DTYPES[self.precision]
        self.device = torch.device(self.device)
        # channels_last: oneDNN's direct convolutions are faster in NHWC on CPU
        self.model = self.model.eval().to(self.device, self.dtype).to(memory_format=torch.channels_last)
        self.scale = self.model.scale
        if self.alpha not in ALPHA_UPSAMPLERS:
            raise ValueError(f"alpha upsampler must be one of {ALPHA_UPSAMPLERS}, not {self.alpha!r}")

    # -- geometry ---------------------------------------------------------------------
    def tile_for(self, h: int, w: int) -> int | None:
        return tile_for(h, w, self.tile)

    def bands(self, h: int, w: int) -> tuple[int | None, list[tuple[int, int, int, int]]]:
        return bands(h, w, self.tile, self.tile_pad)

    # -- the network --------------------------------------------------------------------
    def _run(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model.features_forward(x).float().contiguous()

    @staticmethod
    def _kernel_arg(t: torch.Tensor):
        """CUDA tensors go to the kernels as they are (numba-cuda); CPU ones as NumPy."""
        return t if t.is_cuda else t.numpy()

    @staticmethod
    def _tensor(a) -> torch.Tensor:
        return a if isinstance(a, torch.Tensor) else torch.as_tensor(a)

    @staticmethod
    def _host(a) -> np.ndarray:
        if isinstance(a, np.ndarray):
            return a
        if isinstance(a, torch.Tensor):
            return a.cpu().numpy()
        return a.copy_to_host()  # a numba device array

    @torch.inference_mode()
    def _features(self, planes: torch.Tensor, tile: int | None) -> torch.Tensor:
        """(C, h, w) float32 -> (C*r*r, h, w) float32 sub-pixel maps (tiled if ``tile``)."""
        c, h, w = planes.shape
        if tile is None or (h <= tile and w <= tile):
            return self._run(planes[None])[0]
        windows = self._tensor(call("superres.tile_split", self._kernel_arg(planes), tile, self.tile_pad))
        per = max(1, self.batch_pixels // (windows.shape[2] * windows.shape[3]))
        feats = torch.cat([self._run(windows[i:i + per]) for i in range(0, windows.shape[0], per)])
        del windows
        return self._tensor(call("superres.tile_stitch", self._kernel_arg(feats), h, w, tile, self.tile_pad))

    def _plane_features(self, plane: np.ndarray, peak: float, tile, a: int, b: int) -> torch.Tensor:
        """One (S, w) integer plane -> its (r*r, b - a, w) sub-pixel maps (core rows a:b)."""
        x = torch.from_numpy(plane.astype(np.float32) / np.float32(peak)).to(self.device)
        if self.model.channels == 3:  # an RGB model sees a gray plane as R = G = B
            x = x[None].expand(3, -1, -1).contiguous()
            feats = self._features(x, tile)[:, a:b]
            r2 = self.scale * self.scale  # back to one plane with BT.601 luma weights
            return 0.299 * feats[:r2] + 0.587 * feats[r2:2 * r2] + 0.114 * feats[2 * r2:]
        return self._features(x[None], tile)[:, a:b]

    # -- one band -------------------------------------------------------------------------
    def _color(self, slab: np.ndarray, tile, a: int, b: int) -> np.ndarray:
        """(S, w, 1 or 3) -> the HR rows of the core a:b, same channels and dtype."""
        from .images import rgb_to_ycbcr
        from .kernels import pixel_shuffle, shuffle_ycbcr_rgb_float

        r, dtype = self.scale, slab.dtype
        peak = float(np.iinfo(dtype).max)
        s, w = slab.shape[:2]
        if slab.shape[2] == 1:
            feats = self._plane_features(slab[..., 0], peak, tile, a, b)
            return _levels(pixel_shuffle(self._host(feats)), dtype)[..., None]
        if self.model.channels == 3:
            x = torch.from_numpy((slab.astype(np.float32) / np.float32(peak)).transpose(2, 0, 1).copy())
            feats = self._features(x.to(self.device), tile)[None, :, a:b]
            out = torch.nn.functional.pixel_shuffle(feats, r)[0]
            return _levels(self._host(out).transpose(1, 2, 0), dtype)
        if self.device.type == "cuda":
            ycc = ycbcr_torch(torch.from_numpy(np.ascontiguousarray(slab)).to(self.device), peak)
        else:
            ycc = torch.from_numpy(rgb_to_ycbcr(slab, peak))
        feats = self._features(ycc[..., 0].contiguous()[None], tile)[:, a:b].contiguous()
        cbcr = call("superres.bicubic_resize", self._kernel_arg(ycc[..., 1:].contiguous()), s * r, w * r, clamp=True)
        del ycc
        cbcr = cbcr[a * r:b * r]
        if dtype == np.uint8:
            out = call("superres.shuffle_ycbcr_rgb", self._kernel_arg(feats), cbcr)
            return self._host(out)
        return _levels(shuffle_ycbcr_rgb_float(self._host(feats), self._host(cbcr)), dtype)

    def _alpha(self, plane: np.ndarray, tile, a: int, b: int) -> np.ndarray:
        """(S, w) alpha -> its HR rows of the core a:b."""
        from .kernels import pixel_shuffle

        r, dtype = self.scale, plane.dtype
        peak = float(np.iinfo(dtype).max)
        if self.alpha == "espcn":
            feats = self._plane_features(plane, peak, tile, a, b)
            return _levels(pixel_shuffle(self._host(feats)), dtype)
        s, w = plane.shape
        x = (plane.astype(np.float32) / np.float32(peak))[..., None]
        up = self._host(call("superres.bicubic_resize", x, s * r, w * r, clamp=True))
        return _levels(up[a * r:b * r, :, 0], dtype)

    @torch.inference_mode()
    def __call__(self, pic: np.ndarray) -> np.ndarray:
        """(h, w, C) or (h, w) uint8/uint16 -> (h*r, w*r, C) or (h*r, w*r), same dtype."""
        pic = np.asarray(pic)
        flat = pic.ndim == 2
        if flat:
            pic = pic[..., None]
        if pic.dtype not in (np.uint8, np.uint16) or pic.ndim != 3 or pic.shape[2] not in (1, 2, 3, 4):
            raise TypeError(f"a picture is (h, w, 1-4) uint8 or uint16, got {pic.shape} {pic.dtype}")
        r = self.scale
        h, w, c = pic.shape
        color = 3 if c >= 3 else 1
        out = np.empty((h * r, w * r, c), pic.dtype)
        tile, bands = self.bands(h, w)
        for y0, y1, lo, hi in bands:
            slab = pic[lo:hi]
            a, b = y0 - lo, y1 - lo
            out[y0 * r:y1 * r, :, :color] = self._color(slab[..., :color], tile, a, b)
            if c in (2, 4):
                out[y0 * r:y1 * r, :, c - 1] = self._alpha(slab[..., c - 1], tile, a, b)
        return out[..., 0] if flat else out


def check_tile_args(tile: int | None, tile_pad: int) -> None:
    from gpuforge.core.errors import UsageError

    if tile is not None and 0 < tile < 8:
        raise UsageError(f"--tile {tile}: use at least 8 LR pixels (0 never tiles; leave it out for automatic tiling)")
    if tile_pad < RECEPTIVE_RADIUS:
        raise UsageError(f"--tile-pad {tile_pad}: must be >= {RECEPTIVE_RADIUS} (the network's receptive radius) for seamless tiles")


def resize_picture(pic: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Any picture to (out_h, out_w), PIL's bicubic (``superres.bicubic_resize``,
    antialiased when shrinking), same channels and dtype: ``--outscale``'s last step."""
    if pic.shape[:2] == (out_h, out_w):
        return pic
    peak = np.float32(np.iinfo(pic.dtype).max)
    x = pic.astype(np.float32) / peak
    up = call("superres.bicubic_resize", x if x.ndim == 3 else x[..., None], out_h, out_w, clamp=True)
    up = up if isinstance(up, np.ndarray) else Upscaler._host(up)
    return _levels(up if pic.ndim == 3 else up[..., 0], pic.dtype)


def bicubic_upscale(rgb: np.ndarray, scale: int) -> np.ndarray:
    """The baseline: PIL's bicubic of the RGB uint8 image."""
    from .images import pil_resize

    return pil_resize(rgb, (rgb.shape[0] * scale, rgb.shape[1] * scale))
