"""Resource estimate of ``superres upscale`` for ``gpuforge plan superres upscale``.

    gpuforge plan superres upscale --size 640x360 --scale 3 [--frames 1800] [--tile 256]
        [--tile-pad 8] [--precision fp32|fp16|bf16] [--channels 1-4] [--bits 8|16] [--gpu all]

FLOPs per LR pixel of ESPCN (features f1=64, f2=32, one channel, r = scale):
2 * (25 f1 + 9 f1 f2 + 9 f2 r^2 + 25 r^2) -- the last term is the bicubic-initialised
linear skip path; per output pixel divide by r^2 (x3: 45.7 kFLOP per LR pixel,
5.08 kFLOP per output pixel). Memory (:func:`upscale_memory`, the same model
``superres upscale`` checks before it decodes an image): the input and output pictures,
one band of rows (its YCbCr, r^2 sub-pixel maps, chroma at HR size) and one forward
pass's activations (the whole picture untiled, one batch of windows tiled).
"""
from __future__ import annotations

import argparse

from gpuforge.core.errors import UsageError
from gpuforge.hardware.estimates import Estimate

F1, F2 = 64, 32


def flops_per_lr_pixel(scale: int, features: tuple[int, int] = (F1, F2), skip: bool = True) -> float:
    f1, f2 = features
    return 2.0 * (25 * f1 + 9 * f1 * f2 + 9 * f2 * scale * scale + (25 * scale * scale if skip else 0))


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--size {text!r}: write WIDTHxHEIGHT of the input, e.g. 640x360") from None
    if w < 1 or h < 1:
        raise UsageError(f"--size {text!r}: width and height must be positive")
    return w, h


ACT_BYTES_PER_LR_PIXEL = 1000
"""Activation bytes per LR pixel of one forward pass (features 64 + 32, their tanh and
replicate-padded copies; 650-990 measured for fp32, the larger for small windows)."""


