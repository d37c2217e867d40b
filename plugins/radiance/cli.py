"""``gpuforge radiance ...``: scenes, Gaussian splatting and hash-grid NeRF.

Only typer and light gpuforge modules are imported here; the work lives in
:mod:`.runs` (imported inside each command).
"""
from __future__ import annotations

from pathlib import Path

import typer

from gpuforge.core.context import get_context
from gpuforge.core.output import emit

app = typer.Typer(help="Radiance fields: hash-grid NeRF and 3D Gaussian splatting.", no_args_is_help=True)
splat_app = typer.Typer(help="3D Gaussian splatting: train, render, eval, export/import Inria PLY.",
                        no_args_is_help=True)
nerf_app = typer.Typer(help="Hash-grid NeRF (Instant-NGP encoding): train, render, eval.", no_args_is_help=True)
app.add_typer(splat_app, name="splat")
app.add_typer(nerf_app, name="nerf")

JSON = typer.Option(False, "--json", help="Print the result as JSON.")
FORCE = typer.Option(False, "--force", help="Overwrite an existing output.")
THREADS = typer.Option(None, "--threads", help="torch/numba threads (default: all cores; 1 is faster on a "
                                                  "busy machine).")
BG = typer.Option(None, "--background", help="white (default), black, gray or 'r,g,b': RGBA images are "
                                             "composited on it.")


def _emit(result: dict, human: str, json_out: bool) -> None:
    emit(result, human, as_json=json_out or get_context().json)


