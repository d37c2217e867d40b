"""What the ``gpuforge radiance`` commands do: load, train, render, evaluate, write runs.

Every function takes the command's :class:`~gpuforge.core.run.Run`: inputs are declared
with ``run.input``, outputs with ``run.output`` (written to a temporary sibling and moved
into place when the command succeeds, with the manifest), and all tensors live on
``run.torch_device``; the kernels follow the run's device through the registry.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.core.log import get_logger

log = get_logger("gpuforge.radiance")


# ============================================================================ scenes
def make_scene(run, out, kind, views, res, test_views, val_views, seed) -> dict:
    from gpuforge.plugins.radiance.synthetic import KINDS, make_scene as _make

    if kind not in KINDS:
        raise UsageError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    dst = run.output(out, kind="dir")
    with run.timed("render"):
        info = _make(dst.tmp, kind, views, res, test_views, val_views, seed)
    return {**info, "out": str(out)}


def scene_info(scene, background, cameras) -> dict:
    from gpuforge.plugins.radiance.scene import load_scene

    s = load_scene(scene, background)
    tr = s.splits["train"].cameras
    out = {"scene": str(scene), "form": s.form, "background": s.background.tolist(), "aabb": s.aabb.tolist(),
           "splits": {k: len(v.cameras) for k, v in s.splits.items()}, "width": tr.width, "height": tr.height,
           "fx": float(tr.fx[0]), "fy": float(tr.fy[0]), "cx": float(tr.cx[0]), "cy": float(tr.cy[0])}
    if s.points is not None:
        out["points"] = len(s.points)
    if s.notes:
        out["notes"] = s.notes
    if cameras:
        out["cameras"] = {k: v.cameras.to_dict() for k, v in s.splits.items()}
    return out


DEFAULT_STEPS = 3000
UNBOUNDED_STEPS = 10**9


def _steps(steps, minutes, cpu_minutes) -> int:
    """--steps, else 3000, else (with a time budget) as many as the budget allows."""
    if steps is not None:
        return steps
    return UNBOUNDED_STEPS if (minutes or cpu_minutes) else DEFAULT_STEPS


def _bar_total(steps: int):
    return None if steps == UNBOUNDED_STEPS else steps


def _load_training_scene(scene, background):
    """The scene, with what the loader did (undistortion, split rule) said once in the log."""
    from gpuforge.plugins.radiance.scene import load_scene

    sc = load_scene(scene, background)
    for note in sc.notes:
        log.info("scene", note=note)
    return sc


def _load_scene_for(run, run_dir: Path, scene, info: dict, res: int | None = None):
    from gpuforge.plugins.radiance.scene import load_scene

    path = scene or info.get("scene")
    if path is None:
        raise UsageError(f"run {run_dir} does not name its scene; pass --scene")
    if not Path(path).exists():
        raise BadInputError(f"scene {path} (used by run {run_dir}) not found; pass --scene")
    run.input(path, "scene")
    return load_scene(path, info.get("background_arg"), res)


# ============================================================================ splat
def splat_train(run, scene, out, steps, sh_degree, minutes, cpu_minutes, init_points, eval_every, background,
                nproc: int = 1, views_per_step: int = 1, antialiased: bool | None = None,
                dilation: float | None = None) -> dict:
    from contextlib import nullcontext

    from gpuforge.plugins.radiance import splat

    if views_per_step % nproc:
        raise UsageError(f"--views-per-step {views_per_step} must be a multiple of --nproc {nproc}")
    if nproc > 1 and run.device.is_cuda:
        from gpuforge.core.errors import UnsupportedError

        raise UnsupportedError(f"--nproc {nproc} runs CPU processes (gloo); use --device cpu, or one process per GPU "
                               "is not implemented yet")
    steps = _steps(steps, minutes, cpu_minutes)
    run.input(scene, "scene")
    dst = run.output(out, kind="dir")
    sc = _load_training_scene(scene, background)
    cfg = splat.SplatConfig(steps=steps, sh_degree=sh_degree, init_points=init_points, seed=run.seed_or(0),
                            views_per_step=views_per_step, **splat.filter_config(antialiased, dilation))
    run.note("config", splat.config_dict(cfg))
    if nproc > 1:
        from gpuforge.plugins.radiance.distributed import spec_for, workers

        group = workers(nproc, spec_for(scene, background, cfg, minutes, cpu_minutes, run.threads))
    else:
        group = nullcontext(None)
    with group as comm, run.progress("splat train", total=_bar_total(steps)) as bar, run.timed("train"):
        g, curve, stats = splat.train(sc, cfg, minutes, eval_every, on_step=lambda i, loss: bar.advance(), log=log,
                                      device=run.torch_device, cpu_minutes=cpu_minutes, comm=comm)
    with run.timed("eval"):
        ev = splat.evaluate(g, sc.split("test"), sc.background)
    result = {**stats, "test_psnr": ev["psnr"], "test_ssim": ev["ssim"], "curve": curve, "scene": str(scene),
              "scene_notes": sc.notes, "out": str(out)}
    splat.save_run(dst.tmp, g, {"scene": str(Path(scene).resolve()), "background_arg": background,
                                "config": splat.config_dict(cfg)})
    (dst.tmp / "metrics.json").write_text(json.dumps(result, indent=2))
    return result


def splat_export(run, run_dir, fmt, out) -> dict:
    from gpuforge.plugins.radiance import splat

    if fmt != "ply":
        raise UsageError(f"--format {fmt!r}: only 'ply' (Inria 3DGS layout) is supported")
    run.input(run_dir, "run")
    dst = run.output(out, kind="file")
    g, info = splat.load_run(run_dir)
    splat.export_ply(g, dst.tmp)
    if g.antialiased:
        log.warning("export", note=f"trained with the antialiased filter (2-D filter {g.dilation} px², opacities "
                                   "compensated), which a PLY cannot record: a viewer must render it the same way "
                                   f"(gsplat: rasterize_mode='antialiased', eps2d={g.dilation}; here: `splat import "
                                   "--antialiased`); a classic 3DGS viewer shows it far too dense")
    return {"out": str(out), "gaussians": len(g), "sh_degree": g.sh_degree,
            "fields": splat.ply_field_names(g.sh_degree), "filter": g.filter_info()}


def splat_import(run, file, out, scene, render_out, antialiased: bool | None = None) -> dict:
    from gpuforge.plugins.radiance import splat

    run.input(file, "PLY file")
    if scene is not None:
        run.input(scene, "scene")
    dst = run.output(out, kind="dir")
    frames_out = _frames_output(run, render_out) if render_out is not None else None
    g = splat.import_ply(file)  # the filter from gpuforge's PLY comment, else classic
    if antialiased is not None:
        g.antialiased, g.dilation = bool(antialiased), splat.filter_config(antialiased, None)["dilation"]
    info = {"scene": str(Path(scene).resolve()) if scene else None, "imported_from": str(file)}
    splat.save_run(dst.tmp, g, info)
    r = {"out": str(out), "gaussians": len(g), "sh_degree": g.sh_degree, "filter": g.filter_info()}
    if frames_out is not None:
        g = g.to(run.torch_device)
        r["render"] = _render(run, _splat_renderer(g), {**info, "kind": "splat"}, Path(out), frames_out,
                              "test" if scene else "spiral", None, 30, scene)
    return r


# ============================================================================ models behind one interface
def _splat_renderer(g):
    import torch

    def fn(cams, i, W, H, bg):
        with torch.no_grad():
            return g.render(cams, i, bg, width=W, height=H)[0].cpu().numpy()

    return fn


def load_model(run_dir: Path, kind: str, device=None):
    """(render(cams, i, W, H, bg) -> float image [H, W, 3], info) of a run, on ``device``."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise BadInputError(f"run not found: {run_dir}")
    if not (run_dir / "config.json").is_file():
        raise BadInputError(f"{run_dir} is not a radiance run (no config.json); train one first")
    if kind == "splat":
        from gpuforge.plugins.radiance import splat

        g, info = splat.load_run(run_dir)
        return _splat_renderer(g.to(device)), info
    from gpuforge.plugins.radiance import nerf

    model, info = nerf.load_run(run_dir, device)

    def fn(cams, i, W, H, bg):
        return model.render_image(cams, i, bg, W, H)

    return fn, info


