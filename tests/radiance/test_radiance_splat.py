"""Gaussian splatting end to end on a tiny scene: train, eval, render, Inria PLY
export/import (exact field names; import(export(x)) renders identically)."""
from __future__ import annotations

import numpy as np
import pytest

from gpuforge.plugins.radiance import synthetic


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("splat") / "scene"
    out.mkdir()
    synthetic.make_scene(out, "spheres", views=6, res=32, test_views=2, val_views=1, seed=1)
    return out


@pytest.fixture(scope="module")
def trained(scene, run_cli, tmp_path_factory):
    run = tmp_path_factory.mktemp("splat-run") / "run"
    r = run_cli("radiance", "splat", "train", str(scene), "--out", str(run), "--steps", "60", "--init-points", "300",
                "--eval-every", "30", "--sh-degree", "1", "--threads", "1", "--json")
    assert r.code == 0, r
    return run, r.json()


def test_train_writes_run_and_curve(trained):
    run, res = trained
    assert (run / "gaussians.safetensors").is_file() and (run / "manifest.json").is_file()
    assert [c["step"] for c in res["curve"]] == [30, 60]
    assert res["test_psnr"] > 12  # far from converged, but clearly better than a blank image


def test_export_ply_field_names_and_import_renders_identically(trained, run_cli, scene, tmp_path):
    from plyfile import PlyData

    from gpuforge.plugins.radiance import splat
    from gpuforge.plugins.radiance.scene import load_scene

    run, _ = trained
    ply = tmp_path / "g.ply"
    r = run_cli("radiance", "splat", "export", str(run), "--format", "ply", "--out", str(ply), "--json")
    assert r.code == 0, r
    v = PlyData.read(str(ply))["vertex"]
    names = [p.name for p in v.properties]
    assert names == (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                     + [f"f_rest_{i}" for i in range(9)]
                     + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    g, _ = splat.load_run(run)
    # log scales and logit opacity are stored as is (the Inria convention)
    np.testing.assert_array_equal(np.asarray(v["scale_1"]), g.log_scales[:, 1].numpy())
    np.testing.assert_array_equal(np.asarray(v["opacity"]), g.opacity_logit.numpy())
    np.testing.assert_array_equal(np.asarray(v["f_rest_4"]), g.sh_rest[:, 1, 1].numpy())  # channel-major f_rest
    imp = tmp_path / "imp"
    r = run_cli("radiance", "splat", "import", str(ply), "--out", str(imp), "--scene", str(scene), "--json")
    assert r.code == 0, r
    g2, _ = splat.load_run(imp)
    sc = load_scene(scene)
    cams = sc.split("test").cameras
    for i in range(len(cams)):
        a = g.render(cams, i, sc.background)[0].numpy()
        b = g2.render(cams, i, sc.background)[0].numpy()
        np.testing.assert_array_equal(a, b)
    ev = [run_cli("radiance", "splat", "eval", str(r), "--json") for r in (run, imp)]
    assert all(e.code == 0 for e in ev), ev
    assert ev[0].json()["psnr"] == ev[1].json()["psnr"]


def test_render_frames_and_mp4(trained, run_cli, tmp_path):
    run, _ = trained
    r = run_cli("radiance", "splat", "render", str(run), "--out", str(tmp_path / "frames"), "--json")
    assert r.code == 0, r
    assert len(list((tmp_path / "frames").glob("frame_*.png"))) == 2
    r = run_cli("radiance", "splat", "render", str(run), "--out", str(tmp_path / "s.mp4"), "--views", "spiral",
                "--frames", "6", "--res", "48", "--json")
    assert r.code == 0, r
    import av

    with av.open(str(tmp_path / "s.mp4")) as f:
        assert f.streams.video[0].frames == 6 and f.streams.video[0].width == 48
    r = run_cli("radiance", "splat", "render", str(run), "--out", str(tmp_path / "frames"))
    assert r.code == 3 and "--force" in r.stderr


def test_bad_inputs(trained, run_cli, tmp_path):
    run, _ = trained
    r = run_cli("radiance", "splat", "export", str(run), "--format", "obj", "--out", str(tmp_path / "x.obj"))
    assert r.code == 2 and "ply" in r.stderr
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"not a ply at all")
    r = run_cli("radiance", "splat", "import", str(bad), "--out", str(tmp_path / "i"))
    assert r.code == 3 and "PLY" in r.stderr and not (tmp_path / "i").exists()
    from plyfile import PlyData, PlyElement

    arr = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(tmp_path / "points.ply"))
    r = run_cli("radiance", "splat", "import", str(tmp_path / "points.ply"), "--out", str(tmp_path / "i"))
    assert r.code == 4 and "not an Inria 3DGS PLY" in r.stderr
    r = run_cli("radiance", "splat", "eval", str(tmp_path))
    assert r.code == 3 and "run" in r.stderr


