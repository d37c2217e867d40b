"""Hash-grid NeRF end to end on a tiny scene: train (few steps), eval, render frames and mp4."""
from __future__ import annotations

import numpy as np
import pytest

from gpuforge.plugins.radiance import synthetic


@pytest.fixture(scope="module")
def trained(tmp_path_factory, run_cli):
    root = tmp_path_factory.mktemp("nerf")
    scene = root / "scene"
    scene.mkdir()
    synthetic.make_scene(scene, "spheres", views=4, res=24, test_views=2, val_views=1, seed=2)
    run = root / "run"
    r = run_cli("radiance", "nerf", "train", str(scene), "--out", str(run), "--steps", "12", "--levels", "4",
                "--log2-hashmap-size", "12", "--base-resolution", "4", "--max-resolution", "64", "--eval-every", "6",
                "--threads", "1", "--json")
    assert r.code == 0, r
    return scene, run, r.json()


def test_train_run_files_and_curve(trained):
    _, run, res = trained
    assert (run / "nerf.safetensors").is_file() and (run / "manifest.json").is_file()
    assert [c["step"] for c in res["curve"]] == [6, 12]
    assert np.isfinite(res["test_psnr"]) and 0 < res["test_ssim"] <= 1


def test_eval_matches_training_report(trained, run_cli):
    _, run, res = trained
    r = run_cli("radiance", "nerf", "eval", str(run), "--json")
    assert r.code == 0, r
    assert r.json()["psnr"] == pytest.approx(res["test_psnr"], abs=1e-6)


def test_render_test_views_and_spiral(trained, run_cli, tmp_path):
    _, run, _ = trained
    r = run_cli("radiance", "nerf", "render", str(run), "--out", str(tmp_path / "f"), "--res", "16", "--json")
    assert r.code == 0, r
    assert r.json()["rays_per_s"] > 0 and len(list((tmp_path / "f").glob("*.png"))) == 2
    r = run_cli("radiance", "nerf", "render", str(run), "--out", str(tmp_path / "v.mp4"), "--views", "spiral",
                "--frames", "3", "--res", "16", "--json")
    assert r.code == 0, r
    assert (tmp_path / "v.mp4").stat().st_size > 0 and (tmp_path / "v.mp4.manifest.json").is_file()


def test_bad_options_and_runs(trained, run_cli, tmp_path):
    scene, run, _ = trained
    r = run_cli("radiance", "nerf", "train", str(scene), "--out", str(tmp_path / "x"), "--log2-hashmap-size", "40")
    assert r.code == 2 and "log2-hashmap-size" in r.stderr and not (tmp_path / "x").exists()
    r = run_cli("radiance", "nerf", "render", str(run), "--out", str(tmp_path / "y"), "--views", "orbit")
    assert r.code == 2
    r = run_cli("radiance", "splat", "eval", str(run))  # a NeRF run is not a splat run
    assert r.code == 3 and "not a splat run" in r.stderr


def test_occupancy_marching_skips_empty_space():
    from gpuforge.plugins.radiance.nerf import NerfConfig, NerfModel

    m = NerfModel(NerfConfig(log2_hashmap_size=10, levels=2, grid_res=8), np.array([[-1.0] * 3, [1.0] * 3]))
    o = np.array([[0, 0, 3.0]], np.float32)
    d = np.array([[0, 0, -1.0]], np.float32)
    full = m.march(o, d, np.zeros(1))
    m.occ[:] = 0
    m.occ[4, 4, 4] = 1  # only the cell just above the centre along the ray
    r, ts, _ = m.march(o, d, np.zeros(1))
    assert len(full[1]) > len(ts) > 0
    assert np.all((3 - ts >= 0) & (3 - ts < 0.25 + 1e-6))


@pytest.mark.parametrize("width", [1.0, 0.5, 0.0])
def test_training_rays_start_within_the_jitter_square(trained, monkeypatch, width):
    """``ray_jitter`` w: a training ray's pixel position is the pixel centre +- w/2 (1: anywhere
    in the pixel, as before; 0: the centre, where evaluation casts its rays)."""
    from gpuforge.plugins.radiance import nerf
    from gpuforge.plugins.radiance.scene import load_scene

    scene, _, _ = trained
    seen = []
    real = nerf.pixel_rays_torch

    def spy(c2w, fx, fy, cx, cy, u, v):
        if u.dim() == 1 and len(u) != 24 * 24:  # training batches (evaluation renders whole 24x24 images)
            seen.append(np.concatenate([u.numpy(), v.numpy()]))
        return real(c2w, fx, fy, cx, cy, u, v)

    monkeypatch.setattr(nerf, "pixel_rays_torch", spy)
    cfg = nerf.NerfConfig(steps=3, levels=2, log2_hashmap_size=10, base_resolution=4, max_resolution=16,
                          batch_rays=512, ray_jitter=width)
    nerf.train(load_scene(scene), cfg, eval_every=100, eval_views=1)
    off = np.concatenate(seen) % 1.0 - 0.5  # offset from the pixel centre
    assert len(off) >= 3 * 256
    assert np.abs(off).max() <= width / 2 + 1e-6
    if width:
        assert np.abs(off).max() > 0.45 * width  # the square is used, not just its centre
