"""Bad and hostile inputs to every radiance command: the documented exit code, one error
line on stderr, no traceback, nothing written, and the inputs' bytes unchanged.

Each case runs the CLI in a fresh process against a folder holding a tiny scene, a
splat run, a NeRF run and some broken files; the folder's files are hashed before and
after. The cases are listed in plugins/radiance/README.md ("Bad input")."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest


def _tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _ply(path: Path, n: int = 4, **override) -> None:
    from plyfile import PlyData, PlyElement

    from gpuforge.plugins.radiance.splat import ply_field_names

    names = ply_field_names(0)
    arr = np.zeros(n, dtype=[(nm, "f4") for nm in names])
    arr["rot_0"] = 1
    arr["scale_0"] = arr["scale_1"] = arr["scale_2"] = -3
    for k, (i, v) in override.items():
        arr[k][i] = v
    PlyData([PlyElement.describe(arr, "vertex")]).write(str(path))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A folder with a scene, runs and broken inputs (built once; copied per case)."""
    import torch

    from gpuforge.plugins.radiance import nerf, splat, synthetic

    root = tmp_path_factory.mktemp("bad-inputs")
    sc = root / "scene"
    sc.mkdir()
    synthetic.make_scene(sc, "spheres", views=3, res=8, test_views=1, val_views=0, seed=0)
    g = splat.init_gaussians(20, np.array([[-1.0] * 3, [1.0] * 3]), 0, 0)
    (root / "splat").mkdir()
    splat.save_run(root / "splat", g, {"scene": str(sc.resolve()), "background_arg": None})
    model = nerf.NerfModel(nerf.NerfConfig(levels=2, log2_hashmap_size=8, grid_res=4), np.array([[-1.25] * 3,
                                                                                                 [1.25] * 3]))
    model.update_grid(torch.Generator().manual_seed(0))
    (root / "nerf").mkdir()
    nerf.save_run(root / "nerf", model, {"scene": str(sc.resolve()), "background_arg": None})
    _ply(root / "nan.ply", f_dc_1=(2, float("nan")))
    _ply(root / "inf.ply", scale_2=(1, float("inf")))
    _ply(root / "zero-rot.ply", rot_0=(3, 0.0))
    good = root / "good.ply"
    _ply(good)
    (root / "truncated.ply").write_bytes(good.read_bytes()[:-37])
    header = good.read_bytes().split(b"end_header\n")[0].replace(b"element vertex 4", b"element vertex 99999999999")
    (root / "junk.ply").write_bytes(header + b"end_header\n" + b"\0" * 64)  # claims 10^11 vertices
    (root / "text.ply").write_text("not a ply at all")
    from plyfile import PlyData, PlyElement

    pts = np.zeros(3, dtype=[("x", "f4"), ("y", "f4"), ("z", "f4")])
    PlyData([PlyElement.describe(pts, "vertex")]).write(str(root / "points.ply"))
    # scenes broken in one way each
    for name, edit in (("scene-badjson", lambda d: (d / "transforms_train.json").write_text("{not json")),
                       ("scene-noimage", lambda d: (d / "train" / "r_1.png").unlink()),
                       ("scene-scaled", lambda d: _edit_json(d, lambda m: m["frames"][0].update(
                           transform_matrix=(np.diag([2.0, 2, 2, 1])).tolist()))),
                       ("scene-noangle", lambda d: _edit_json(d, lambda m: m.pop("camera_angle_x"))),
                       ("scene-badimage", lambda d: (d / "train" / "r_0.png").write_bytes(b"\x89PNG broken"))):
        shutil.copytree(sc, root / name)
        edit(root / name)
    (root / "a-file").write_text("x")
    return root


def _edit_json(scene: Path, fn) -> None:
    f = scene / "transforms_train.json"
    meta = json.loads(f.read_text())
    fn(meta)
    f.write_text(json.dumps(meta))


S = "{d}/scene"


def _import(ply: str) -> list[str]:
    return ["splat", "import", "{d}/" + ply, "--out", "{d}/o"]


def _train(kind: str, scene: str = S, *options: str) -> list[str]:
    return [kind, "train", scene, "--out", "{d}/o", *options]