def test_sh_matches_inria_degree0_convention():
    import torch

    from gpuforge.plugins.radiance.splat import SH_C0, eval_sh

    sh = torch.randn(5, 16, 3)
    d = torch.nn.functional.normalize(torch.randn(5, 3), dim=1)
    np.testing.assert_allclose(eval_sh(0, sh, d).numpy(), (SH_C0 * sh[:, 0]).numpy())
    # degree 1 adds -C1*y*sh1 + C1*z*sh2 - C1*x*sh3
    c1 = 0.4886025119029199
    exp = SH_C0 * sh[:, 0] - c1 * d[:, 1:2] * sh[:, 1] + c1 * d[:, 2:3] * sh[:, 2] - c1 * d[:, 0:1] * sh[:, 3]
    np.testing.assert_allclose(eval_sh(1, sh, d).numpy(), exp.numpy(), atol=1e-6)


def test_ssim_window_is_the_11x11_gaussian_and_agrees_with_scikit_image():
    """The loss's separable blur is the 11x11 Gaussian window: away from the borders (where
    the padding differs) the SSIM map is scikit-image's (gaussian_weights, sigma 1.5, the
    population covariance, which 3DGS's loss uses), and value and gradient equal the
    full 2-D window's."""
    import torch
    from skimage.metrics import structural_similarity

    from gpuforge.plugins.radiance.splat import ssim_map, ssim_torch

    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 1, (40, 48, 3)).astype(np.float32)
    img = np.clip(gt + rng.normal(0, 0.1, gt.shape), 0, 1).astype(np.float32)
    ours = float(ssim_map(torch.from_numpy(img), torch.from_numpy(gt))[:, 5:-5, 5:-5].mean())
    ref = structural_similarity(img.astype(np.float64), gt.astype(np.float64), gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False, data_range=1.0, channel_axis=-1)
    assert abs(ours - ref) < 1e-5 and 0.2 < ref < 0.95

    # the full 11x11 window, as a 2-D convolution: same value, same gradient
    k = torch.exp(-((torch.arange(11) - 5) ** 2).double() / (2 * 1.5 ** 2))
    win = ((k[:, None] * k[None, :]) / k.sum() ** 2)[None, None].repeat(3, 1, 1, 1)

    def full(a, b):
        x, y = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]
        conv = lambda z: torch.nn.functional.conv2d(z, win, padding=5, groups=3)  # noqa: E731
        mx, my = conv(x), conv(y)
        sxx, syy, sxy = conv(x * x) - mx * mx, conv(y * y) - my * my, conv(x * y) - mx * my
        c1, c2 = 0.01 ** 2, 0.03 ** 2
        return (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))).mean()

    a32 = torch.from_numpy(img).requires_grad_(True)
    a64 = torch.from_numpy(img).double().requires_grad_(True)
    s32, s64 = ssim_torch(a32, torch.from_numpy(gt)), full(a64, torch.from_numpy(gt).double())
    s32.backward()
    s64.backward()
    assert abs(float(s32.detach()) - float(s64.detach())) < 1e-6
    np.testing.assert_allclose(a32.grad.numpy(), a64.grad.numpy(), atol=1e-8, rtol=1e-3)
    assert float(ssim_torch(torch.from_numpy(gt), torch.from_numpy(gt))) == pytest.approx(1.0, abs=1e-6)


def test_densification_starts_at_step_500_or_15_percent_whichever_first(scene):
    """3DGS densifies from step 500; a budgeted run of several thousand steps used to wait
    for 15% of its budget (~1900 steps at 15 CPU-minutes) with the random initial Gaussians."""
    from gpuforge.plugins.radiance.scene import load_scene
    from gpuforge.plugins.radiance.splat import SplatConfig, Trainer

    tr = Trainer(load_scene(scene), SplatConfig(steps=10_000, init_points=50))
    assert not tr.densify_due(400, 0.04) and tr.densify_due(500, 0.05)  # long run: step 500
    assert not tr.densify_due(550, 0.05)  # every densify_every steps
    assert tr.densify_due(300, 0.15) and not tr.densify_due(200, 0.10)  # short run: 15% first
    assert not tr.densify_due(6000, 0.6)  # the window ends at densify_until_frac