def spiral_cameras(n: int, radius: float, fx_norm: float, W: int, H: int):
    from gpuforge.plugins.radiance.scene import Cameras, look_at_opengl

    c2w = []
    for k in range(n):
        a = 2 * math.pi * k / n
        elev = math.radians(25 + 15 * math.sin(2 * a))
        c2w.append(look_at_opengl(radius * np.array([math.cos(elev) * math.cos(a), math.cos(elev) * math.sin(a),
                                                     math.sin(elev)])))
    f = np.full(n, fx_norm * W)
    return Cameras(np.stack(c2w), f, f, np.full(n, W / 2), np.full(n, H / 2), W, H)


class _FrameWriter:
    """Frames go to disk as they are rendered (memory holds one frame): PNGs into a
    folder output, or an mp4 file output."""

    def __init__(self, dst, fps: int = 24):
        self.dst, self.fps, self.n, self._mp4 = dst, fps, 0, None

    def add(self, frame: np.ndarray) -> None:
        from PIL import Image

        u8 = np.ascontiguousarray((np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8))
        if self.dst.kind == "file":
            if self._mp4 is None:
                import imageio_ffmpeg

                h, w = u8.shape[:2]
                self._mp4 = imageio_ffmpeg.write_frames(str(self.dst.tmp), (w, h), fps=self.fps, macro_block_size=1,
                                                        quality=9)
                self._mp4.send(None)
            self._mp4.send(u8)
        else:
            Image.fromarray(u8).save(self.dst.tmp / f"frame_{self.n:04d}.png")
        self.n += 1

    def close(self) -> None:
        if self._mp4 is not None:
            self._mp4.close()
            self._mp4 = None


