"""``gpuforge demo`` section: a small analytic scene, Gaussian splatting and a hash-grid NeRF
trained for about a minute each, test views side by side with the ground truth."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

SPLAT_SECONDS = 60
NERF_SECONDS = 60


def run(ctx, out_dir: Path) -> str:
    import torch
    from PIL import Image

    from gpuforge.plugins.radiance import nerf, splat
    from gpuforge.plugins.radiance.scene import load_scene
    from gpuforge.plugins.radiance.synthetic import make_scene

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    scene_dir = out_dir / "scene"
    scene_dir.mkdir(parents=True, exist_ok=True)
    make_scene(scene_dir, "spheres", views=40, res=64, test_views=4, val_views=1, seed=0)
    sc = load_scene(scene_dir)
    test = sc.split("test")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is faster, and kinder to a shared machine
    try:
        g, s_curve, s_stats = splat.train(sc, splat.SplatConfig(steps=400, init_points=1000, sh_degree=0, densify_every=50),
                                          minutes=SPLAT_SECONDS / 60, eval_every=250)
        s_eval = splat.evaluate(g, test, sc.background)
        model, n_curve, n_stats = nerf.train(
            sc, nerf.NerfConfig(steps=600, log2_hashmap_size=15, max_resolution=256, view_dirs=False,
                                target_samples=16384), minutes=NERF_SECONDS / 60, eval_every=200, eval_views=2)
        n_eval = nerf.evaluate(model, test, sc.background)
        rows = []
        with torch.no_grad():
            for i in range(len(test.cameras)):
                a = g.render(test.cameras, i, sc.background)[0].numpy()
                b = model.render_image(test.cameras, i, sc.background)
                rows.append(np.concatenate([test.images[i], a, b], 1))
    finally:
        torch.set_num_threads(threads)
    grid = np.concatenate(rows, 0)
    Image.fromarray((np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8)).resize(
        (grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(out_dir / "radiance_side_by_side.png")
    total = time.perf_counter() - t0
    return "\n".join([
        "## Radiance fields: Gaussian splatting and hash-grid NeRF",
        "",
        "Analytic 64x64 scene (`gpuforge radiance make-scene`, 40 training views), each method trained for "
        "about a minute on this machine's CPU. Columns: ground truth | splatting | NeRF (test views).",
        "",
        "![side by side](radiance_side_by_side.png)",
        "",
        "| method | train steps | train seconds | test PSNR (dB) | test SSIM |",
        "|---|---|---|---|---|",
        f"| 3D Gaussian splatting ({s_stats['gaussians']} Gaussians) | {s_stats['steps']} | "
        f"{s_stats['train_seconds']} | {s_eval['psnr']:.2f} | {s_eval['ssim']:.4f} |",
        f"| hash-grid NeRF (2^15 table) | {n_stats['steps']} | {n_stats['train_seconds']} | "
        f"{n_eval['psnr']:.2f} | {n_eval['ssim']:.4f} |",
        "",
        f"Total demo time {total:.0f} s. Full runs: `gpuforge radiance splat train SCENE --out RUN` and "
        "`gpuforge radiance nerf train SCENE --out RUN` (see plugins/radiance/README.md).",
    ])
