"""Benchmarks of the superres plugin (``gpuforge bench superres``, ``gpuforge superres bench``).

- Whole frames, 640x360 -> 1920x1080 (x3): our path (torch convolutions + numba
  bicubic chroma + fused shuffle/clamp/YCbCr->RGB kernel) against a plain torch module
  with the same weights (F.pixel_shuffle, F.interpolate bicubic chroma, torch colour
  maths), as a user would write it.
- The fused shuffle kernel against torch's pixel_shuffle + clamp + conversion.
- Bicubic resize (numba) against the NumPy reference and PIL; tile split/stitch.
"""
from __future__ import annotations

import numpy as np
import torch

from gpuforge.core.bench import BenchContext, best_of, row
from gpuforge.core.kernels import get_impl

from .espcn import ESPCN, builtin_path, load_model
from .kernels import CB_B, CB_G, CR_G, CR_R


class PlainTorchESPCN(torch.nn.Module):
    """What a user would write with torch alone: the same network and colour handling."""

    def __init__(self, net: ESPCN):
        super().__init__()
        self.net = net.eval()
        self.r = net.scale
        m = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
        self.register_buffer("m", m)

    @torch.no_grad()
    def forward(self, rgb: torch.Tensor) -> torch.Tensor:  # (h, w, 3) uint8 -> (h*r, w*r, 3) uint8
        x = rgb.float().div_(255)
        ycc = (x @ self.m.T).permute(2, 0, 1)[None]  # (1, 3, h, w)
        y = torch.nn.functional.pixel_shuffle(self.net.features_forward(ycc[:, :1]), self.r).clamp_(0, 1)
        cbcr = torch.nn.functional.interpolate(ycc[:, 1:], scale_factor=self.r, mode="bicubic", align_corners=False)
        cb, cr = cbcr[:, :1], cbcr[:, 1:]
        rgb_out = torch.cat([y + CR_R * cr, y - CB_G * cb - CR_G * cr, y + CB_B * cb], 1)
        return rgb_out.clamp_(0, 1).mul_(255).add_(0.5).floor_().to(torch.uint8)[0].permute(1, 2, 0).contiguous()


def _model(scale: int = 3) -> ESPCN:
    path = builtin_path(scale)
    return load_model(path)[0] if path.exists() else ESPCN(scale).eval()


def frame_rows(ctx: BenchContext, h: int = 360, w: int = 640, scale: int = 3) -> list[dict]:
    from .pipeline import Upscaler

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    frame = np.ascontiguousarray(np.repeat(np.repeat(frame[::8, ::8], 8, 0), 8, 1)[:h, :w])  # blocky, image-like
    from gpuforge.core.run import resolve_device

    try:
        device = resolve_device(ctx.device).torch
    except Exception:  # an unusable --device: measure on the CPU
        device = torch.device("cpu")
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    net = _model(scale)
    ours = Upscaler(net, device=device)
    plain = PlainTorchESPCN(_model(scale)).to(device)
    t_frame = torch.from_numpy(frame).to(device)
    repeat = 2 if ctx.quick else 5
    # interleave the two so load changes on a shared machine hit both alike
    t_plain = t_ours = float("inf")
    for _ in range(repeat):
        # both return the frame in host memory, as a video pipeline needs it
        t_plain = min(t_plain, best_of(lambda: plain(t_frame).cpu(), repeat=1, sync=sync,
                                       warmup=1 if t_plain == float("inf") else 0))
        t_ours = min(t_ours, best_of(lambda: ours(frame), repeat=1, sync=sync, warmup=1 if t_ours == float("inf") else 0))
    f1, f2 = net.features
    macs_lr = 25 * f1 + 9 * f1 * f2 + 9 * f2 * scale * scale + (25 * scale * scale if net.skip else 0)
    flops = 2.0 * macs_lr * h * w
    label = f"ESPCN x{scale} frame {w}x{h} -> {w * scale}x{h * scale} ({device.type})"
    return [
        row(label, "plain torch module", t_plain, flops=flops, ctx=ctx, fps=1 / t_plain),
        row(label, "gpuforge (torch convs + numba kernels)", t_ours, baseline="plain torch module",
            baseline_seconds=t_plain, flops=flops, ctx=ctx, fps=1 / t_ours),
    ]


def tiling_rows(ctx: BenchContext, scale: int = 2) -> list[dict]:
    """The price of bounded memory: a 1920x1080 x2 picture (960x540 with --quick) with the
    automatic tiles against one forward pass over the whole picture, interleaved best-of-3
    in this process (the memory side is in the 'scale' benchmark)."""
    from .estimate import upscale_memory, work_pixels
    from .pipeline import Upscaler
    from .scalebench import _photo

    w, h = (960, 540) if ctx.quick else (1920, 1080)
    pic = _photo(w, h)
    net = _model(scale)
    ups = {"whole picture (--tile 0)": Upscaler(net, tile=0), "automatic tiles (bands)": Upscaler(net)}
    best = {k: float("inf") for k in ups}
    for u in ups.values():
        u(pic[:64, :64])  # kernels compiled / loaded
    for _ in range(3):
        for k, u in ups.items():
            best[k] = min(best[k], best_of(lambda: u(pic), repeat=1, warmup=0))
    label = f"ESPCN x{scale} picture {w}x{h} -> {w * scale}x{h * scale}, tiled vs whole"
    base = "whole picture (--tile 0)"
    mem = {k: upscale_memory(h, w, 3, 8, scale, tile=u.tile, tile_pad=u.tile_pad)["activations"] / 2**20
           for k, u in ups.items()}
    return [
        row(label, base, best[base], work_pixels=h * w, activations_mb_estimated=round(mem[base])),
        row(label, "automatic tiles (bands)", best["automatic tiles (bands)"], baseline=base,
            baseline_seconds=best[base], work_pixels=work_pixels(h, w, None, 8),
            activations_mb_estimated=round(mem["automatic tiles (bands)"])),
    ]