CASES = [
    # (id, args, exit code, a word the message must contain)
    ("ply with NaN", _import("nan.ply"), 3, "NaN"),
    ("ply with inf", _import("inf.ply"), 3, "NaN/inf"),
    ("ply zero quaternion", _import("zero-rot.ply"), 3, "quaternion"),
    ("ply truncated", _import("truncated.ply"), 3, "PLY"),
    ("ply huge vertex count", _import("junk.ply"), 3, "PLY"),
    ("ply not a ply", _import("text.ply"), 3, "PLY"),
    ("ply without 3DGS fields", _import("points.ply"), 4, "Inria"),
    ("ply missing", _import("none.ply"), 3, "not found"),
    ("render out of memory", ["splat", "render", "{d}/splat", "--out", "{d}/o", "--res", "200000"], 3, "--res"),
    ("nerf render out of memory", ["nerf", "render", "{d}/nerf", "--out", "{d}/o.mp4", "--res", "200000"], 3,
     "--res"),
    ("eval-every 0", _train("splat", S, "--eval-every", "0"), 2, "--eval-every"),
    ("steps 0", _train("nerf", S, "--steps", "0"), 2, "--steps"),
    ("sh-degree 4", _train("splat", S, "--sh-degree", "4"), 2, "--sh-degree"),
    ("threads 0", _train("splat", S, "--threads", "0"), 2, "--threads"),
    ("seed -1", _train("nerf", S, "--seed", "-1"), 2, "--seed"),
    ("minutes -1", _train("splat", S, "--minutes", "-1"), 2, "--minutes"),
    ("log2-hashmap-size 99", _train("nerf", S, "--log2-hashmap-size", "99"), 2, "--log2-hashmap-size"),
    ("max below base resolution", _train("nerf", S, "--base-resolution", "64", "--max-resolution", "32"), 2,
     "--max-resolution"),
    ("frames 0", ["splat", "render", "{d}/splat", "--out", "{d}/o", "--views", "spiral", "--frames", "0"], 2,
     "--frames"),
    ("views orbit", ["nerf", "render", "{d}/nerf", "--out", "{d}/o", "--views", "orbit"], 2, "--views"),
    ("export format obj", ["splat", "export", "{d}/splat", "--format", "obj", "--out", "{d}/o.obj"], 2, "ply"),
    ("scene kind unknown", ["make-scene", "--out", "{d}/o", "--kind", "teapot"], 2, "--kind"),
    ("scene res 4", ["make-scene", "--out", "{d}/o", "--res", "4"], 2, "--res"),
    ("scene missing", _train("splat", "{d}/nowhere"), 3, "not found"),
    ("scene bad json", _train("splat", "{d}/scene-badjson"), 3, "JSON"),
    ("scene image missing", _train("nerf", "{d}/scene-noimage"), 3, "r_1"),
    ("scene image broken", _train("splat", "{d}/scene-badimage"), 3, "r_0"),
    ("scene scaled camera", _train("splat", "{d}/scene-scaled"), 3, "orthonormal"),
    ("scene no camera_angle_x", ["scene-info", "{d}/scene-noangle"], 3, "camera_angle_x"),
    ("background out of range", _train("splat", S, "--background", "2,0,0"), 3, "background"),
    ("nerf eval of a splat run", ["nerf", "eval", "{d}/splat"], 3, "not a NeRF run"),
    ("splat eval of a scene", ["splat", "eval", S], 3, "run"),
    ("output exists", ["splat", "export", "{d}/splat", "--out", "{d}/a-file"], 3, "--force"),
    ("output is the input", ["splat", "import", "{d}/good.ply", "--out", "{d}/good.ply", "--force"], 3, "input"),
    ("output inside the scene", ["splat", "train", S, "--out", "{d}/scene/run", "--force"], 3, "input"),
    ("output under a file", ["splat", "export", "{d}/splat", "--out", "{d}/a-file/x.ply"], 3, "a-file"),
    ("plan splat gaussians -1", ["@plan", "radiance", "splat", "--gaussians", "-1"], 3, "--gaussians"),
    ("plan nerf table 2^99", ["@plan", "radiance", "nerf", "--log2-hashmap-size", "99"], 3, "--log2-hashmap-size"),
    ("plan splat not a number", ["@plan", "radiance", "splat", "--res", "big"], 3, "--res"),
    ("plan unknown option", ["@plan", "radiance", "nerf", "--gaussians", "5"], 2, "--gaussians"),
]


def _argv(args, d: Path) -> list[str]:
    argv = [a.format(d=d) for a in args]
    return ["plan", *argv[1:]] if argv[0] == "@plan" else ["radiance", *argv]


@pytest.fixture
def case_dir(inputs, tmp_path) -> tuple[Path, dict[str, str]]:
    """A fresh copy of the inputs (with an empty config folder) and its hashes."""
    d = tmp_path / "in"
    shutil.copytree(inputs, d)
    (d / "config").mkdir()
    return d, _tree(d)


def _check(case, code: int, stderr: str, d: Path, before: dict, tmp_path: Path) -> None:
    _, _, want, word = case
    shown = f"exit {code}; stderr:\n{stderr}"
    assert code == want, shown
    assert "Traceback" not in stderr and "internal error" not in stderr, shown
    errors = [ln for ln in stderr.splitlines() if re.match(r"(?i)^error:", ln)]
    if stderr.startswith("Usage:"):  # click's parser: a usage block around one error line
        assert len(errors) == 1, shown
    else:  # gpuforge's own errors: exactly one line
        assert len(stderr.strip().splitlines()) == 1 and len(errors) == 1, shown
    assert word.lower() in errors[0].lower(), shown
    assert _tree(d) == before, "an input changed or an output was written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case_dir, tmp_path, case, capsys, monkeypatch):
    """In this process (the CLI's main(), as the console script calls it): one process
    start instead of forty on a shared 2-core machine."""
    from gpuforge.cli.main import main

    d, before = case_dir
    monkeypatch.setenv("XDG_CONFIG_HOME", str(d / "config"))
    capsys.readouterr()
    code = main(_argv(case[1], d))
    _check(case, code, capsys.readouterr().err, d, before, tmp_path)


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in ("ply with NaN", "eval-every 0")], ids=lambda c: c[0])
def test_bad_input_in_a_fresh_process(run_cli, case_dir, tmp_path, case):
    d, before = case_dir
    r = run_cli(*_argv(case[1], d), cwd=tmp_path)
    _check(case, r.code, r.stderr, d, before, tmp_path)
