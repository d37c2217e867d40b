"""What the ``gpuforge radiance`` commands do: load, train, render, evaluate, write runs."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from gpuforge.core.context import get_context
from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.core.files import Manifest, atomic_dir, atomic_path, check_output, require_input
from gpuforge.core.log import get_logger

log = get_logger("gpuforge.radiance")


def set_threads(n: int | None) -> None:
    if n is None:
        return
    if n < 1:
        raise UsageError("--threads must be >= 1")
    import numba
    import torch

    torch.set_num_threads(n)
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def _seed(seed):
    s = seed if seed is not None else get_context().seed
    return 0 if s is None else int(s)


# ============================================================================ scenes
def make_scene(out, kind, views, res, test_views, val_views, seed, force) -> dict:
    from gpuforge.plugins.radiance.synthetic import KINDS, make_scene as _make

    if kind not in KINDS:
        raise UsageError(f"unknown scene kind {kind!r}; choose one of {', '.join(KINDS)}")
    if views < 1 or test_views < 1 or val_views < 0 or not 8 <= res <= 4096:
        raise UsageError("--views and --test-views must be >= 1 and --res between 8 and 4096")
    m = Manifest("radiance make-scene", {"kind": kind, "views": views, "res": res, "test_views": test_views,
                                         "val_views": val_views, "seed": seed})
    with atomic_dir(out, force) as tmp:
        with m.timed("render"):
            info = _make(tmp, kind, views, res, test_views, val_views, seed)
        m.set("scene", info)
        m.write(tmp)
    return {**info, "out": str(out)}


def scene_info(scene, background, cameras) -> dict:
    from gpuforge.plugins.radiance.scene import load_scene

    s = load_scene(scene, background)
    out = {"scene": str(scene), "form": s.form, "background": s.background.tolist(), "aabb": s.aabb.tolist(),
           "splits": {k: len(v.cameras) for k, v in s.splits.items()},
           "width": s.splits["train"].cameras.width, "height": s.splits["train"].cameras.height,
           "fx": float(s.splits["train"].cameras.fx[0]), "fy": float(s.splits["train"].cameras.fy[0]),
           "cx": float(s.splits["train"].cameras.cx[0]), "cy": float(s.splits["train"].cameras.cy[0])}
    if cameras:
        out["cameras"] = {k: v.cameras.to_dict() for k, v in s.splits.items()}
    return out


def _load_scene_for(run: Path, scene, info: dict, res: int | None = None):
    from gpuforge.plugins.radiance.scene import load_scene

    path = scene or info.get("scene")
    if path is None:
        raise UsageError(f"run {run} does not name its scene; pass --scene")
    if not Path(path).exists():
        raise BadInputError(f"scene {path} (used by run {run}) not found; pass --scene")
    return load_scene(path, info.get("background_arg"), res)


# ============================================================================ splat
def splat_train(scene, out, steps, sh_degree, minutes, init_points, eval_every, background, seed, force) -> dict:
    from gpuforge.plugins.radiance import splat
    from gpuforge.plugins.radiance.scene import load_scene

    require_input(scene, "scene")
    check_output(out, force)
    if steps < 1 or init_points < 1:
        raise UsageError("--steps and --init-points must be >= 1")
    sc = load_scene(scene, background)
    cfg = splat.SplatConfig(steps=steps, sh_degree=sh_degree, init_points=init_points, seed=_seed(seed))
    m = Manifest("radiance splat train", splat.config_dict(cfg))
    m.add_input(scene)
    from gpuforge.core.progress import progress

    with progress("splat train", total=steps) as bar:
        with m.timed("train"):
            g, curve, stats = splat.train(sc, cfg, minutes, eval_every, on_step=lambda i, loss: bar.advance(), log=log)
    with m.timed("eval"):
        ev = splat.evaluate(g, sc.split("test"), sc.background)
    result = {**stats, "test_psnr": ev["psnr"], "test_ssim": ev["ssim"], "curve": curve, "scene": str(scene),
              "out": str(out)}
    with atomic_dir(out, force) as tmp:
        splat.save_run(tmp, g, {"scene": str(Path(scene).resolve()), "background_arg": background,
                                "config": splat.config_dict(cfg)})
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2))
        m.set("result", {k: v for k, v in result.items() if k != "curve"})
        m.write(tmp)
    return result


def splat_export(run, fmt, out, force) -> dict:
    from gpuforge.plugins.radiance import splat

    if fmt != "ply":
        raise UsageError(f"unknown export format {fmt!r}; only 'ply' (Inria 3DGS layout) is supported")
    g, info = splat.load_run(require_input(run, "run"))
    m = Manifest("radiance splat export", {"format": fmt})
    m.add_input(run)
    with atomic_path(out, force) as tmp:
        splat.export_ply(g, tmp)
    m.add_output(out)
    m.write(Path(out).parent, f"{Path(out).name}.manifest.json")
    return {"out": str(out), "gaussians": len(g), "sh_degree": g.sh_degree,
            "fields": splat.ply_field_names(g.sh_degree)}


def splat_import(file, out, scene, render_out, force) -> dict:
    from gpuforge.plugins.radiance import splat

    g = splat.import_ply(require_input(file, "PLY file"))
    if scene is not None:
        require_input(scene, "scene")
    m = Manifest("radiance splat import", {"scene": str(scene) if scene else None})
    m.add_input(file)
    with atomic_dir(out, force) as tmp:
        splat.save_run(tmp, g, {"scene": str(Path(scene).resolve()) if scene else None, "imported_from": str(file)})
        m.write(tmp)
    r = {"out": str(out), "gaussians": len(g), "sh_degree": g.sh_degree}
    if render_out is not None:
        r["render"] = render(out, render_out, "test" if scene else "spiral", None, 30, scene, force, kind="splat")
    return r


# ============================================================================ models behind one interface
def load_model(run: Path, kind: str):
    """(render(cams, i, W, H, bg) -> float image [H, W, 3], info)."""
    import torch

    run = require_input(run, "run")
    info_path = Path(run) / "config.json"
    if not info_path.is_file():
        raise BadInputError(f"{run} is not a radiance run (no config.json); train one first")
    if kind == "splat":
        from gpuforge.plugins.radiance import splat

        g, info = splat.load_run(run)

        def fn(cams, i, W, H, bg):
            with torch.no_grad():
                return g.render(cams, i, bg, width=W, height=H)[0].numpy()

        return fn, info
    from gpuforge.plugins.radiance import nerf

    model, info = nerf.load_run(run)

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


def write_frames(frames: list[np.ndarray], out: Path, force: bool, manifest: Manifest, fps: int = 24) -> None:
    from PIL import Image

    out = Path(out)
    u8 = [(np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8) for f in frames]
    if out.suffix.lower() == ".mp4":
        import imageio_ffmpeg

        with atomic_path(out, force) as tmp:
            h, w = u8[0].shape[:2]
            wr = imageio_ffmpeg.write_frames(str(tmp), (w, h), fps=fps, macro_block_size=1, quality=9)
            wr.send(None)
            for f in u8:
                wr.send(np.ascontiguousarray(f))
            wr.close()
        manifest.add_output(out)
        manifest.write(out.parent, f"{out.name}.manifest.json")
        return
    with atomic_dir(out, force) as tmp:
        for k, f in enumerate(u8):
            Image.fromarray(f).save(tmp / f"frame_{k:04d}.png")
            manifest.add_output(f"frame_{k:04d}.png")
        manifest.write(tmp)


def render(run, out, views, res, frames, scene, force, kind) -> dict:
    if views not in ("test", "spiral"):
        raise UsageError(f"--views must be test or spiral, got {views!r}")
    check_output(out, force)
    fn, info = load_model(Path(run), kind)
    bg = None
    if views == "test" or scene is not None or info.get("scene"):
        try:
            sc = _load_scene_for(Path(run), scene, info)
        except (BadInputError, UsageError):
            if views == "test":
                raise
            sc = None
    else:
        sc = None
    from gpuforge.plugins.radiance.scene import parse_background

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
    m = Manifest(f"radiance {kind} render", {"views": views, "res": W, "frames": n})
    m.add_input(run)
    t0 = time.perf_counter()
    imgs = [fn(cams, i, W, H, bg) for i in range(n)]
    dt = time.perf_counter() - t0
    m.set("render_seconds", dt)
    write_frames(imgs, out, force, m)
    return {"out": str(out), "frames": n, "width": W, "height": H, "seconds": round(dt, 3), "fps": n / dt,
            "rays_per_s": n * W * H / dt}


def evaluate(run, scene, split, kind) -> dict:
    from gpuforge.plugins.radiance.splat import psnr, ssim

    fn, info = load_model(Path(run), kind)
    sc = _load_scene_for(Path(run), scene, info)
    sp = sc.split(split)
    cams = sp.cameras
    ps, ss = [], []
    t0 = time.perf_counter()
    for i in range(len(cams)):
        img = fn(cams, i, cams.width, cams.height, sc.background)
        ps.append(psnr(img, sp.images[i]))
        ss.append(ssim(img, sp.images[i]))
    dt = time.perf_counter() - t0
    return {"run": str(run), "split": split, "views": len(cams), "psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)),
            "psnr_per_view": [round(p, 3) for p in ps], "render_fps": len(cams) / dt}


# ============================================================================ nerf
def nerf_train(scene, out, steps, levels, features_per_level, log2_hashmap_size, base_resolution, max_resolution,
               batch_rays, minutes, eval_every, view_dirs, background, seed, force) -> dict:
    from gpuforge.plugins.radiance import nerf
    from gpuforge.plugins.radiance.scene import load_scene

    require_input(scene, "scene")
    check_output(out, force)
    if steps < 1 or levels < 1 or features_per_level < 1 or not 8 <= log2_hashmap_size <= 24 or base_resolution < 2:
        raise UsageError("need --steps >= 1, --levels >= 1, --features-per-level >= 1, "
                         "--log2-hashmap-size in 8..24, --base-resolution >= 2")
    sc = load_scene(scene, background)
    cfg = nerf.NerfConfig(steps=steps, levels=levels, features_per_level=features_per_level,
                          log2_hashmap_size=log2_hashmap_size, base_resolution=base_resolution,
                          max_resolution=max_resolution, batch_rays=batch_rays, view_dirs=view_dirs, seed=_seed(seed))
    m = Manifest("radiance nerf train", nerf.config_dict(cfg))
    m.add_input(scene)
    from gpuforge.core.progress import progress

    with progress("nerf train", total=steps) as bar:
        with m.timed("train"):
            model, curve, stats = nerf.train(sc, cfg, minutes, eval_every, on_step=lambda i, loss: bar.advance(),
                                             log=log)
    with m.timed("eval"):
        ev = nerf.evaluate(model, sc.split("test"), sc.background)
    result = {**stats, "test_psnr": ev["psnr"], "test_ssim": ev["ssim"], "curve": curve, "scene": str(scene),
              "out": str(out)}
    with atomic_dir(out, force) as tmp:
        nerf.save_run(tmp, model, {"scene": str(Path(scene).resolve()), "background_arg": background})
        (tmp / "metrics.json").write_text(json.dumps(result, indent=2))
        m.set("result", {k: v for k, v in result.items() if k != "curve"})
        m.write(tmp)
    return result
