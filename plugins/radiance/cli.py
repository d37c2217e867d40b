"""``gpuforge radiance ...``: scenes, Gaussian splatting and hash-grid NeRF.

Only typer and light gpuforge modules are imported here; the work lives in
:mod:`.runs` (imported inside each command). Every command takes the run
(:mod:`gpuforge.core.run`): the runtime adds ``--json``, ``--force``, ``--seed`` and
``--threads`` where declared, resolves ``--device`` and owns outputs and manifests.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import typer

from gpuforge.core.run import Run, command

app = typer.Typer(help="Radiance fields: hash-grid NeRF and 3D Gaussian splatting.", no_args_is_help=True)
splat_app = typer.Typer(help="3D Gaussian splatting: train, render, eval, export/import Inria PLY.",
                        no_args_is_help=True)
nerf_app = typer.Typer(help="Hash-grid NeRF (Instant-NGP encoding): train, render, eval.", no_args_is_help=True)
app.add_typer(splat_app, name="splat")
app.add_typer(nerf_app, name="nerf")


def _bg():
    return typer.Option(None, "--background", help="white (default), black, gray or 'r,g,b': RGBA images are "
                                                   "composited on it.")


def _minutes():
    return typer.Option(None, "--minutes", min=0.0, help="Stop after this much training time (wall clock).")


def _cpu_minutes():
    return typer.Option(None, "--cpu-minutes", min=0.0,
                        help="Stop after this much CPU time of this process (all threads; steady on a shared machine).")


def _eval_every():
    return typer.Option(500, "--eval-every", min=1, help="Test PSNR every N steps (time-to-PSNR curve).")


def _views():
    return typer.Option("test", "--views", help="test (the scene's test cameras) or spiral.")


def _res():
    return typer.Option(None, "--res", min=1, help="Output width in pixels (default: the scene's).")


def _frames():
    return typer.Option(60, "--frames", min=1, max=100_000, help="Frames of the spiral.")


def _scene_opt():
    return typer.Option(None, "--scene", help="Scene folder (default: the one the run was trained on).")


def _render_and_eval(sub_app: typer.Typer, kind: str, name: str, run_help: str,
                     speed: Callable[[dict], str]) -> None:
    """Add ``render`` and ``eval`` to ``sub_app`` (``splat`` or ``nerf``): the same options
    for both kinds of run, :func:`.runs.render` / :func:`.runs.evaluate` tell them apart.
    ``speed``: the render rate in the summary line."""

    def render(
        run: Run,
        run_dir: Path = typer.Argument(..., metavar="RUN", help=run_help),
        out: Path = typer.Option(..., "--out", help="Folder of PNG frames, or a .mp4 file."),
        views: str = _views(),
        res: Optional[int] = _res(),
        frames: int = _frames(),
        scene: Optional[Path] = _scene_opt(),
    ) -> None:
        from gpuforge.plugins.radiance import runs

        r = runs.render(run, run_dir, out, views, res, frames, scene, kind=kind)
        run.result(r, f"rendered {r['frames']} frames ({speed(r)}) -> {out}")

    def evaluate(run: Run, run_dir: Path = typer.Argument(..., metavar="RUN", help=run_help),
                 scene: Optional[Path] = _scene_opt(), split: str = typer.Option("test", "--split")) -> None:
        from gpuforge.plugins.radiance import runs

        r = runs.evaluate(run, run_dir, scene, split, kind=kind)
        run.result(r, f"{r['split']}: PSNR {r['psnr']:.2f} dB, SSIM {r['ssim']:.4f} over {r['views']} views")

    render.__doc__ = f"Render a {name} run's test views or a spiral."
    evaluate.__doc__ = f"PSNR / SSIM of a {name} run on the test split."
    for fn in (render, evaluate):
        fn.__name__ = fn.__qualname__ = f"{kind}_{fn.__name__}"
    command(sub_app, "render", outputs=True, threads=True)(render)
    command(sub_app, "eval", threads=True)(evaluate)


@command(app, "make-scene", outputs=True, seeded=True, device=False)
def make_scene(
    run: Run,
    out: Path = typer.Option(..., "--out", help="Folder to write (Blender form: transforms_{train,val,test}.json)."),
    kind: str = typer.Option("spheres", "--kind", help="spheres, cubes, table (analytic, exact ray hits) or gaussians."),
    views: int = typer.Option(100, "--views", min=1, max=10_000, help="Training views."),
    res: int = typer.Option(128, "--res", min=8, max=4096, help="Image width and height in pixels."),
    test_views: int = typer.Option(20, "--test-views", min=1, max=10_000),
    val_views: int = typer.Option(10, "--val-views", min=0, max=10_000),
) -> None:
    """Render an analytic scene with exact poses (train/val/test splits)."""
    from gpuforge.plugins.radiance import runs

    r = runs.make_scene(run, out, kind, views, res, test_views, val_views, run.seed_or(0))
    run.result(r, f"wrote {r['kind']} scene {out} ({r['views']}, {res}x{res})")


@command(app, "scene-info", device=False)
def scene_info(run: Run, scene: Path = typer.Argument(..., help="Scene folder."), background: str = _bg(),
               cameras: bool = typer.Option(False, "--cameras", help="Include every camera.")) -> None:
    """Read a scene with the loader and print its cameras (checks a scene before training)."""
    from gpuforge.plugins.radiance import runs

    run.input(scene, "scene")
    r = runs.scene_info(scene, background, cameras)
    run.result(r, "\n".join(f"{k}: {v}" for k, v in r.items() if k != "cameras"))


# ============================================================================ splat
@command(splat_app, "train", outputs=True, seeded=True, threads=True)
def splat_train(
    run: Run,
    scene: Path = typer.Argument(..., help="Scene folder (Blender or nerfstudio form)."),
    out: Path = typer.Option(..., "--out", help="Run folder to write."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, max=10_000_000,
                                        help="Optimisation steps (default 3000; with --minutes or --cpu-minutes, as many "
                                             "as the budget allows: the schedule follows the budget)."),
    sh_degree: int = typer.Option(3, "--sh-degree", min=0, max=3),
    minutes: Optional[float] = _minutes(),
    cpu_minutes: Optional[float] = _cpu_minutes(),
    init_points: int = typer.Option(1000, "--init-points", min=1, max=10_000_000,
                                    help="Random initial Gaussians in the scene box (when the scene has no SfM points)."),
    eval_every: int = _eval_every(),
    background: str = _bg(),
    nproc: int = typer.Option(1, "--nproc", min=1, max=256,
                              help="CPU processes (torch.distributed, gloo on loopback): the views of each step are "
                                   "split over them and the gradients summed."),
    views_per_step: Optional[int] = typer.Option(None, "--views-per-step", min=1, max=4096,
                                                 help="Training views per step (default: --nproc); a multiple of "
                                                      "--nproc."),
    antialiased: Optional[bool] = typer.Option(
        None, "--antialiased/--classic",
        help="Screen-space filter. --antialiased (default): Mip-Splatting's 2-D filter (0.1 px², opacities scaled to "
             "keep each Gaussian's integral; gsplat's rasterize_mode='antialiased' with eps2d=0.1): sharper edges, "
             "+2 to +6 dB on scenes with hard edges. --classic: 3DGS's 0.3 px² dilation, no scaling: what Inria-layout "
             "viewers render, so choose it when the exported PLY goes to one."),
    dilation: Optional[float] = typer.Option(None, "--dilation", min=0.0, max=100.0,
                                             help="Override the filter's variance in pixels²."),
) -> None:
    """Train 3D Gaussians (densify / prune / opacity reset as the 3DGS paper)."""
    from gpuforge.plugins.radiance import runs

    r = runs.splat_train(run, scene, out, steps, sh_degree, minutes, cpu_minutes, init_points, eval_every, background,
                         nproc, views_per_step or nproc, antialiased, dilation)
    run.result(r, f"trained {r['gaussians']} Gaussians in {r['train_seconds']} s ({r['steps']} steps): "
                  f"test PSNR {r['test_psnr']:.2f} dB -> {out}")


_render_and_eval(splat_app, "splat", "splat", run_help="Splat run folder.",
                 speed=lambda r: f"{r['fps']:.1f} frames/s")


@command(splat_app, "export", outputs=True, device=False)
def splat_export(run: Run, run_dir: Path = typer.Argument(..., metavar="RUN"),
                 fmt: str = typer.Option("ply", "--format", help="ply (Inria layout)."),
                 out: Path = typer.Option(..., "--out")) -> None:
    """Export Gaussians as an Inria 3DGS PLY. The layout has no field for the screen-space
    filter; it goes in a header comment (`gpuforge-filter antialiased 0.1`) that `splat import`
    reads and other readers skip. An antialiased run (the default of `splat train`) must be
    viewed with the same filter (gsplat: rasterize_mode='antialiased', eps2d=0.1); a classic
    3DGS viewer shows it far too dense: train with --classic for those."""
    from gpuforge.plugins.radiance import runs

    r = runs.splat_export(run, run_dir, fmt, out)
    extra = " (trained --antialiased: render it with antialiasing on)" if r["filter"]["antialiased"] else ""
    run.result(r, f"wrote {r['gaussians']} Gaussians -> {out}{extra}")


@command(splat_app, "import", outputs=True)
def splat_import(
    run: Run,
    file: Path = typer.Argument(..., help="Inria 3DGS PLY (from this tool or others)."),
    out: Path = typer.Option(..., "--out", help="Run folder to create."),
    scene: Optional[Path] = typer.Option(None, "--scene", help="Scene whose cameras render and evaluate it."),
    render_out: Optional[Path] = typer.Option(None, "--render",
                                              help="Also render the scene's test views (or a spiral) here."),
    antialiased: Optional[bool] = typer.Option(
        None, "--antialiased/--classic",
        help="The screen-space filter the PLY was trained with (default: what gpuforge's export recorded in the PLY "
             "header, else --classic). --classic: 3DGS / Inria PLYs (0.3 px² dilation); --antialiased: Mip-Splatting "
             "or gsplat's antialiased mode with eps2d 0.1."),
) -> None:
    """Import a 3DGS PLY as a run (then `splat render` / `splat eval` it)."""
    from gpuforge.plugins.radiance import runs

    r = runs.splat_import(run, file, out, scene, render_out, antialiased)
    run.result(r, f"imported {r['gaussians']} Gaussians (SH degree {r['sh_degree']}) -> {out}")


# ============================================================================ nerf
@command(nerf_app, "train", outputs=True, seeded=True, threads=True)
def nerf_train(
    run: Run,
    scene: Path = typer.Argument(..., help="Scene folder (Blender or nerfstudio form)."),
    out: Path = typer.Option(..., "--out"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, max=10_000_000,
                                        help="Optimisation steps (default 3000; with --minutes or --cpu-minutes, as many "
                                             "as the budget allows: the schedule follows the budget)."),
    levels: int = typer.Option(16, "--levels", min=1, max=64),
    features_per_level: int = typer.Option(2, "--features-per-level", min=1, max=8),
    log2_hashmap_size: int = typer.Option(19, "--log2-hashmap-size", min=8, max=24),
    base_resolution: int = typer.Option(16, "--base-resolution", min=2, max=1 << 16),
    max_resolution: int = typer.Option(1024, "--max-resolution", min=2, max=1 << 20),
    batch_rays: int = typer.Option(4096, "--batch-rays", min=1, max=1 << 20,
                                   help="Rays of the first step (the batch then adapts to --target-samples)."),
    target_samples: int = typer.Option(32768, "--target-samples", min=1, max=1 << 24,
                                       help="Samples per step the dynamic ray batch aims for (Instant-NGP)."),
    grid_res: int = typer.Option(32, "--grid-res", min=1, max=256, help="Occupancy grid cells per side."),
    max_samples: int = typer.Option(512, "--max-samples", min=1, max=4096, help="Samples per ray at most."),
    minutes: Optional[float] = _minutes(),
    cpu_minutes: Optional[float] = _cpu_minutes(),
    eval_every: int = _eval_every(),
    view_dirs: bool = typer.Option(True, "--view-dirs/--no-view-dirs", help="View-dependent colour (SH-encoded)."),
    background: str = _bg(),
    ray_jitter: float = typer.Option(0.0, "--ray-jitter", min=0.0, max=1.0,
                                     help="Training rays start at a uniform point of a square this many pixels wide "
                                          "around the pixel centre (0, the default: the centre, where eval and render "
                                          "cast theirs; 1: anywhere in the pixel)."),
    supersample: int = typer.Option(1, "--supersample", min=1, max=8,
                                    help="Each pixel is the mean of S x S rays through its sub-pixel centres, in "
                                         "training and in render/eval (a box-filtered pixel; costs S^2 rays a pixel)."),
) -> None:
    """Train a hash-grid NeRF (Instant-NGP encoding, occupancy-grid ray marching)."""
    from gpuforge.plugins.radiance import runs

    r = runs.nerf_train(run, scene, out, steps, levels, features_per_level, log2_hashmap_size, base_resolution,
                        max_resolution, batch_rays, target_samples, grid_res, max_samples, minutes, cpu_minutes,
                        eval_every, view_dirs, background, ray_jitter, supersample)
    run.result(r, f"trained {r['steps']} steps in {r['train_seconds']} s: test PSNR {r['test_psnr']:.2f} dB -> {out}")


_render_and_eval(nerf_app, "nerf", "NeRF", run_help="NeRF run folder.",
                 speed=lambda r: f"{r['fps']:.2f} frames/s, {r['rays_per_s']:.0f} rays/s")
