"""Reproduces two sets of figures in docs/BENCHMARKS.md ("The table scene's softness was the
filters"), run from the repository root:

    python -P docs/radiance_filters.py demo [--out DIR]
        the demo's scene and step counts (`gpuforge demo`: spheres 64x64, 40 views; splat 400
        steps, NeRF 600), each method trained twice, one thread: splat classic vs
        antialiased, NeRF rays jittered over the pixel vs through its centre; test PSNR/SSIM.

    python -P docs/radiance_filters.py swap RUN SCENE
        a trained splat run evaluated over SCENE's test views with its own filter and with
        the others (classic 0.3 px², antialiased 0.3 px² = gsplat's default eps2d, 0.1 px²
        without compensation): what a viewer with the wrong filter shows.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def demo(out: Path) -> None:
    import torch

    from gpuforge.plugins.radiance import nerf, splat
    from gpuforge.plugins.radiance.scene import load_scene
    from gpuforge.plugins.radiance.synthetic import make_scene

    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "transforms_train.json").exists():
        make_scene(out, "spheres", views=40, res=64, test_views=4, val_views=1, seed=0)  # as plugins/radiance/demo.py
    sc = load_scene(out)
    test = sc.split("test")
    for aa in (False, True):
        cfg = splat.SplatConfig(steps=400, init_points=1000, sh_degree=0, densify_every=50,
                                **splat.filter_config(aa, None))
        g, _, st = splat.train(sc, cfg, eval_every=10**9)
        e = splat.evaluate(g, test, sc.background)
        print(f"splat {'antialiased' if aa else 'classic':12s} {st['steps']} steps {len(g)} Gaussians "
              f"PSNR {e['psnr']:.2f} SSIM {e['ssim']:.4f}", flush=True)
    for jitter in (1.0, 0.0):
        cfg = nerf.NerfConfig(steps=600, log2_hashmap_size=15, max_resolution=256, view_dirs=False,
                              target_samples=16384, ray_jitter=jitter)
        m, _, st = nerf.train(sc, cfg, eval_every=10**9, eval_views=1)
        e = nerf.evaluate(m, test, sc.background)
        print(f"nerf  ray_jitter {jitter:.0f}  {st['steps']} steps PSNR {e['psnr']:.2f} SSIM {e['ssim']:.4f}", flush=True)


def swap(run: Path, scene: Path) -> None:
    import torch

    from gpuforge.plugins.radiance import splat
    from gpuforge.plugins.radiance.scene import load_scene

    torch.set_num_threads(1)
    g, _ = splat.load_run(run)
    sc = load_scene(scene)
    test = sc.split("test")
    own = (g.antialiased, g.dilation)
    for aa, d, what in ((own[0], own[1], "its own filter"), (False, 0.3, "classic 0.3"),
                        (True, 0.3, "antialiased 0.3"), (False, 0.1, "0.1, no compensation")):
        g.antialiased, g.dilation = aa, d
        print(f"{what:22s} PSNR {splat.evaluate(g, test, sc.background, with_ssim=False)['psnr']:.2f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    d = sub.add_parser("demo")
    d.add_argument("--out", type=Path, default=Path("radiance-filters-scene"))
    s = sub.add_parser("swap")
    s.add_argument("run", type=Path)
    s.add_argument("scene", type=Path)
    a = ap.parse_args()
    demo(a.out) if a.what == "demo" else swap(a.run, a.scene)


if __name__ == "__main__":
    main()