def _frames_output(run, out: Path):
    """A frames output: an .mp4 file or a folder of PNGs."""
    out = Path(out)
    return run.output(out, kind="file" if out.suffix.lower() == ".mp4" else "dir")


BYTES_PER_PIXEL = {"splat": 64, "nerf": 96}
"""Memory per output pixel of one rendered frame (float image, transmittance and
contribution counts, tile lists, per-pixel rays for NeRF, the uint8 copy). Measured as
the growth of the peak RSS between two frame sizes (splat 1024^2 -> 2048^2: ~36 B; NeRF
512^2 -> 1024^2 with 4 samples per ray: ~60 B), rounded up."""

BYTES_PER_SAMPLE = 512
"""NeRF renders 8192 rays at a time; each of their samples holds its point, direction,
encoding, MLP activations and colour (~490 B measured at 1024^2, untrained model)."""


def check_frame_fits(kind: str, W: int, H: int, device, fixed: int = 0) -> None:
    """Refuse (exit 3) a frame size whose buffers cannot fit, before any work, naming the
    size that would fit (``fixed``: bytes that do not grow with the frame)."""
    need = BYTES_PER_PIXEL[kind] * W * H + fixed
    from gpuforge.hardware.cpu import mem_available_bytes

    avail, where = mem_available_bytes(), "memory available"
    if device is not None and getattr(device, "type", "cpu") == "cuda":
        import torch

        avail, where = int(torch.cuda.mem_get_info(device)[0]), f"free memory on {device}"
    if avail is None or need <= avail * 0.8:
        return
    fit = int(math.sqrt(max(avail * 0.8 - fixed, 0) / BYTES_PER_PIXEL[kind] * W / H))
    raise BadInputError(f"--res {W}: a {W}x{H} frame needs ~{need / 2**30:.1f} GiB, more than the "
                        f"{avail / 2**30:.1f} GiB of {where}; use --res {max(fit, 1)} or less")


def _render(run, fn, info: dict, run_dir: Path, dst, views, res, frames, scene) -> dict:
    from gpuforge.plugins.radiance.scene import parse_background

    if views not in ("test", "spiral"):
        raise UsageError(f"--views must be test or spiral, got {views!r}")
    sc = None
    if views == "test" or scene is not None or info.get("scene"):
        try:
            sc = _load_scene_for(run, run_dir, scene, info)
        except (BadInputError, UsageError):
            if views == "test":
                raise
    bg = sc.background if sc is not None else parse_background(info.get("background_arg"))
    if views == "test":
        cams = sc.split("test").cameras
        W = res or cams.width
        H = max(1, round(cams.height * W / cams.width))
        n = len(cams)
    else:
        base = sc.split("train").cameras if sc is not None else None
        radius = float(np.linalg.norm(base.c2w[:, :3, 3], axis=1).mean()) if base is not None else 4.0
        fxn = float(base.fx[0] / base.width) if base is not None else 0.5 / math.tan(0.5 * 0.6911)
        W = res or (base.width if base is not None else 128)
        H = W if base is None else max(1, round(base.height * W / base.width))
        cams = spiral_cameras(frames, radius, fxn, W, H)
        n = frames
    kind = info.get("kind", "splat")
    fixed, per_pixel = 0, 1
    if kind == "nerf":
        cfg = info.get("config", {})
        per_pixel = int(cfg.get("supersample", 1)) ** 2  # rays a pixel (supersampled runs)
        fixed = 8192 * min(int(cfg.get("max_samples", 512)), int(cfg.get("steps_per_box", 192))) * BYTES_PER_SAMPLE
    check_frame_fits(kind, W, H, run.torch_device, fixed)
    writer = _FrameWriter(dst)
    t_render = 0.0
    try:
        for i in range(n):
            t0 = time.perf_counter()
            img = fn(cams, i, W, H, bg)
            t_render += time.perf_counter() - t0
            writer.add(img)
    finally:
        writer.close()
    run.timings["render"] = round(t_render, 4)
    return {"out": str(dst.path), "frames": n, "width": W, "height": H, "seconds": round(t_render, 3),
            "fps": n / max(t_render, 1e-9), "rays_per_s": n * W * H * per_pixel / max(t_render, 1e-9),
            "rays_per_pixel": per_pixel}