def shuffle_rows(ctx: BenchContext, h: int = 360, w: int = 640, r: int = 3) -> list[dict]:
    rng = np.random.default_rng(1)
    feats = rng.uniform(-0.1, 1.1, (r * r, h, w)).astype(np.float32)
    cbcr = rng.uniform(0, 1, (h * r, w * r, 2)).astype(np.float32)
    tf, tc = torch.from_numpy(feats), torch.from_numpy(cbcr)

    def torch_path():
        y = torch.nn.functional.pixel_shuffle(tf[None], r)[0, 0].clamp(0, 1)
        cb, cr = tc[..., 0] - 0.5, tc[..., 1] - 0.5
        out = torch.stack([y + CR_R * cr, y - CB_G * cb - CR_G * cr, y + CB_B * cb], -1)
        return out.clamp_(0, 1).mul_(255).add_(0.5).floor_().to(torch.uint8)

    cpu = get_impl("superres.shuffle_ycbcr_rgb", "numba-cpu")
    ref = get_impl("superres.shuffle_ycbcr_rgb", "reference")
    reps = ctx.repeat
    t_torch = best_of(torch_path, repeat=reps)
    t_ref = best_of(lambda: ref(feats, cbcr), repeat=max(1, reps // 2))
    t_cpu = best_of(lambda: cpu(feats, cbcr), repeat=reps)
    moved = feats.nbytes + cbcr.nbytes + h * r * w * r * 3
    label = f"pixel shuffle + clamp + YCbCr->RGB, {w * r}x{h * r}"
    return [
        row(label, "torch pixel_shuffle + ops", t_torch, bytes_moved=moved, ctx=ctx),
        row(label, "reference (numpy)", t_ref, baseline="torch pixel_shuffle + ops", baseline_seconds=t_torch,
            bytes_moved=moved, ctx=ctx),
        row(label, "numba-cpu fused", t_cpu, baseline="torch pixel_shuffle + ops", baseline_seconds=t_torch,
            bytes_moved=moved, ctx=ctx),
    ]


def resize_rows(ctx: BenchContext, h: int = 360, w: int = 640, r: int = 3) -> list[dict]:
    from PIL import Image

    rng = np.random.default_rng(2)
    x8 = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    cbcr = (x8[..., 1:].astype(np.float32) / 255)
    pil_img = Image.fromarray(x8)
    ref = get_impl("superres.bicubic_resize", "reference")
    cpu = get_impl("superres.bicubic_resize", "numba-cpu")
    reps = ctx.repeat
    t_pil = best_of(lambda: pil_img.resize((w * r, h * r), Image.BICUBIC), repeat=reps)
    t_ref = best_of(lambda: ref(cbcr, h * r, w * r, True), repeat=1)
    t_cpu = best_of(lambda: cpu(cbcr, h * r, w * r, True), repeat=reps)
    label = f"bicubic x{r} of 2 chroma planes {w}x{h} (PIL: 3 uint8 planes)"
    moved = cbcr.nbytes * (1 + r * r)
    return [
        row(label, "PIL Image.resize BICUBIC (uint8 RGB)", t_pil),
        row(label, "reference (numpy)", t_ref, bytes_moved=moved, ctx=ctx),
        row(label, "numba-cpu", t_cpu, baseline="reference (numpy)", baseline_seconds=t_ref, bytes_moved=moved, ctx=ctx,
            vs_pil=t_pil / t_cpu),
    ]


def tile_rows(ctx: BenchContext) -> list[dict]:
    rng = np.random.default_rng(3)
    feats = rng.standard_normal((9, 360, 640)).astype(np.float32)
    rows = []
    for kernel, args in [("superres.tile_split", (feats, 128, 8)),
                         ("superres.tile_stitch", None)]:
        if args is None:
            wins = get_impl("superres.tile_split", "numba-cpu")(feats, 128, 8)
            args = (wins, 360, 640, 128, 8)
        ref, cpu = get_impl(kernel, "reference"), get_impl(kernel, "numba-cpu")
        t_ref = best_of(lambda: ref(*args), repeat=ctx.repeat)
        t_cpu = best_of(lambda: cpu(*args), repeat=ctx.repeat)
        label = f"{kernel.split('.')[1]} 9x360x640, tile 128, pad 8"
        rows += [row(label, "reference (numpy)", t_ref), row(label, "numba-cpu", t_cpu, baseline="reference (numpy)",
                                                             baseline_seconds=t_ref)]
    return rows


def run(ctx: BenchContext) -> list[dict]:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return frame_rows(ctx) + tiling_rows(ctx) + shuffle_rows(ctx) + resize_rows(ctx) + tile_rows(ctx)
