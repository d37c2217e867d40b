"""The splat screen-space filter: 3DGS's 0.3 px² dilation (classic) or Mip-Splatting's 2-D
filter (``--antialiased``, the default: 0.1 px² with opacities scaled so each Gaussian keeps its
integral). The projection kernels' ``dilation`` argument is checked against the reference
by the conformance cases (``mip-dilation``, ``no-dilation``, ``bad-dilation``)."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from gpuforge.plugins.radiance import splat, synthetic
from gpuforge.plugins.radiance.kernel_cases import camera, random_gaussians
from gpuforge.plugins.radiance.rasterize import project_torch


def _cov2d(conics: torch.Tensor) -> torch.Tensor:
    a, b, c = conics.double().unbind(-1)
    det = a * c - b * b
    return torch.stack([c / det, -b / det, a / det], -1)  # the inverse of [[a, b], [b, c]] as (xx, xy, yy)


def test_compensation_is_the_determinant_ratio():
    m, s, q, _, _ = random_gaussians(200, 5)
    s[:50] *= 0.05  # sub-pixel ones, where the ratio is far from 1
    view, K = camera(64, 64)
    args = [torch.from_numpy(a) for a in (m, s, q, view)]
    k = [float(v) for v in K]
    conic0 = project_torch(*args, *k, 64, 64, 0.0)[1]
    conic1 = project_torch(*args, *k, 64, 64, 0.1)[1]
    keep = (conic0.abs().sum(1) > 0) & (conic1.abs().sum(1) > 0)
    c0, c1 = _cov2d(conic0[keep]), _cov2d(conic1[keep])
    np.testing.assert_allclose(c1[:, 0] - c0[:, 0], 0.1, rtol=0, atol=1e-4)  # the dilation is what was added
    det = lambda c: c[:, 0] * c[:, 2] - c[:, 1] ** 2  # noqa: E731
    want = torch.sqrt(det(c0) / det(c1))
    got = splat.opacity_compensation(conic1[keep], 0.1).double()
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=2e-3, atol=1e-5)
    assert want.min() < 0.5  # the sub-pixel Gaussians were scaled down a lot
    # culled Gaussians (conic 0) are left as they are
    assert float(splat.opacity_compensation(torch.zeros(1, 3), 0.1)) == 1.0


def _alpha_mass(sigma_px: float, dilation: float, antialiased: bool, opacity: float = 0.2) -> float:
    """Sum of the alpha image of one isotropic Gaussian of ``sigma_px`` pixels at the centre."""
    W = 48
    view, K = camera(W, W)
    c2w_cv = np.linalg.inv(view)
    target = c2w_cv[:3, 3] + 4.0 * c2w_cv[:3, 2]  # 4 units in front of the camera, on its axis
    scale = sigma_px * 4.0 / float(K[0])
    from gpuforge.plugins.radiance.scene import GL_TO_CV

    c2w_gl = c2w_cv @ GL_TO_CV  # the renderer takes OpenGL poses
    t = lambda a: torch.tensor(np.asarray(a, np.float32))  # noqa: E731
    _, alpha = splat.render_gaussians_raw(t([target]), t([[scale] * 3]), t([[1.0, 0, 0, 0]]), t([[1.0, 1, 1]]),
                                          t([opacity]), c2w_gl, K[0], K[1], K[2], K[3], W, W,
                                          np.zeros(3, np.float32), dilation, antialiased)
    return float(alpha.sum())


@pytest.mark.parametrize("sigma_px", [0.5, 1.0])
def test_antialiased_gaussian_keeps_its_integral_classic_one_grows(sigma_px):
    true = 0.2 * 2 * math.pi * sigma_px ** 2  # opacity x the Gaussian's integral, no filter
    aa1, aa3 = _alpha_mass(sigma_px, 0.1, True), _alpha_mass(sigma_px, 0.3, True)
    classic = _alpha_mass(sigma_px, 0.3, False)
    # the 1/255 cut-off drops a few % of the tails (and sampling a Gaussian of variance
    # >= 0.35 px² at pixel centres sums to its integral within 0.2%)
    assert aa1 == pytest.approx(true, rel=0.05) and aa3 == pytest.approx(true, rel=0.05)
    grow = (sigma_px ** 2 + 0.3) / sigma_px ** 2  # classic: the dilation adds area at the same peak opacity
    assert classic / aa3 == pytest.approx(grow, rel=0.03)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    out = tmp_path_factory.mktemp("filt") / "scene"
    out.mkdir()
    synthetic.make_scene(out, "spheres", views=6, res=32, test_views=2, val_views=1, seed=2)
    return out


@pytest.fixture(scope="module")
def aa_run(scene, run_cli, tmp_path_factory):
    run = tmp_path_factory.mktemp("filt-run") / "aa"
    r = run_cli("radiance", "splat", "train", str(scene), "--out", str(run), "--steps", "40", "--init-points", "200",
                "--eval-every", "20", "--sh-degree", "0", "--threads", "1", "--antialiased", "--json")
    assert r.code == 0, r
    return run, r


def test_ply_round_trip_keeps_the_filter(scene, aa_run, run_cli, tmp_path):
    from plyfile import PlyData

    from gpuforge.plugins.radiance.scene import load_scene

    run, _ = aa_run
    ply = tmp_path / "g.ply"
    r = run_cli("radiance", "splat", "export", str(run), "--out", str(ply), "--json")
    assert r.code == 0 and r.json()["filter"] == {"dilation": 0.1, "antialiased": True}, r
    assert "eps2d=0.1" in r.stderr  # the user is told how to view it
    assert PlyData.read(str(ply)).comments == ["gpuforge-filter antialiased 0.1"]
    cams = load_scene(scene).split("test").cameras
    bg = np.ones(3, np.float32)
    g, _ = splat.load_run(run)
    want = g.render(cams, 0, bg)[0].numpy()
    # the header comment brings the filter back; a flag overrides it
    for flags, same in (((), True), (("--antialiased",), True), (("--classic",), False)):
        imp = tmp_path / ("imp" + "".join(flags))
        r = run_cli("radiance", "splat", "import", str(ply), "--out", str(imp), *flags, "--json")
        assert r.code == 0, r
        g2, _ = splat.load_run(imp)
        assert np.array_equal(g2.render(cams, 0, bg)[0].numpy(), want) == same, flags
    # a PLY from another tool (no comment) is classic 3DGS
    plain = PlyData.read(str(ply))
    plain.comments = []
    plain.write(str(tmp_path / "plain.ply"))
    g3 = splat.import_ply(tmp_path / "plain.ply")
    assert (g3.dilation, g3.antialiased) == (0.3, False)
    assert splat.ply_filter(["made by someone", "gpuforge-filter classic 0.3"]) == {"antialiased": False,
                                                                                   "dilation": 0.3}
    assert splat.ply_filter(["gpuforge-filter antialiased -1"]) is None


def test_run_records_its_filter_and_renders_with_it(scene, aa_run, run_cli, tmp_path):
    from gpuforge.plugins.radiance.scene import load_scene

    run, r = aa_run
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["filter"] == {"dilation": 0.1, "antialiased": True}
    assert cfg["config"]["dilation"] == 0.1 and cfg["config"]["antialiased"] is True
    g, _ = splat.load_run(run)
    assert (g.dilation, g.antialiased) == (0.1, True)
    cams = load_scene(scene).split("test").cameras
    with torch.no_grad():
        img = g.render(cams, 0, np.ones(3, np.float32))[0].numpy()
        classic = splat.Gaussians(*g.tensors().values(), g.sh_degree).render(cams, 0, np.ones(3, np.float32))[0].numpy()
    assert np.abs(img - classic).max() > 1e-3  # the filter is used when the run is rendered
    # `splat eval` renders with the run's filter: the same PSNR as training's final evaluation
    ev = run_cli("radiance", "splat", "eval", str(run), "--json")
    assert ev.code == 0 and ev.json()["psnr"] == pytest.approx(r.json()["test_psnr"], abs=1e-6)
    # a run written before the filter was recorded renders as 3DGS did
    old = tmp_path / "old"
    shutil.copytree(run, old)
    del cfg["filter"]
    (old / "config.json").write_text(json.dumps(cfg))
    g_old, _ = splat.load_run(old)
    assert (g_old.dilation, g_old.antialiased) == (0.3, False)
    # a damaged record is one clear line, exit 3
    (old / "config.json").write_text(json.dumps({**cfg, "filter": {"dilation": "wide", "antialiased": True}}))
    r = run_cli("radiance", "splat", "eval", str(old))
    assert r.code == 3 and "filter" in r.stderr and "Traceback" not in r.stderr


def test_filter_options(scene, run_cli, tmp_path):
    cfg = splat.SplatConfig()
    assert (cfg.antialiased, cfg.dilation) == (True, 0.1)  # the default since issue 20 (docs/BENCHMARKS.md)
    r = run_cli("radiance", "splat", "train", str(scene), "--out", str(tmp_path / "c"), "--steps", "2", "--classic",
                "--init-points", "50", "--threads", "1", "--json")
    assert r.code == 0, r
    assert json.loads((tmp_path / "c" / "config.json").read_text())["filter"] == {"dilation": 0.3,
                                                                                 "antialiased": False}
    assert splat.filter_config(None, None) == {}
    assert splat.filter_config(True, None) == {"antialiased": True, "dilation": 0.1}
    assert splat.filter_config(False, 0.2) == {"antialiased": False, "dilation": 0.2}
    r = run_cli("radiance", "splat", "train", str(scene), "--out", str(tmp_path / "x"), "--steps", "2",
                "--dilation", "-0.5")
    assert r.code == 2 and "--dilation" in r.stderr and not (tmp_path / "x").exists()
