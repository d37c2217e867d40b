"""nerfstudio scenes as nerfstudio reads them: camera_model and distortion (OPENCV,
OPENCV_FISHEYE) removed by resampling to pinhole cameras, SfM points (ply_file_path) as
the splat initialisation, the default 90/10 split of frames sorted by name."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gpuforge.plugins.radiance import distortion as D
from gpuforge.plugins.radiance import synthetic
from gpuforge.plugins.radiance.scene import load_scene, split_fraction
from gpuforge.plugins.radiance.splat import psnr


def test_distortion_inverse_and_fisheye_angle_by_hand():
    params = [-0.12, 0.03, -0.004, 0.0005, 0.002, -0.001]
    u = np.random.default_rng(0).uniform(-0.6, 0.6, (500, 2))
    np.testing.assert_allclose(D.undistort_points(D.distort(u, params), params), u, atol=1e-9)
    # OpenCV's fisheye: theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)
    k = [0.05, -0.01, 0.002, -0.0003, 0, 0]
    x = np.array([0.3, 1.2, 3.0])
    theta = np.arctan(x)
    theta_d = theta * (1 + k[0] * theta ** 2 + k[1] * theta ** 4 + k[2] * theta ** 6 + k[3] * theta ** 8)
    np.testing.assert_allclose(D.source_coords(x, np.zeros(3), k, fisheye=True)[:, 0], theta_d, rtol=1e-12)


@pytest.mark.parametrize("model,params", [("OPENCV", [-0.6, 0.2, 0.0, 0.0, 0.01, -0.008]),
                                          ("OPENCV", [0.5, 0.1, 0.0, 0.0, 0.0, 0.0]),
                                          ("OPENCV_FISHEYE", [-0.15, 0.0, 0.0, 0.0, 0.0, 0.0])])
def test_distorted_frames_load_as_the_pinhole_views_they_show(tmp_path, model, params):
    """A distorted capture is loaded as pinhole cameras whose images match a pinhole
    rendering of the same camera; before, the distorted image came with a pinhole camera
    (what `raw` measures: 24-25 dB here, against 34-39 dB now)."""
    from PIL import Image

    res = 96
    synthetic.make_nerfstudio_scene(tmp_path, views=2, res=res, camera_model=model, distortion=params, shuffle=False)
    sc = load_scene(tmp_path)
    assert any("resampled to pinhole" in n for n in sc.notes)
    tr = sc.split("train")
    fx0 = 0.5 * res / math.tan(0.5 * synthetic.CAMERA_ANGLE_X)
    on_white = lambda a: a[..., :3] * a[..., 3:] + (1 - a[..., 3:])  # noqa: E731  (the loader's compositing)
    for i in range(len(tr.cameras)):
        cams = tr.cameras
        assert cams.cx[i] == res / 2 and cams.fx[i] == cams.fy[i]
        now = psnr(tr.images[i], on_white(synthetic.render_spheres(cams.c2w[i], float(cams.fx[i]), res, res)))
        pixels = np.asarray(Image.open(tmp_path / tr.names[i]), np.float32) / 255
        raw = psnr(on_white(pixels), on_white(synthetic.render_spheres(cams.c2w[i], fx0, res, res)))
        assert now > 32 and now > raw + 5, (now, raw)


def test_unsupported_camera_model_is_refused(tmp_path, run_cli):
    synthetic.make_nerfstudio_scene(tmp_path / "s", views=2, res=8, camera_model="EQUIRECTANGULAR")
    r = run_cli("radiance", "scene-info", str(tmp_path / "s"))
    assert r.code == 4 and "EQUIRECTANGULAR" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r


def test_split_is_nerfstudios_90_10_fraction_of_frames_sorted_by_name(tmp_path):
    # nerfstudio: ceil(0.9 n) training frames at linspace(0, n - 1) (int), the rest held out
    assert split_fraction(20, 0.9) == ([0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 19], [9, 18])
    tr, te = split_fraction(100, 0.9)
    assert len(tr) == 90 and te == [9, 19, 29, 39, 49, 59, 69, 79, 89, 98]
    synthetic.make_nerfstudio_scene(tmp_path, views=20, res=8)  # frames listed in shuffled order
    sc = load_scene(tmp_path)
    assert sc.split("test").names == ["images/frame_00010.png", "images/frame_00019.png"]
    assert len(sc.split("train").names) == 18 and sorted(sc.split("train").names) == sc.split("train").names


def test_explicit_split_lists_win(tmp_path):
    synthetic.make_nerfstudio_scene(tmp_path, views=6, res=8)
    meta = json.loads((tmp_path / "transforms.json").read_text())
    names = sorted(f["file_path"] for f in meta["frames"])
    meta["train_filenames"], meta["test_filenames"] = names[:4], names[4:]
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    sc = load_scene(tmp_path)
    assert sc.split("test").names == names[4:] and sc.split("train").names == names[:4]


def test_sfm_points_initialise_the_gaussians(tmp_path, run_cli):
    from plyfile import PlyData

    from gpuforge.plugins.radiance.splat import SH_C0, SplatConfig, Trainer

    synthetic.make_nerfstudio_scene(tmp_path / "s", views=6, res=16, points=300)
    sc = load_scene(tmp_path / "s")
    v = PlyData.read(str(tmp_path / "s" / "sparse_pc.ply"))["vertex"]
    xyz = np.stack([v["x"], v["y"], v["z"]], 1)
    assert sc.points.shape == (300, 3)
    tr = Trainer(sc, SplatConfig(init_points=1000, sh_degree=0))
    assert len(tr.g) == 300  # the SfM points, not 1000 random ones
    np.testing.assert_allclose(tr.g.means.detach().numpy(), xyz, atol=1e-6)
    np.testing.assert_allclose((tr.g.sh_dc[:, 0].detach().numpy() * SH_C0 + 0.5) * 255,
                               np.stack([v["red"], v["green"], v["blue"]], 1), atol=1e-3)
    r = run_cli("radiance", "splat", "train", str(tmp_path / "s"), "--out", str(tmp_path / "run"), "--steps", "2",
                "--eval-every", "2", "--sh-degree", "0", "--json")
    assert r.code == 0, r
    assert r.json()["init"] == "300 SfM points"


def test_bad_sfm_points_are_refused(tmp_path, run_cli):
    from plyfile import PlyData, PlyElement

    synthetic.make_nerfstudio_scene(tmp_path / "s", views=3, res=8, points=10)
    arr = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    arr["x"][1] = math.nan
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(tmp_path / "s" / "sparse_pc.ply"))
    r = run_cli("radiance", "scene-info", str(tmp_path / "s"))
    assert r.code == 3 and "NaN" in r.stderr, r