@app.command("make-scene")
def make_scene(
    out: Path = typer.Option(..., "--out", help="Folder to write (Blender form: transforms_{train,val,test}.json)."),
    kind: str = typer.Option("spheres", "--kind", help="spheres (textured, exact ray hits) or gaussians."),
    views: int = typer.Option(100, "--views", help="Training views."),
    res: int = typer.Option(128, "--res", help="Image width and height in pixels."),
    test_views: int = typer.Option(20, "--test-views"),
    val_views: int = typer.Option(10, "--val-views"),
    seed: int = typer.Option(0, "--seed"),
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """Render an analytic scene with exact poses (train/val/test splits)."""
    from gpuforge.plugins.radiance import runs

    r = runs.make_scene(out, kind, views, res, test_views, val_views, seed, force)
    _emit(r, f"wrote {r['kind']} scene {out} ({r['views']}, {res}x{res})", json_out)


@app.command("scene-info")
def scene_info(scene: Path = typer.Argument(..., help="Scene folder."), background: str = BG,
               cameras: bool = typer.Option(False, "--cameras", help="Include every camera."),
               json_out: bool = JSON) -> None:
    """Read a scene with the loader and print its cameras (checks a scene before training)."""
    from gpuforge.plugins.radiance import runs

    r = runs.scene_info(scene, background, cameras)
    _emit(r, "\n".join(f"{k}: {v}" for k, v in r.items() if k != "cameras"), json_out)


# ============================================================================ splat
@splat_app.command("train")
def splat_train(
    scene: Path = typer.Argument(..., help="Scene folder (Blender or nerfstudio form)."),
    out: Path = typer.Option(..., "--out", help="Run folder to write."),
    steps: int = typer.Option(3000, "--steps"),
    sh_degree: int = typer.Option(3, "--sh-degree", min=0, max=3),
    minutes: float = typer.Option(None, "--minutes", help="Stop after this much training time."),
    init_points: int = typer.Option(1000, "--init-points", help="Random initial Gaussians in the scene box."),
    eval_every: int = typer.Option(500, "--eval-every", help="Test PSNR every N steps (time-to-PSNR curve)."),
    background: str = BG,
    seed: int = typer.Option(None, "--seed"),
    threads: int = THREADS,
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """Train 3D Gaussians (densify / prune / opacity reset as the 3DGS paper)."""
    from gpuforge.plugins.radiance import runs

    runs.set_threads(threads)
    r = runs.splat_train(scene, out, steps, sh_degree, minutes, init_points, eval_every, background, seed, force)
    _emit(r, f"trained {r['gaussians']} Gaussians in {r['train_seconds']} s ({r['steps']} steps): "
             f"test PSNR {r['test_psnr']:.2f} dB -> {out}", json_out)


@splat_app.command("render")
def splat_render(
    run: Path = typer.Argument(..., help="Splat run folder."),
    out: Path = typer.Option(..., "--out", help="Folder of PNG frames, or a .mp4 file."),
    views: str = typer.Option("test", "--views", help="test (the scene's test cameras) or spiral."),
    res: int = typer.Option(None, "--res", help="Output width (default: the scene's)."),
    frames: int = typer.Option(60, "--frames", help="Frames of the spiral."),
    scene: Path = typer.Option(None, "--scene", help="Scene folder (default: the one the run was trained on)."),
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """Render a splat run's test views or a spiral."""
    from gpuforge.plugins.radiance import runs

    r = runs.render(run, out, views, res, frames, scene, force, kind="splat")
    _emit(r, f"rendered {r['frames']} frames ({r['fps']:.1f} frames/s) -> {out}", json_out)


@splat_app.command("eval")
def splat_eval(run: Path = typer.Argument(...), scene: Path = typer.Option(None, "--scene"),
               split: str = typer.Option("test", "--split"), json_out: bool = JSON) -> None:
    """PSNR / SSIM of a splat run on the test split."""
    from gpuforge.plugins.radiance import runs

    r = runs.evaluate(run, scene, split, kind="splat")
    _emit(r, f"{r['split']}: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f} over {r['views']} views", json_out)


@splat_app.command("export")
def splat_export(run: Path = typer.Argument(...), fmt: str = typer.Option("ply", "--format", help="ply (Inria layout)."),
                 out: Path = typer.Option(..., "--out"), force: bool = FORCE, json_out: bool = JSON) -> None:
    """Export Gaussians as an Inria 3DGS PLY."""
    from gpuforge.plugins.radiance import runs

    r = runs.splat_export(run, fmt, out, force)
    _emit(r, f"wrote {r['gaussians']} Gaussians -> {out}", json_out)


@splat_app.command("import")
def splat_import(
    file: Path = typer.Argument(..., help="Inria 3DGS PLY (from this tool or others)."),
    out: Path = typer.Option(..., "--out", help="Run folder to create."),
    scene: Path = typer.Option(None, "--scene", help="Scene whose cameras render and evaluate it."),
    render_out: Path = typer.Option(None, "--render", help="Also render the scene's test views (or a spiral) here."),
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """Import a 3DGS PLY as a run (then `splat render` / `splat eval` it)."""
    from gpuforge.plugins.radiance import runs

    r = runs.splat_import(file, out, scene, render_out, force)
    _emit(r, f"imported {r['gaussians']} Gaussians (SH degree {r['sh_degree']}) -> {out}", json_out)


# ============================================================================ nerf
@nerf_app.command("train")
def nerf_train(
    scene: Path = typer.Argument(..., help="Scene folder (Blender or nerfstudio form)."),
    out: Path = typer.Option(..., "--out"),
    steps: int = typer.Option(3000, "--steps"),
    levels: int = typer.Option(16, "--levels"),
    features_per_level: int = typer.Option(2, "--features-per-level"),
    log2_hashmap_size: int = typer.Option(19, "--log2-hashmap-size"),
    base_resolution: int = typer.Option(16, "--base-resolution"),
    max_resolution: int = typer.Option(1024, "--max-resolution"),
    batch_rays: int = typer.Option(4096, "--batch-rays"),
    minutes: float = typer.Option(None, "--minutes", help="Stop after this much training time."),
    eval_every: int = typer.Option(500, "--eval-every"),
    view_dirs: bool = typer.Option(True, "--view-dirs/--no-view-dirs", help="View-dependent colour (SH-encoded)."),
    background: str = BG,
    seed: int = typer.Option(None, "--seed"),
    threads: int = THREADS,
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """Train a hash-grid NeRF (Instant-NGP encoding, occupancy-grid ray marching)."""
    from gpuforge.plugins.radiance import runs

    runs.set_threads(threads)
    r = runs.nerf_train(scene, out, steps, levels, features_per_level, log2_hashmap_size, base_resolution,
                        max_resolution, batch_rays, minutes, eval_every, view_dirs, background, seed, force)
    _emit(r, f"trained {r['steps']} steps in {r['train_seconds']} s: test PSNR {r['test_psnr']:.2f} dB -> {out}",
          json_out)


@nerf_app.command("render")
def nerf_render(
    run: Path = typer.Argument(...),
    out: Path = typer.Option(..., "--out", help="Folder of PNG frames, or a .mp4 file."),
    views: str = typer.Option("test", "--views", help="test or spiral."),
    res: int = typer.Option(None, "--res"),
    frames: int = typer.Option(60, "--frames"),
    scene: Path = typer.Option(None, "--scene"),
    force: bool = FORCE,
    json_out: bool = JSON,
) -> None:
    """Render a NeRF run's test views or a spiral."""
    from gpuforge.plugins.radiance import runs

    r = runs.render(run, out, views, res, frames, scene, force, kind="nerf")
    _emit(r, f"rendered {r['frames']} frames ({r['fps']:.2f} frames/s, {r['rays_per_s']:.0f} rays/s) -> {out}",
          json_out)


@nerf_app.command("eval")
def nerf_eval(run: Path = typer.Argument(...), scene: Path = typer.Option(None, "--scene"),
              split: str = typer.Option("test", "--split"), json_out: bool = JSON) -> None:
    """PSNR / SSIM of a NeRF run on the test split."""
    from gpuforge.plugins.radiance import runs

    r = runs.evaluate(run, scene, split, kind="nerf")
    _emit(r, f"{r['split']}: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f} over {r['views']} views", json_out)
