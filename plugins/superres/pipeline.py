"""Upscaling one RGB uint8 image (or video frame) with ESPCN.

Y-models (the built-ins): RGB -> full-range YCbCr; the network runs on Y (optionally
in tiles: ``superres.tile_split`` -> convolutions -> ``superres.tile_stitch`` of the
r*r sub-pixel maps at low resolution); Cb and Cr are upscaled with
``superres.bicubic_resize`` (PIL's bicubic); ``superres.shuffle_ycbcr_rgb`` then
shuffles, clamps and converts to RGB uint8 in one pass.
RGB-models: the network runs on R, G, B; pixel shuffle and clamp in torch.

Tiled output equals untiled output when ``tile_pad`` >= the network's receptive radius
(4 LR pixels): each window's core is computed from exactly the pixels the whole-image
run uses, and windows at the border end at the image border, where the convolutions'
replicate padding applies in both runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gpuforge.core.kernels import call

from .espcn import ESPCN, RECEPTIVE_RADIUS

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def ycbcr_torch(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 (h, w, 3) tensor -> float32 full-range BT.601 YCbCr (same as images.rgb_to_ycbcr)."""
    from .images import RGB_TO_YCBCR

    m = torch.tensor(RGB_TO_YCBCR, dtype=torch.float32, device=rgb.device)
    out = (rgb.float() / 255.0) @ m.T
    out[..., 1:] += 0.5
    return out


@dataclass
class Upscaler:
    model: ESPCN
    tile: int | None = None
    tile_pad: int = 8
    precision: str = "fp32"
    batch_windows: int = 16
    device: torch.device | str = "cpu"

    def __post_init__(self):
        self.dtype = DTYPES[self.precision]
        self.device = torch.device(self.device)
        # channels_last: oneDNN's direct convolutions are faster in NHWC on CPU
        self.model = self.model.eval().to(self.device, self.dtype).to(memory_format=torch.channels_last)
        self.scale = self.model.scale

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model.features_forward(x).float().contiguous()

    @staticmethod
    def _kernel_arg(t: torch.Tensor):
        """CUDA tensors go to the kernels as they are (numba-cuda); CPU ones as NumPy."""
        return t if t.is_cuda else t.numpy()

    @staticmethod
    def _tensor(a) -> torch.Tensor:
        return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))

    @torch.inference_mode()
    def _features(self, planes: torch.Tensor) -> torch.Tensor:
        """(C, h, w) float32 -> (C*r*r, h, w) float32 sub-pixel maps (tiled if asked)."""
        c, h, w = planes.shape
        if not self.tile or (h <= self.tile and w <= self.tile):
            return self._run(planes[None])[0]
        windows = self._tensor(call("superres.tile_split", self._kernel_arg(planes), self.tile, self.tile_pad))
        outs = [self._run(windows[i:i + self.batch_windows]) for i in range(0, windows.shape[0], self.batch_windows)]
        feats = torch.cat(outs)
        return self._tensor(call("superres.tile_stitch", self._kernel_arg(feats), h, w, self.tile, self.tile_pad))

    @torch.inference_mode()
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(h, w, 3) uint8 -> (h*r, w*r, 3) uint8."""
        from .images import rgb_to_ycbcr

        r = self.scale
        h, w = rgb.shape[:2]
        cuda = self.device.type == "cuda"
        if self.model.channels == 1:
            if cuda:
                ycc = ycbcr_torch(torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device))
            else:
                ycc = torch.from_numpy(rgb_to_ycbcr(rgb))
            feats = self._features(ycc[..., 0].contiguous()[None])
            cbcr = call("superres.bicubic_resize", self._kernel_arg(ycc[..., 1:].contiguous()), h * r, w * r, clamp=True)
            out = call("superres.shuffle_ycbcr_rgb", self._kernel_arg(feats), cbcr)
            return out if isinstance(out, np.ndarray) else self._tensor(out).cpu().numpy()
        planes = torch.from_numpy((rgb.astype(np.float32) / 255.0).transpose(2, 0, 1).copy()).to(self.device)
        feats = self._features(planes)[None]
        out = torch.nn.functional.pixel_shuffle(feats, r)[0].clamp_(0, 1).mul_(255).add_(0.5).floor_()
        return out.to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()


def check_tile_args(tile: int | None, tile_pad: int) -> None:
    from gpuforge.core.errors import UsageError

    if tile is not None and tile < 8:
        raise UsageError(f"--tile {tile}: use at least 8 LR pixels (or leave it out for no tiling)")
    if tile_pad < RECEPTIVE_RADIUS:
        raise UsageError(f"--tile-pad {tile_pad}: must be >= {RECEPTIVE_RADIUS} (the network's receptive radius) for seamless tiles")


def bicubic_upscale(rgb: np.ndarray, scale: int) -> np.ndarray:
    """The baseline: PIL's bicubic of the RGB uint8 image."""
    from .images import pil_resize

    return pil_resize(rgb, (rgb.shape[0] * scale, rgb.shape[1] * scale))
