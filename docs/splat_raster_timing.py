"""Before/after of the numba-cpu splat rasterizer in one process (issue 20, commit 4453d62).

Loads ``plugins/radiance/rasterize.py`` from this tree and from another checkout (e.g. the
commit before the change), times forward and backward on one thread, 128x128, 5000 and
30,000 random Gaussians, in turns, and checks that every output is bit-identical:

    git worktree add /tmp/before 3f4ba3e
    PYTHONSAFEPATH=1 .venv/bin/python docs/splat_raster_timing.py --before /tmp/before

Without ``--before`` it times this tree only. The module loaded from a path needs only
numpy and numba, so no second install is needed.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import numba
import numpy as np


def load(tree: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, tree / "plugins" / "radiance" / "rasterize.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def inputs(R, n: int, scale: float, W: int = 128):
    from gpuforge.plugins.radiance.kernel_cases import camera, random_gaussians

    m, s, q, c, o = random_gaussians(n, 0, spread=0.8)
    view, K = camera(W, W)
    m2d, con, d, r = R.gs_project_cpu(m, s * 0.5 * scale, q, view, K, W, W)
    ranges, ids = R.gs_bin_tiles_cpu(m2d, r, d, W, W)
    return (m2d, con, c, o, ranges, ids, W, W, np.ones(3, np.float32))


def run(R, args, gimg):
    t0 = time.process_time()
    img, T, nc = R.gs_rasterize_fwd_cpu(*args)
    t1 = time.process_time()
    grads = R.gs_rasterize_bwd_cpu(*args, T, nc, gimg)
    t2 = time.process_time()
    return t1 - t0, t2 - t1, (img, T, nc, *grads)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", type=Path, help="another checkout's root (the code before the change)")
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    numba.set_num_threads(1)
    mods = {"this tree": load(Path(__file__).resolve().parents[1], "raster_after")}
    if a.before:
        mods["before"] = load(a.before, "raster_before")
    for n, scale in ((5000, 1.0), (30000, 0.4)):
        args = inputs(mods["this tree"], n, scale)
        gimg = np.random.default_rng(1).standard_normal((128, 128, 3)).astype(np.float32)
        best = {k: [np.inf, np.inf] for k in mods}
        outs = {}
        for k, R in mods.items():
            outs[k] = run(R, args, gimg)[2]  # compile, and the outputs to compare
        for _ in range(a.repeat):
            for k, R in mods.items():  # in turns
                f, b, _ = run(R, args, gimg)
                best[k] = [min(best[k][0], f), min(best[k][1], b)]
        print(f"{n} Gaussians, {len(args[5])} tile entries, one thread (best of {a.repeat}, CPU ms):")
        for k, (f, b) in best.items():
            print(f"  {k:10s} forward {f * 1e3:7.2f}  backward {b * 1e3:7.2f}")
        if a.before:
            same = all(np.array_equal(x, y) for x, y in zip(outs["this tree"], outs["before"]))
            (fa, ba), (fb, bb) = best["this tree"], best["before"]
            print(f"  speed-up  forward {fb / fa:.2f}x  backward {bb / ba:.2f}x; outputs bit-identical: {same}")


if __name__ == "__main__":
    main()