def render(run, run_dir, out, views, res, frames, scene, kind) -> dict:
    if views not in ("test", "spiral"):
        raise UsageError(f"--views must be test or spiral, got {views!r}")
    run.input(run_dir, "run")
    dst = _frames_output(run, out)
    fn, info = load_model(Path(run_dir), kind, run.torch_device)
    return _render(run, fn, {**info, "kind": kind}, Path(run_dir), dst, views, res, frames, scene)


def evaluate(run, run_dir, scene, split, kind) -> dict:
    from gpuforge.plugins.radiance.splat import psnr, ssim

    run.input(run_dir, "run")
    fn, info = load_model(Path(run_dir), kind, run.torch_device)
    sc = _load_scene_for(run, Path(run_dir), scene, info)
    sp = sc.split(split)
    cams = sp.cameras
    ps, ss = [], []
    t0 = time.perf_counter()
    for i in range(len(cams)):
        img = fn(cams, i, cams.width, cams.height, sc.background)
        ps.append(psnr(img, sp.images[i]))
        ss.append(ssim(img, sp.images[i]))
    dt = time.perf_counter() - t0
    return {"run": str(run_dir), "split": split, "views": len(cams), "psnr": float(np.mean(ps)),
            "ssim": float(np.mean(ss)), "psnr_per_view": [round(p, 3) for p in ps], "render_fps": len(cams) / dt}


# ============================================================================ nerf
def nerf_train(run, scene, out, steps, levels, features_per_level, log2_hashmap_size, base_resolution, max_resolution,
               batch_rays, target_samples, grid_res, max_samples, minutes, cpu_minutes, eval_every, view_dirs,
               background, ray_jitter: float = 0.0, supersample: int = 1) -> dict:
    from gpuforge.plugins.radiance import nerf

    if max_resolution < base_resolution:
        raise UsageError(f"--max-resolution {max_resolution} is below --base-resolution {base_resolution}")
    steps = _steps(steps, minutes, cpu_minutes)
    run.input(scene, "scene")
    dst = run.output(out, kind="dir")
    sc = _load_training_scene(scene, background)
    cfg = nerf.NerfConfig(steps=steps, levels=levels, features_per_level=features_per_level,
                          log2_hashmap_size=log2_hashmap_size, base_resolution=base_resolution,
                          max_resolution=max_resolution, batch_rays=batch_rays, target_samples=target_samples,
                          grid_res=grid_res, max_samples=max_samples, view_dirs=view_dirs, seed=run.seed_or(0),
                          ray_jitter=ray_jitter, supersample=supersample)
    run.note("config", nerf.config_dict(cfg))
    with run.progress("nerf train", total=_bar_total(steps)) as bar, run.timed("train"):
        model, curve, stats = nerf.train(sc, cfg, minutes, eval_every, on_step=lambda i, loss: bar.advance(),
                                         log=log, device=run.torch_device, cpu_minutes=cpu_minutes)
    with run.timed("eval"):
        ev = nerf.evaluate(model, sc.split("test"), sc.background)
    result = {**stats, "test_psnr": ev["psnr"], "test_ssim": ev["ssim"], "curve": curve, "scene": str(scene),
              "scene_notes": sc.notes, "out": str(out)}
    nerf.save_run(dst.tmp, model, {"scene": str(Path(scene).resolve()), "background_arg": background})
    (dst.tmp / "metrics.json").write_text(json.dumps(result, indent=2))
    return result
