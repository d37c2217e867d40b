"""Where a 3DGS training step's CPU time goes (issue 20): the figures in docs/BENCHMARKS.md.

Loads a scene, optionally replaces the Gaussians by a trained run's, and profiles training
steps with ``torch.profiler`` on one thread (no densification while timed), then times the
SSIM of the loss (forward + backward) on one 128x128 view:

    gpuforge radiance make-scene --out table7 --kind table --seed 7
    gpuforge radiance splat train table7 --out run --cpu-minutes 15 --threads 1
    PYTHONSAFEPATH=1 .venv/bin/python docs/splat_step_profile.py table7 --run run

Without ``--run`` it first trains ``--warm`` steps from the random initialisation.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numba
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scene", type=Path)
    ap.add_argument("--run", type=Path, help="a splat run whose Gaussians to time (else --warm steps first)")
    ap.add_argument("--warm", type=int, default=600)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    numba.set_num_threads(1)
    torch.set_num_threads(1)
    from torch.profiler import ProfilerActivity, profile

    from gpuforge.plugins.radiance.scene import load_scene
    from gpuforge.plugins.radiance.splat import SplatConfig, Trainer, load_run, ssim_torch

    scene = load_scene(a.scene)
    tr = Trainer(scene, SplatConfig(steps=10 * (a.warm + a.steps)))
    if a.run:
        tr.g, _ = load_run(a.run)
        tr._make_optimizer()
        tr._reset_stats()
    else:
        for it in range(1, a.warm + 1):
            tr.step(it, 0.59 * it / a.warm)
    tr.cfg.densify_until_frac = 0.0  # time a fixed model
    for it in range(1, 4):
        tr.step(it, 0.9)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.process_time()
        for it in range(4, 4 + a.steps):
            tr.step(it, 0.9)
        dt = time.process_time() - t0
    print(f"{len(tr.g)} Gaussians: {dt / a.steps * 1e3:.1f} CPU ms a step over {a.steps} steps")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))

    img = torch.rand(128, 128, 3, requires_grad=True)
    gt = torch.rand(128, 128, 3)
    for _ in range(3):
        ssim_torch(img, gt).backward()
    t0 = time.process_time()
    for _ in range(50):
        img.grad = None
        ssim_torch(img, gt).backward()
    print(f"SSIM of the loss, 128x128, forward + backward: {(time.process_time() - t0) / 50 * 1e3:.2f} CPU ms")


if __name__ == "__main__":
    main()
