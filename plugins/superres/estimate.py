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


ACT_BYTES_PER_LR_PIXEL = 1000
"""Activation bytes per LR pixel of one forward pass (features 64 + 32, their tanh and
replicate-padded copies; 650-990 measured for fp32, the larger for small windows)."""


def upscale_memory(h: int, w: int, channels: int = 3, bits: int = 8, scale: int = 3,
                   out_hw: tuple[int, int] | None = None, tile: int | None = None, tile_pad: int = 8,
                   precision: str = "fp32", video: bool = False) -> dict[str, float]:
    """Peak bytes of ``superres upscale`` for one h x w picture (or video frame), by part;
    ``total`` is their sum. Mirrors :class:`pipeline.Upscaler`: the input and output
    pictures stay whole, everything else lives for one band of rows."""
    from .pipeline import AUTO_TILE, AUTO_TILE_PIXELS, BATCH_PIXELS

    r, b = scale, (2 if bits == 16 else 1)
    if tile == 0 or (tile is None and h * w <= AUTO_TILE_PIXELS):
        t = None
    else:
        t = tile or AUTO_TILE
        if h <= t and w <= t:
            t = None
    if t is None:
        slab, act_px = h, h * w
    else:
        core = (1 + -(-2 * tile_pad // t)) * t - 2 * tile_pad
        slab = min(h, core + 2 * tile_pad)
        win = min(t + 2 * tile_pad, h) * min(t + 2 * tile_pad, w)
        act_px = max(win, min(BATCH_PIXELS // win, -(-slab // t) * -(-w // t)) * win)
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
        parts["encoder"] = float(oh * ow * 1.5 * 24)
    else:  # the writer's copy (PIL keeps RGB and LA at 4 bytes a pixel; FFmpeg a frame + the file)
        parts["writer"] = float(oh * ow * (4 if b == 1 and channels != 1 else channels * b * 2))
    parts["total"] = float(sum(parts.values()))
    return parts


def _proc_kb(path: str, key: str) -> int | None:
    """A ``Key:  N kB`` line of a /proc file, in bytes."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory() -> int | None:
    """Bytes this process may still allocate: the kernel's MemAvailable, lowered by an
    address-space limit (``ulimit -v``) when one is set. None when neither is known."""
    import resource

    avail = _proc_kb("/proc/meminfo", "MemAvailable")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        left = max(soft - (_proc_kb("/proc/self/status", "VmSize") or 0), 0)
        avail = left if avail is None else min(avail, left)
    return avail


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
