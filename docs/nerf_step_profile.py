"""Where a hash-grid NeRF training step's CPU time goes (issue 20): the profile quoted in
docs/BENCHMARKS.md.

Trains 20 steps to compile the kernels, then profiles ``--steps`` training steps with
cProfile on one thread (torch and Numba), no evaluation in between:

    gpuforge radiance make-scene --out table7 --kind table --seed 7
    PYTHONSAFEPATH=1 .venv/bin/python docs/nerf_step_profile.py table7 --log2-hashmap-size 17
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

import numba
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scene", type=Path)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--log2-hashmap-size", type=int, default=19)
    ap.add_argument("--max-resolution", type=int, default=1024)
    a = ap.parse_args()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    from gpuforge.plugins.radiance import nerf
    from gpuforge.plugins.radiance.scene import load_scene

    scene = load_scene(a.scene)
    opts = dict(log2_hashmap_size=a.log2_hashmap_size, max_resolution=a.max_resolution)
    nerf.train(scene, nerf.NerfConfig(steps=20, **opts), eval_every=10**9)
    prof = cProfile.Profile()
    t0 = time.process_time()
    prof.enable()
    nerf.train(scene, nerf.NerfConfig(steps=a.steps, **opts), eval_every=10**9)
    prof.disable()
    print(f"{(time.process_time() - t0) / a.steps:.4f} CPU s per step ({a.steps} steps, one thread)")
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