def upscale_memory(h: int, w: int, channels: int = 3, bits: int = 8, scale: int = 3,
                   out_hw: tuple[int, int] | None = None, tile: int | None = None, tile_pad: int = 8,
                   precision: str = "fp32", video: bool = False) -> dict[str, float]:
    """Peak bytes of ``superres upscale`` for one h x w picture (or video frame), by part;
    ``total`` is their sum. Mirrors :class:`pipeline.Upscaler`: the input and output
    pictures stay whole, everything else lives for one band of rows."""
    from .pipeline import BATCH_PIXELS, bands

    r, b = scale, (2 if bits == 16 else 1)
    t, plan = bands(h, w, tile, tile_pad)
    slab = max(hi - lo for _, _, lo, hi in plan)
    if t is None:
        act_px = h * w
    else:
        win = min(t + 2 * tile_pad, slab) * min(t + 2 * tile_pad, w)
        per_slab = -(-slab // t) * -(-w // t)
        act_px = max(1, min(BATCH_PIXELS // win, per_slab)) * win
    elt = 4 if precision == "fp32" else 2
    band_lr = slab * w
    band = band_lr * (3 * 4  # YCbCr
                      + 2 * 4 * r * r * (1.3 if t else 1.0)  # windows' sub-pixel maps + the stitched ones
                      + 2 * 4 * r * r + 2 * 4 * r  # chroma at HR, the bicubic's horizontal pass
                      + 4 * r * r)  # the fused kernel's output rows / float RGB of 16-bit
    parts = {
        "input": float(h * w * channels * b),
        "output": float(h * w * r * r * channels * b),
        "band": float(band),
        "activations": float(act_px * ACT_BYTES_PER_LR_PIXEL * elt / 4),
    }
    oh, ow = out_hw or (h * r, w * r)
    if (oh, ow) != (h * r, w * r):  # --outscale: float copies of the network output and the result
        parts["resize"] = float(h * r * w * r * channels * 4 + h * r * ow * channels * 4 + oh * ow * channels * (4 + b))
    if video:  # the encoder's frames in flight (x264 lookahead + references, yuv420p)
        parts["encoder"] = float(oh * ow * 1.5 * 12)
    else:  # the writer's copy (PIL keeps RGB and LA at 4 bytes a pixel; FFmpeg a frame + the file)
        parts["writer"] = float(oh * ow * (4 if b == 1 and channels != 1 else channels * b * 2))
    parts["total"] = float(sum(parts.values()))
    return parts


def work_pixels(h: int, w: int, tile: int | None, tile_pad: int) -> int:
    """LR pixels the network computes (the windows' overlap counted), as :class:`pipeline.Upscaler` runs."""
    from .kernels import tile_grid
    from .pipeline import bands

    t, plan = bands(h, w, tile, tile_pad)
    if t is None:
        return h * w
    total = 0
    for _, _, lo, hi in plan:
        th, tw, oy, ox = tile_grid(hi - lo, w, t, tile_pad)
        total += len(oy) * len(ox) * th * tw
    return total


def estimate(args: list[str]) -> Estimate:
    p = argparse.ArgumentParser(prog="gpuforge plan superres upscale", add_help=False)
    # strings here, checked below: argparse's own errors print a usage block, not one line
    for flag, default in [("--size", "640x360"), ("--scale", "3"), ("--frames", "1"), ("--tile", None),
                          ("--tile-pad", "8"), ("--precision", "fp32"), ("--channels", "3"), ("--bits", "8")]:
        p.add_argument(flag, default=default)
    ns, extra = p.parse_known_args(args)
    if extra:
        raise UsageError(f"plan superres upscale: unknown arguments {' '.join(extra)}; use --size WxH --scale S "
                         "[--frames N] [--tile N] [--tile-pad N] [--precision fp32|fp16|bf16] [--channels 1-4] [--bits 8|16]")
    for name in ("scale", "frames", "tile", "tile_pad", "channels", "bits"):
        v = getattr(ns, name)
        if v is not None:
            try:
                setattr(ns, name, int(v))
            except ValueError:
                raise UsageError(f"--{name.replace('_', '-')} {v!r}: give a whole number") from None
    if ns.precision not in ("fp32", "fp16", "bf16"):
        raise UsageError(f"--precision {ns.precision!r}: use fp32, fp16 or bf16")
    if ns.channels not in (1, 2, 3, 4) or ns.bits not in (8, 16):
        raise UsageError("--channels is 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA); --bits 8 or 16")
    w, h = _size(ns.size)
    r = ns.scale
    if r < 2 or r > 8:
        raise UsageError(f"--scale {r}: use 2 to 8")
    if ns.frames < 1:
        raise UsageError(f"--frames {ns.frames}: use at least 1")
    if ns.tile is not None and (ns.tile < 0 or 0 < ns.tile < 8):
        raise UsageError(f"--tile {ns.tile}: use 0 (never tile) or at least 8")
    if ns.tile_pad < 4:
        raise UsageError(f"--tile-pad {ns.tile_pad}: use at least 4 (the network's receptive radius)")
    elt = 4 if ns.precision == "fp32" else 2
    work_px = work_pixels(h, w, ns.tile, ns.tile_pad)
    flops = flops_per_lr_pixel(r) * work_px * ns.frames
    weights = 4 * (25 * F1 + F1 + 9 * F1 * F2 + F2 + 9 * F2 * r * r + r * r + 25 * r * r + r * r)
    parts = upscale_memory(h, w, ns.channels, ns.bits, r, None, ns.tile, ns.tile_pad, ns.precision, video=ns.frames > 1)
    memory = weights + parts.pop("total")
    # per frame: read LR, conv activations written + read once each, HR maps, output
    hr_px = w * h * r * r
    moved = ns.frames * (w * h * 3 + work_px * (F1 + F2 + r * r) * elt * 2 + hr_px * (4 + 2 * 4 + 3) * 2)
    from .pipeline import tile_for

    t = tile_for(h, w, ns.tile)
    tiling = "no tiling" if t is None else f"tiles {t}+{ns.tile_pad}" + ("" if ns.tile else " (automatic)")
    return Estimate(
        what=f"ESPCN x{r} upscale of {ns.frames} frame(s) {w}x{h} -> {w * r}x{h * r}, {tiling}",
        memory_bytes=float(memory), flops=float(flops), bytes_moved=float(moved),
        dtype="fp32" if ns.precision == "fp32" else ns.precision,
        breakdown={"weights": float(weights), **parts},
        notes=[f"{flops_per_lr_pixel(r) / (r * r) / 1e3:.2f} kFLOP per output pixel",
               "memory: input and output pictures whole, one band of rows and one batch of windows besides"],
    )
