"""``gpuforge bench scale`` (or ``gpuforge bench superres --only scale``): peak memory and time of ``superres upscale``
against input size (issue 15), each case in a fresh process so its peak RSS is its own.

Rows: a start-up run (a 16x16 image, tiled: imports, model, every kernel; after one
run that fills Numba's cache), x2 upscales of images at
three sizes with the default (automatic tiling, banded), the same largest-but-one image
untiled (``--tile 0``, the previous pipeline) as the baseline, and a short video (every
frame decoded, upscaled and encoded in turn). The last row fits memory and time growth
over the image sizes: ``rss_exponent`` of peak RSS above start-up against input pixels,
``time_exponent`` of the upscale time (1.0 = linear).

Inputs are made here (scikit-image's astronaut, bicubic-resized, with noise so the PNGs
are photo-like) in a temporary folder removed afterwards. Full sizes: 960x540, 1920x1080,
3840x2160 images and a 3-frame 3840x2160 video (x2: 7680x4320 out); ``--quick``:
480x270, 960x540, 1920x1080 and a 3-frame 960x540 video.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from gpuforge.core.bench import BenchContext, growth_exponent, row

SCALE = 2


def _photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    from PIL import Image

    try:
        import skimage.data

        base = Image.fromarray(skimage.data.astronaut())
    except ImportError:  # a smooth synthetic picture instead
        yy, xx = np.mgrid[0:512, 0:512]
        base = Image.fromarray(np.stack([xx // 2, yy // 2, (xx + yy) // 4], -1).astype(np.uint8))
    img = np.asarray(base.resize((w, h), Image.BICUBIC)).astype(np.int16)
    noise = np.random.default_rng(seed).integers(-6, 7, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def _clip(path: Path, w: int, h: int, frames: int) -> Path:
    import av

    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=24)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.options = {"crf": "18", "preset": "ultrafast"}
        base = _photo(w + 8 * frames, h)
        for i in range(frames):  # a slow pan
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, 8 * i:8 * i + w]), format="rgb24")
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    return path


def measure(args: list[str], cwd: Path) -> dict:
    """``gpuforge <args> --json`` in a fresh process (:func:`gpuforge.core.bench.measure_gpuforge`,
    so this process's size does not count): its wall time, its own peak RSS and its JSON result."""
    from gpuforge.core.bench import measure_gpuforge

    m = measure_gpuforge(args, cwd, global_args=("--log-format", "json"))
    return {"wall": m["seconds"], "peak_rss_mb": m["peak_rss_bytes"] / 2**20, "result": m["result"]}


def run(ctx: BenchContext) -> list[dict]:
    from PIL import Image

    sizes = [(480, 270), (960, 540), (1920, 1080)] if ctx.quick else [(960, 540), (1920, 1080), (3840, 2160)]
    video = (960, 540, 3) if ctx.quick else (3840, 2160, 3)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="gpuforge-superres-scale-") as tmp:
        d = Path(tmp)
        Image.fromarray(_photo(16, 16)).save(d / "tiny.png")
        # --tile 8 loads every kernel; the first run fills Numba's cache if it is stale
        # (compiling takes hundreds of MB, which would land in whichever run compiles)
        tiny = ["superres", "upscale", "tiny.png", "--scale", str(SCALE), "--tile", "8", "--out", "tiny_up.png",
                "--force"]
        measure(tiny, d)
        start = measure(tiny, d)
        base_rss = start["peak_rss_mb"]
        rows.append(row("superres start-up (16x16 image)", "gpuforge", start["wall"], input="16x16",
                        peak_rss_mb=round(base_rss, 1)))
        fitted = []
        for w, h in sizes:
            src = d / f"img_{w}x{h}.png"
            Image.fromarray(_photo(w, h)).save(src)
            m = measure(["superres", "upscale", src.name, "--scale", str(SCALE), "--out", f"up_{w}x{h}.png"], d)
            work = m["result"]["seconds"]
            fitted.append((w * h, m["peak_rss_mb"] - base_rss, work))
            # series/size/peak_rss_bytes: `gpuforge bench scale` fits these rows' growth with every plugin's
            rows.append(row(f"superres upscale x{SCALE} image {w}x{h}", "banded, automatic tiles", m["wall"],
                            input=f"{w}x{h}", output=f"{w * SCALE}x{h * SCALE}", upscale_seconds=work,
                            series=f"superres upscale x{SCALE} image", size=w * h, size_label=f"{w}x{h}",
                            peak_rss_bytes=int(m["peak_rss_mb"] * 2**20), peak_rss_mb=round(m["peak_rss_mb"], 1),
                            rss_above_startup_mb=round(m["peak_rss_mb"] - base_rss, 1)))
            if (w, h) == sizes[1]:  # the baseline: one forward pass over the whole image
                b = measure(["superres", "upscale", src.name, "--scale", str(SCALE), "--tile", "0",
                              "--out", f"untiled_{w}x{h}.png"], d)
                rows.append(row(f"superres upscale x{SCALE} image {w}x{h} untiled", "whole image (--tile 0)",
                                b["wall"], input=f"{w}x{h}", output=f"{w * SCALE}x{h * SCALE}",
                                upscale_seconds=b["result"]["seconds"], peak_rss_mb=round(b["peak_rss_mb"], 1),
                                rss_above_startup_mb=round(b["peak_rss_mb"] - base_rss, 1)))
                ours = rows[-2]
                ours.update(baseline=rows[-1]["impl"], baseline_seconds=b["wall"], ratio=b["wall"] / m["wall"],
                            rss_ratio=round((b["peak_rss_mb"] - base_rss) / max(m["peak_rss_mb"] - base_rss, 1e-9), 2))
            src.unlink()
        vw, vh, nf = video
        clip = _clip(d / "clip.mp4", vw, vh, nf)
        m = measure(["superres", "upscale", clip.name, "--scale", str(SCALE), "--out", "clip_up.mp4"], d)
        rows.append(row(f"superres upscale x{SCALE} video {vw}x{vh}, {nf} frames", "streamed frames, automatic tiles",
                        m["wall"], input=f"{vw}x{vh}x{nf}", output=f"{vw * SCALE}x{vh * SCALE}",
                        upscale_seconds=m["result"]["seconds"], peak_rss_mb=round(m["peak_rss_mb"], 1),
                        rss_above_startup_mb=round(m["peak_rss_mb"] - base_rss, 1)))
        px, rss, work = zip(*fitted)
        rows.append(row(f"superres x{SCALE} image growth {sizes[0][0]}x{sizes[0][1]}..{sizes[-1][0]}x{sizes[-1][1]}",
                        "log-log fit over input pixels", float(sum(work)),
                        rss_exponent=round(growth_exponent(px, [max(v, 1.0) for v in rss]), 2),
                        time_exponent=round(growth_exponent(px, work), 2),
                        pixels_ratio=round(px[-1] / px[0], 1)))
    return rows
