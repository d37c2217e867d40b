"""Scene I/O: camera conventions, the Blender and nerfstudio readers, make-scene, and
malformed scenes (one line, exit 3)."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from gpuforge.plugins.radiance import scene as S
from gpuforge.plugins.radiance import synthetic


def test_opengl_opencv_round_trip_and_axes():
    c2w = S.look_at_opengl([3.0, -2.0, 1.5])
    cv = S.opengl_to_opencv(c2w)
    # OpenGL looks down -Z; OpenCV down +Z: the viewing direction must be the same world vector.
    np.testing.assert_allclose(-c2w[:3, 2], cv[:3, 2])
    np.testing.assert_allclose(c2w[:3, 1], -cv[:3, 1])  # up vs down
    np.testing.assert_allclose(c2w[:3, 0], cv[:3, 0])
    np.testing.assert_allclose(S.opencv_to_opengl(cv), c2w, atol=1e-12)
    # the camera looks at the origin: in OpenCV camera coordinates the origin is straight ahead
    w2c = np.linalg.inv(cv)
    p = w2c @ np.array([0, 0, 0, 1.0])
    assert p[2] > 0 and abs(p[0]) < 1e-9 and abs(p[1]) < 1e-9


def test_colmap_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(5):
        c2w = S.look_at_opengl(rng.normal(size=3) * 4, rng.normal(size=3) * 0.1)
        q, t = S.opengl_c2w_to_colmap(c2w)
        assert abs(np.linalg.norm(q) - 1) < 1e-12 and q[0] >= 0
        np.testing.assert_allclose(S.colmap_to_opengl_c2w(q, t), c2w, atol=1e-9)
    # a COLMAP camera at the origin with identity rotation looks down world +Z (OpenCV)
    c2w = S.colmap_to_opengl_c2w(np.array([1.0, 0, 0, 0]), np.zeros(3))
    np.testing.assert_allclose(-c2w[:3, 2], [0, 0, 1])


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes") / "s"
    out.mkdir()
    synthetic.make_scene(out, "spheres", views=4, res=24, test_views=2, val_views=1, seed=3)
    return out


def test_make_scene_cli_and_loader_match_hand_computed(run_cli, tmp_path):
    out = tmp_path / "scene"
    r = run_cli("radiance", "make-scene", "--out", str(out), "--views", "3", "--res", "20", "--test-views", "2",
                "--val-views", "1", "--seed", "5", "--json")
    assert r.code == 0, r
    assert (out / "manifest.json").is_file() and (out / "train" / "r_0.png").is_file()
    r = run_cli("radiance", "scene-info", str(out), "--cameras", "--json")
    assert r.code == 0, r
    info = r.json()
    assert info["splits"] == {"train": 3, "val": 1, "test": 2}
    fx = 0.5 * 20 / math.tan(0.5 * synthetic.CAMERA_ANGLE_X)  # intrinsics from camera_angle_x
    assert info["fx"] == pytest.approx(fx) and info["fy"] == pytest.approx(fx)
    assert info["cx"] == 10 and info["cy"] == 10
    np.testing.assert_allclose(info["cameras"]["train"]["c2w"], synthetic.poses(3, 5, True), atol=1e-12)
    np.testing.assert_allclose(info["cameras"]["test"]["c2w"], synthetic.poses(2, 7, False), atol=1e-12)
    meta = json.loads((out / "transforms_train.json").read_text())
    assert meta["frames"][0]["file_path"] == "./train/r_0" and "camera_angle_x" in meta


def test_rgba_composited_on_background(small_scene):
    white = S.load_scene(small_scene, "white").split("train")
    black = S.load_scene(small_scene, "black").split("train")
    a = white.alphas[..., None]
    # straight colour x alpha is the same on both backgrounds
    np.testing.assert_allclose(white.images - (1 - a), black.images, atol=1e-6)
    assert (a < 1).any() and (a > 0).any()


def test_nerfstudio_reader_matches_blender(small_scene, tmp_path):
    bl = S.load_scene(small_scene)
    ns = tmp_path / "ns"
    shutil.copytree(small_scene, ns)
    frames = []
    for split in ("train", "test"):
        for k, fr in enumerate(json.loads((small_scene / f"transforms_{split}.json").read_text())["frames"]):
            frames.append({"file_path": f"{split}/r_{k}.png", "transform_matrix": fr["transform_matrix"]})
    fx = 0.5 * 24 / math.tan(0.5 * synthetic.CAMERA_ANGLE_X)
    meta = {"fl_x": fx, "fl_y": fx, "cx": 12.0, "cy": 12.0, "w": 24, "h": 24, "frames": frames,
            "train_filenames": [f["file_path"] for f in frames[:4]],
            "test_filenames": [f["file_path"] for f in frames[4:]]}
    for f in ns.glob("transforms_*.json"):
        f.unlink()
    (ns / "transforms.json").write_text(json.dumps(meta))
    got = S.load_scene(ns)
    assert got.form == "nerfstudio"
    for split in ("train", "test"):
        a, b = bl.split(split), got.split(split)
        np.testing.assert_allclose(a.cameras.c2w, b.cameras.c2w)
        np.testing.assert_allclose(a.cameras.fx, b.cameras.fx)
        np.testing.assert_allclose(a.cameras.cy, b.cameras.cy)
        np.testing.assert_array_equal(a.images, b.images)


def test_rays_go_through_pixel_centres(small_scene):
    sc = S.load_scene(small_scene)
    cams = sc.split("train").cameras
    o, d = S.camera_rays(cams, 0)
    # the centre of the image (between the 4 middle pixels) looks at the origin
    mid = d.reshape(24, 24, 3)[11:13, 11:13].reshape(-1, 3).mean(0)
    to_origin = -o[0] / np.linalg.norm(o[0])
    assert np.dot(mid / np.linalg.norm(mid), to_origin) > 0.9999


def _broken(small_scene, tmp_path, name):
    dst = tmp_path / name
    shutil.copytree(small_scene, dst)
    return dst


@pytest.mark.parametrize("breakage, words", [
    ("missing-image", "image not found"),
    ("bad-matrix", "not orthonormal"),
    ("bad-shape", "shape"),
    ("bad-json", "malformed JSON"),
    ("no-angle", "camera_angle_x"),
    ("no-frames", "frames"),
])
def test_malformed_scenes_one_line_exit_3(run_cli, small_scene, tmp_path, breakage, words):
    d = _broken(small_scene, tmp_path, breakage)
    f = d / "transforms_train.json"
    meta = json.loads(f.read_text())
    if breakage == "missing-image":
        (d / "train" / "r_1.png").unlink()
    elif breakage == "bad-matrix":
        meta["frames"][0]["transform_matrix"][0][0] = 3.0
    elif breakage == "bad-shape":
        meta["frames"][0]["transform_matrix"] = [[1, 0], [0, 1]]
    elif breakage == "no-angle":
        del meta["camera_angle_x"]
    elif breakage == "no-frames":
        del meta["frames"]
    f.write_text("{not json" if breakage == "bad-json" else json.dumps(meta))
    before = sorted(p.name for p in d.rglob("*"))
    r = run_cli("radiance", "scene-info", str(d))
    assert r.code == 3, r
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and words in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in d.rglob("*")) == before  # input untouched


def test_missing_scene_and_bad_kind(run_cli, tmp_path):
    r = run_cli("radiance", "scene-info", str(tmp_path / "nope"))
    assert r.code == 3 and "not found" in r.stderr
    r = run_cli("radiance", "make-scene", "--out", str(tmp_path / "x"), "--kind", "teapot")
    assert r.code == 2 and "teapot" in r.stderr
    assert not (tmp_path / "x").exists()


def test_gaussians_kind_renders_known_gaussians(tmp_path):
    out = tmp_path / "g"
    out.mkdir()
    info = synthetic.make_scene(out, "gaussians", views=1, res=16, test_views=1, val_views=0, seed=0)
    assert info["views"] == {"train": 1, "test": 1} and not (out / "transforms_val.json").exists()
    sp = S.load_scene(out, "black").split("train")
    assert sp.alphas.max() > 0.5 and sp.alphas.min() < 0.1  # content in the middle, empty corners


def test_table_rods_are_closed_solids():
    """A ray looking down a rod hits its cap (the rod's own colour, lit from above), not the
    table through an open tube: the scene must be one a 3-D field can represent."""
    import math

    for (cx, cy), r, z0, z1, base in synthetic.RODS:
        o = np.array([[cx + 0.3 * r, cy - 0.2 * r, 3.0], [cx + 2 * r, cy, 3.0]])
        d = np.array([[0.0, 0.0, -1.0]] * 2)
        rgb, hit = synthetic._shade(o, d, "table")
        assert hit.all()
        band = 0.6 + 0.4 * (math.floor((z1 - 1e-9) * 8) % 2)
        assert np.allclose(rgb[0], synthetic._lambert(np.asarray(base) * band, np.array([[0.0, 0, 1]]))[0])
        assert not np.allclose(rgb[1], rgb[0])  # beside the rod: the table
        # from the side, below the top: the wall, lit by its outward normal
        zm = 0.5 * (z0 + z1)
        rgb2, hit2 = synthetic._shade(np.array([[cx - 2 * r, cy, zm]]), np.array([[1.0, 0, 0]]), "table")
        band2 = 0.6 + 0.4 * (math.floor(zm * 8) % 2)
        assert hit2.all() and np.allclose(rgb2[0], synthetic._lambert(np.asarray(base) * band2,
                                                                        np.array([[-1.0, 0, 0]]))[0])
