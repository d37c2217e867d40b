"""Resource estimate of ``superres upscale`` for ``gpuforge plan superres upscale``.

    gpuforge plan superres upscale --size 640x360 --scale 3 [--frames 1800] [--tile 256]
        [--tile-pad 8] [--precision fp32|fp16|bf16] [--gpu all]

FLOPs per LR pixel of ESPCN (features f1=64, f2=32, one channel, r = scale):
2 * (25 f1 + 9 f1 f2 + 9 f2 r^2 + 25 r^2) -- the last term is the bicubic-initialised
linear skip path; per output pixel divide by r^2 (x3: 45.7 kFLOP per LR pixel,
5.08 kFLOP per output pixel). Memory: the input, the two activation maps (f1 + f2
channels, at LR size or at one tile with its pad when tiled), the r^2 sub-pixel maps
and chroma at HR size, and the uint8 output.
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


def estimate(args: list[str]) -> Estimate:
    p = argparse.ArgumentParser(prog="gpuforge plan superres upscale", add_help=False)
    p.add_argument("--size", default="640x360", help="input WIDTHxHEIGHT")
    p.add_argument("--scale", type=int, default=3)
    p.add_argument("--frames", type=int, default=1)
    p.add_argument("--tile", type=int, default=None)
    p.add_argument("--tile-pad", type=int, default=8)
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    ns, extra = p.parse_known_args(args)
    if extra:
        raise UsageError(f"plan superres upscale: unknown arguments {' '.join(extra)}; use --size WxH --scale S "
                         "[--frames N] [--tile N] [--tile-pad N] [--precision fp32|fp16|bf16]")
    w, h = _size(ns.size)
    r = ns.scale
    if r < 2 or r > 8 or ns.frames < 1:
        raise UsageError("--scale must be 2..8 and --frames >= 1")
    elt = 4 if ns.precision == "fp32" else 2
    lr_px, hr_px = w * h, w * h * r * r
    if ns.tile:
        side_h, side_w = min(ns.tile + 2 * ns.tile_pad, h), min(ns.tile + 2 * ns.tile_pad, w)
        n_tiles = -(-h // ns.tile) * -(-w // ns.tile)
        work_px = n_tiles * side_h * side_w  # the overlap is computed twice
        act_px = side_h * side_w
    else:
        work_px, act_px = lr_px, lr_px
    flops = flops_per_lr_pixel(r) * work_px * ns.frames
    weights = 4 * (25 * F1 + F1 + 9 * F1 * F2 + F2 + 9 * F2 * r * r + r * r + 25 * r * r + r * r)
    activations = act_px * (F1 + F2 + 1 + r * r) * elt * 2  # + replicate-padded copies
    hr_buffers = hr_px * (4 + 2 * 4 + 3)  # sub-pixel maps (fp32), chroma (2 x fp32), uint8 RGB
    inputs = lr_px * (3 + 3 * 4)
    memory = weights + activations + hr_buffers + inputs
    # per frame: read LR, conv activations written+read once each, HR maps, output
    moved = ns.frames * (inputs + work_px * (F1 + F2 + r * r) * elt * 2 + hr_buffers * 2)
    notes = []
    if not ns.tile and activations > 2 * 2**30:
        notes.append("activations exceed 2 GiB: pass --tile 512 (tiled output equals untiled output)")
    return Estimate(
        what=f"ESPCN x{r} upscale of {ns.frames} frame(s) {w}x{h} -> {w * r}x{h * r}"
             + (f", tiles {ns.tile}+{ns.tile_pad}" if ns.tile else ""),
        memory_bytes=float(memory), flops=float(flops), bytes_moved=float(moved),
        dtype="fp32" if ns.precision == "fp32" else ns.precision,
        breakdown={"weights": float(weights), "activations": float(activations),
                   "hr_buffers": float(hr_buffers), "input": float(inputs)},
        notes=notes + [f"{flops_per_lr_pixel(r) / (r * r) / 1e3:.2f} kFLOP per output pixel"],
    )
