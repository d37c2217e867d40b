"""Rows of tests/command_table.py for the radiance plugin: training and rendering of
Gaussian splats and hash-grid NeRFs on an 8x8-pixel scene (3 training views, 1 test
view), a few steps, so that the CUDA simulator runs each in seconds.

Tolerances (CPU run vs simulated CUDA run): the numba-cpu and numba-cuda kernels do
the same float32/float64 arithmetic but sum in different orders (atomics on CUDA), so
floats differ by rounding: trained parameters by at most 1e-4 after two steps, test
PSNR by at most 1e-3 dB, rendered 8-bit frames by at most 1 level. Integer results
(Gaussian counts, samples per step, ray batch sizes) are identical.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def scene(folder: Path) -> Path:
    from gpuforge.plugins.radiance import synthetic

    out = folder / "scene"
    out.mkdir()
    synthetic.make_scene(out, "spheres", views=3, res=8, test_views=1, val_views=0, seed=0)
    return out


def splat_run(folder: Path) -> None:
    """The scene and a splat run of 30 known Gaussians (SH degree 1) to render."""
    import torch

    from gpuforge.plugins.radiance import splat, synthetic

    sc = scene(folder)
    k = synthetic.known_gaussians(seed=3, n=30)
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    rest = torch.zeros((30, 3, 3))
    rest[:, 0] = 0.3  # a little view dependence, so SH evaluation is exercised
    g = splat.Gaussians(t(k["means"]), t(np.log(k["scales"])), t(k["quats"]),
                        t((k["colors"] - 0.5) / splat.SH_C0)[:, None, :], rest,
                        t(np.log(k["opacities"] / (1 - k["opacities"]))), 1)
    (folder / "run").mkdir()
    splat.save_run(folder / "run", g, {"scene": str(sc.resolve()), "background_arg": None})


def nerf_run(folder: Path) -> None:
    """The scene and an untrained NeRF whose occupancy grid was updated once (on the CPU)."""
    import torch

    from gpuforge.plugins.radiance import nerf

    sc = scene(folder)
    cfg = nerf.NerfConfig(levels=2, log2_hashmap_size=8, base_resolution=4, max_resolution=16, grid_res=4,
                          max_samples=12)
    model = nerf.NerfModel(cfg, np.array([[-1.25] * 3, [1.25] * 3]))
    with torch.no_grad():
        model.table.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
    model.update_grid(torch.Generator().manual_seed(0))
    (folder / "run").mkdir()
    nerf.save_run(folder / "run", model, {"scene": str(sc.resolve()), "background_arg": None})


def _tensors(path: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(path))


def same_training(weights: str, atol: float):
    def check(cpu: Path, cuda: Path) -> None:
        a, b = json.loads((cpu / "metrics.json").read_text()), json.loads((cuda / "metrics.json").read_text())
        assert abs(a["test_psnr"] - b["test_psnr"]) <= 1e-3, (a["test_psnr"], b["test_psnr"])
        assert a["steps"] == b["steps"] and a.get("gaussians") == b.get("gaussians")
        for ca, cb in zip(a["curve"], b["curve"]):  # integers: Gaussians, rays, samples per step
            assert {k: v for k, v in ca.items() if isinstance(v, int)} == \
                {k: v for k, v in cb.items() if isinstance(v, int)}
        ta, tb = _tensors(cpu / weights), _tensors(cuda / weights)
        assert ta.keys() == tb.keys()
        for k in ta:
            np.testing.assert_allclose(ta[k], tb[k], atol=atol, rtol=0, err_msg=k)

    return check


def same_frames(cpu: Path, cuda: Path) -> None:
    from PIL import Image

    names = sorted(p.name for p in cpu.glob("frame_*.png"))
    assert names and names == sorted(p.name for p in cuda.glob("frame_*.png"))
    for n in names:
        x = np.asarray(Image.open(cpu / n)).astype(int)
        y = np.asarray(Image.open(cuda / n)).astype(int)
        assert x.shape == y.shape and np.abs(x - y).max() <= 1, (n, np.abs(x - y).max())


SPLAT = frozenset({"radiance.gs_project", "radiance.gs_bin_tiles", "radiance.gs_rasterize_fwd"})
NERF = frozenset({"radiance.march_rays", "radiance.hash_encode", "radiance.composite_fwd"})

ROWS = [
    # (id, make, args, kernels, out, compare)
    ("radiance splat train", scene,
     ["radiance", "splat", "train", "{dir}/scene", "--out", "{out}", "--steps", "2", "--init-points", "16",
      "--eval-every", "2", "--sh-degree", "1"],
     SPLAT | {"radiance.gs_rasterize_bwd", "kernels.pairwise_topk"}, "run", same_training("gaussians.safetensors", 1e-4)),
    ("radiance splat render", splat_run, ["radiance", "splat", "render", "{dir}/run", "--out", "{out}"],
     SPLAT, "frames", same_frames),
    ("radiance nerf train", scene,
     ["radiance", "nerf", "train", "{dir}/scene", "--out", "{out}", "--steps", "2", "--levels", "2",
      "--log2-hashmap-size", "8", "--base-resolution", "4", "--max-resolution", "16", "--batch-rays", "16",
      "--target-samples", "256", "--grid-res", "4", "--max-samples", "12", "--eval-every", "2"],
     NERF | {"radiance.hash_encode_bwd", "radiance.composite_bwd"}, "run", same_training("nerf.safetensors", 1e-4)),
    ("radiance nerf render", nerf_run, ["radiance", "nerf", "render", "{dir}/run", "--out", "{out}"],
     NERF, "frames", same_frames),
]
