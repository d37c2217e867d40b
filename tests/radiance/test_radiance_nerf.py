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


def test_subpixel_offsets_are_the_sub_pixel_centres():
    from gpuforge.plugins.radiance.nerf import subpixel_offsets

    assert subpixel_offsets(1).tolist() == [[0.5, 0.5]]
    assert sorted(map(tuple, subpixel_offsets(2).tolist())) == [(0.25, 0.25), (0.25, 0.75), (0.75, 0.25),
                                                                 (0.75, 0.75)]
    o3 = subpixel_offsets(3)
    assert o3.shape == (9, 2) and np.allclose(np.unique(o3.numpy()), [1 / 6, 0.5, 5 / 6])


def test_supersampled_render_is_the_box_mean_of_a_finer_render(trained):
    """``supersample`` 2 renders each pixel as the mean of its four sub-pixel centres: the
    same field rendered at twice the resolution and averaged over 2x2 blocks."""
    import dataclasses

    from gpuforge.plugins.radiance import nerf
    from gpuforge.plugins.radiance.scene import load_scene

    scene, run, _ = trained
    model, _ = nerf.load_run(run)
    cams = load_scene(scene).split("test").cameras
    bg = np.ones(3, np.float32)
    fine = model.render_image(cams, 0, bg, W=2 * cams.width, H=2 * cams.height)
    one = model.render_image(cams, 0, bg)
    model.cfg = dataclasses.replace(model.cfg, supersample=2)
    box = model.render_image(cams, 0, bg, chunk=300)  # a chunk that is not a multiple of the image
    want = fine.reshape(cams.height, 2, cams.width, 2, 3).mean((1, 3))
    assert np.allclose(box, want, atol=1e-5)
    assert not np.allclose(box, one, atol=1e-3)  # the field is not flat: the sub-pixels differ


@pytest.mark.parametrize("width", [0.0, 1.0])
def test_supersampled_training_rays_one_per_sub_pixel(trained, monkeypatch, width):
    """With ``supersample`` 2 a pixel's four training rays are consecutive, one in each
    quarter of the pixel (at its centre with ray_jitter 0, anywhere in it with 1)."""
    from gpuforge.plugins.radiance import nerf
    from gpuforge.plugins.radiance.scene import load_scene

    scene, _, _ = trained
    seen = []
    real = nerf.pixel_rays_torch

    def spy(c2w, fx, fy, cx, cy, u, v):
        if c2w.dim() == 3:  # training batches carry one camera per ray
            seen.append(np.stack([u.numpy(), v.numpy()], 1))
        return real(c2w, fx, fy, cx, cy, u, v)

    monkeypatch.setattr(nerf, "pixel_rays_torch", spy)
    cfg = nerf.NerfConfig(steps=2, levels=2, log2_hashmap_size=10, base_resolution=4, max_resolution=16,
                          batch_rays=512, ray_jitter=width, supersample=2)
    nerf.train(load_scene(scene), cfg, eval_every=100, eval_views=1)
    assert len(seen) == 2
    for uv in seen:
        quad = uv.reshape(-1, 4, 2)
        assert np.all(np.floor(quad) == np.floor(quad[:, :1]))  # the four rays share a pixel
        frac = quad % 1.0
        cell = np.floor(frac * 2)  # which quarter
        assert np.all(cell == nerf.subpixel_offsets(2).numpy()[None] * 2 // 1)
        if width == 0:
            assert np.allclose(frac, nerf.subpixel_offsets(2).numpy()[None], atol=1e-5)
        else:
            assert np.abs(frac - nerf.subpixel_offsets(2).numpy()[None]).max() > 0.2


def test_supersample_is_kept_by_the_run(trained, run_cli, tmp_path):
    scene, _, _ = trained
    run = tmp_path / "ss"
    r = run_cli("radiance", "nerf", "train", str(scene), "--out", str(run), "--steps", "3", "--levels", "2",
                "--log2-hashmap-size", "10", "--base-resolution", "4", "--max-resolution", "16", "--supersample", "2",
                "--threads", "1", "--json")
    assert r.code == 0, r
    from gpuforge.plugins.radiance import nerf

    assert nerf.load_run(run)[0].cfg.supersample == 2
    e = run_cli("radiance", "nerf", "eval", str(run), "--json")
    assert e.code == 0 and e.json()["psnr"] == pytest.approx(r.json()["test_psnr"], abs=1e-6)
    f = run_cli("radiance", "nerf", "render", str(run), "--out", str(tmp_path / "f"), "--res", "8", "--json")
    assert f.code == 0 and f.json()["rays_per_pixel"] == 4
    assert f.json()["rays_per_s"] == pytest.approx(4 * f.json()["fps"] * 8 * 8, rel=1e-6)
    r = run_cli("radiance", "nerf", "train", str(scene), "--out", str(tmp_path / "bad"), "--supersample", "0")
    assert r.code == 2 and "supersample" in r.stderr and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("bad", [0, -1, 2.5, "2", True])
def test_damaged_supersample_in_a_run_is_one_clear_line(trained, run_cli, tmp_path, bad):
    import json
    import shutil

    _, run, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    info = json.loads((copy / "config.json").read_text())
    info["config"]["supersample"] = bad
    (copy / "config.json").write_text(json.dumps(info))
    before = (copy / "config.json").read_bytes()
    r = run_cli("radiance", "nerf", "eval", str(copy))
    assert r.code == 3 and "supersample" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r
    assert (copy / "config.json").read_bytes() == before
