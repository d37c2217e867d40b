"""Where a trained radiance run's test error lies (issue 20): the share of the squared error
held by the worst 1%, 5% and 20% of the test pixels, the figures in docs/BENCHMARKS.md.

Renders every test view of SCENE with the run (3DGS or hash-grid NeRF, pixel centres, as
`splat eval` / `nerf eval` do), pools the per-pixel squared errors (mean over RGB) and sorts
them. With ``--png`` it also writes render | ground truth | error (square root, scaled to
the view's worst pixel) for the first test view:

    gpuforge radiance make-scene --out table7 --kind table --seed 7
    gpuforge radiance splat train table7 --out run --cpu-minutes 15 --threads 1
    PYTHONSAFEPATH=1 .venv/bin/python docs/radiance_error_share.py table7 run --png err.png
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
    a = ap.parse_args()
    torch.set_num_threads(1)
    from gpuforge.plugins.radiance.runs import load_model
    from gpuforge.plugins.radiance.scene import load_scene

    kind = json.loads((a.run / "config.json").read_text()).get("kind", "splat")
    render, _info = load_model(a.run, kind)
    scene = load_scene(a.scene)
    test = scene.split("test")
    cams = test.cameras
    errors = []
    for i in range(len(cams)):
        img = render(cams, i, cams.width, cams.height, scene.background)
        err = ((img - test.images[i]) ** 2).mean(-1)
        errors.append(err.ravel())
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
    print(json.dumps({"kind": kind, "views": len(cams), "pixels": int(len(e)), "psnr_mean_of_views": round(
        float(np.mean(per_view)), 3), "share_of_squared_error": worst}))


if __name__ == "__main__":
    main()
