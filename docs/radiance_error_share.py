"""Where a trained radiance run's test error lies (issue 20): the share of the squared error
held by the worst 1%, 5% and 20% of the test pixels, the figures in docs/BENCHMARKS.md.

Renders every test view of SCENE with the run (3DGS or hash-grid NeRF, pixel centres, as
`splat eval` / `nerf eval` do), pools the per-pixel squared errors (mean over RGB) and sorts
them. With ``--png`` it also writes render | ground truth | error (square root, scaled to
the view's worst pixel) for the first test view:

    gpuforge radiance make-scene --out table7 --kind table --seed 7
    gpuforge radiance splat train table7 --out run --cpu-minutes 15 --threads 1
    PYTHONSAFEPATH=1 .venv/bin/python docs/radiance_error_share.py table7 run --png err.png

With ``--rod-openings`` (table scenes) it also gives the share of the squared error on the
pixels whose centre ray enters one of the rods through its top (dilated by one pixel):
where scenes made before 2026-12-07, whose rods were open tubes, showed the table through
the rod, a view-dependent transparency no 3-D field can represent.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scene", type=Path)
    ap.add_argument("run", type=Path, help="a `radiance splat train` or `radiance nerf train` run folder")
    ap.add_argument("--png", type=Path, help="write render | truth | error of the first test view here")
    ap.add_argument("--rod-openings", action="store_true",
                    help="also the error share on the pixels that look into a table rod from above")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from gpuforge.plugins.radiance.runs import load_model
    from gpuforge.plugins.radiance.scene import load_scene

    kind = json.loads((a.run / "config.json").read_text()).get("kind", "splat")
    render, _info = load_model(a.run, kind)
    scene = load_scene(a.scene)
    test = scene.split("test")
    cams = test.cameras
    errors, masks = [], []
    for i in range(len(cams)):
        img = render(cams, i, cams.width, cams.height, scene.background)
        err = ((img - test.images[i]) ** 2).mean(-1)
        errors.append(err.ravel())
        if a.rod_openings:
            masks.append(rod_openings(cams, i).ravel())
        if i == 0 and a.png is not None:
            from PIL import Image

            heat = (np.sqrt(err / max(float(err.max()), 1e-12)) * 255).astype(np.uint8)
            row = np.concatenate([(np.clip(img, 0, 1) * 255).astype(np.uint8),
                                  (np.clip(test.images[i], 0, 1) * 255).astype(np.uint8),
                                  np.repeat(heat[..., None], 3, -1)], 1)
            Image.fromarray(row).save(a.png)
    e = np.sort(np.concatenate(errors))[::-1]
    share = np.cumsum(e) / e.sum()
    worst = {f"worst {q:.0%}": round(float(share[max(int(len(e) * q), 1) - 1]), 3) for q in (0.01, 0.05, 0.2)}
    per_view = [float(-10 * np.log10(v.mean())) for v in errors]
    out = {"kind": kind, "views": len(cams), "pixels": int(len(e)), "psnr_mean_of_views": round(
        float(np.mean(per_view)), 3), "share_of_squared_error": worst}
    if a.rod_openings:
        m, err = np.concatenate(masks), np.concatenate(errors)
        out["rod_openings"] = {"pixels": int(m.sum()), "share_of_squared_error": round(float(err[m].sum() / err.sum()),
                                                                                     3)}
    print(json.dumps(out))


def rod_openings(cams, i: int) -> np.ndarray:
    """[H, W] bool: pixels whose centre ray enters a table rod's cylinder above its top and
    leaves it below (it looks down into the rod), dilated by one pixel."""
    from scipy.ndimage import binary_dilation

    from gpuforge.plugins.radiance import synthetic
    from gpuforge.plugins.radiance.scene import pixel_rays

    H, W = cams.height, cams.width
    j, ii = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    o, d = pixel_rays(cams.c2w[i], cams.fx[i], cams.fy[i], cams.cx[i], cams.cy[i], ii.ravel() + 0.5, j.ravel() + 0.5)
    o = np.broadcast_to(o, d.shape)
    m = np.zeros(len(d), bool)
    for (cx, cy), r, _z0, z1, _base in synthetic.RODS:
        ox, oy = o[:, 0] - cx, o[:, 1] - cy
        qa = np.maximum(d[:, 0] ** 2 + d[:, 1] ** 2, 1e-12)
        qb = ox * d[:, 0] + oy * d[:, 1]
        disc = qb * qb - qa * (ox * ox + oy * oy - r * r)
        root = np.sqrt(np.maximum(disc, 0))
        z_in, z_out = o[:, 2] + (-qb - root) / qa * d[:, 2], o[:, 2] + (-qb + root) / qa * d[:, 2]
        m |= (disc > 0) & (z_in > z1) & (z_out < z1)
    return binary_dilation(m.reshape(H, W), iterations=1)


if __name__ == "__main__":
    main()
