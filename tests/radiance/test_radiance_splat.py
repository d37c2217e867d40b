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
