"""Conformance cases of the radiance kernels (random scenes plus edge cases)."""
from __future__ import annotations

import math

import numpy as np

from gpuforge.core.specs import KernelCase


def random_gaussians(n: int, seed: int = 0, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    means = (rng.uniform(-1, 1, (n, 3)) * spread).astype(np.float32)
    scales = np.exp(rng.uniform(np.log(0.02), np.log(0.25), (n, 3))).astype(np.float32)
    quats = rng.normal(size=(n, 4)).astype(np.float32)
    colors = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    opac = rng.uniform(0.05, 1.0, n).astype(np.float32)
    return means, scales, quats, colors, opac


def camera(width: int, height: int, dist: float = 4.0):
    """World -> camera (OpenCV) looking at the origin from +x/+z, and intrinsics."""
    from gpuforge.plugins.radiance.scene import look_at_opengl, opengl_to_opencv

    c2w = look_at_opengl([dist * 0.6, -dist * 0.5, dist * 0.62])
    view = np.linalg.inv(opengl_to_opencv(c2w)).astype(np.float32)
    f = 0.5 * width / math.tan(0.5 * 0.69)
    return view, np.array([f, f, width / 2, height / 2], np.float32)


def project_cases():
    out = []
    for name, n, w, h, sim in (("small", 30, 32, 24, True), ("odd", 77, 45, 37, True), ("big", 3000, 128, 128, False)):
        m, s, q, _, _ = random_gaussians(n, n)
        view, K = camera(w, h)
        out.append(KernelCase(name, (m, s, q, view, K, w, h), simulator=sim))
    m, s, q, _, _ = random_gaussians(10, 3)
    view, K = camera(32, 32)
    m[0] = view[:3, :3].T @ (np.array([0, 0, 0.1], np.float32) - view[:3, 3])  # behind the near plane
    m[1] = view[:3, :3].T @ (np.array([50, 0, 1.0], np.float32) - view[:3, 3])  # off screen
    out.append(KernelCase("culled", (m, s, q, view, K, 32, 32)))
    out.append(KernelCase("empty", (m[:0], s[:0], q[:0], view, K, 32, 32)))
    out.append(KernelCase("bad-shape", (m[:, :2], s, q, view, K, 32, 32)))
    # the filter's variance: Mip-Splatting's 0.1, none at all, and a negative one (refused)
    m, s, q, _, _ = random_gaussians(40, 11)
    s[:10] *= 0.05  # sub-pixel Gaussians: the dilation dominates their footprint
    view, K = camera(40, 36)
    out.append(KernelCase("mip-dilation", (m, s, q, view, K, 40, 36, 0.1)))
    out.append(KernelCase("no-dilation", (m, s, q, view, K, 40, 36, 0.0)))
    out.append(KernelCase("bad-dilation", (m, s, q, view, K, 40, 36, -0.1)))
    return out


def _projected(n, w, h, seed, spread=1.0):
    from gpuforge.plugins.radiance.rasterize import gs_project

    m, s, q, c, o = random_gaussians(n, seed, spread)
    view, K = camera(w, h)
    m2d, con, d, r = gs_project(m, s, q, view, K, w, h)
    return m2d, con, d, r, c, o


def bin_cases():
    out = []
    for name, n, w, h, sim in (("small", 30, 32, 24, True), ("odd", 77, 45, 37, True), ("big", 3000, 128, 128, False)):
        m2d, _, d, r, _, _ = _projected(n, w, h, n)
        out.append(KernelCase(name, (m2d, r, d, w, h), simulator=sim))
    m2d, _, d, r, _, _ = _projected(20, 32, 32, 5)
    d = np.round(d, 1)  # depth ties: broken by id
    out.append(KernelCase("ties", (m2d, r, d, 32, 32)))
    out.append(KernelCase("empty", (m2d[:0], r[:0], d[:0], 32, 32)))
    out.append(KernelCase("bad-shape", (m2d[:, :1], r, d, 32, 32)))
    return out


def _raster_inputs(n, w, h, seed, spread=1.0):
    from gpuforge.plugins.radiance.rasterize import gs_bin_tiles

    m2d, con, d, r, c, o = _projected(n, w, h, seed, spread)
    ranges, ids = gs_bin_tiles(m2d, r, d, w, h)
    return m2d, con, c, o, ranges, ids, w, h, np.array([1.0, 1.0, 1.0], np.float32)


def raster_fwd_cases():
    out = []
    for name, n, w, h, sim, spread in (("small", 25, 32, 16, True, 1.0), ("odd", 60, 21, 19, True, 1.0),
                                       ("dense", 60, 16, 16, True, 0.3), ("big", 3000, 128, 128, False, 1.0)):
        out.append(KernelCase(name, _raster_inputs(n, w, h, n, spread), simulator=sim))
    args = list(_raster_inputs(30, 16, 16, 9, 0.3))
    args[3] = np.full(30, 1.0, np.float32)  # opaque: the alpha clamp and early stop matter
    args[8] = np.array([0.2, 0.4, 0.6], np.float32)
    out.append(KernelCase("opaque", tuple(args)))
    # one unit Gaussian of opacity 2 (the kernels take any): at 3.4 sigma its exp(power) is
    # under 1/255 (pixel offset (3, 1.5)), yet its alpha (2 exp(power)) is not
    m2d, con = np.array([[8.5, 8.0]], np.float32), np.array([[1.0, 0.0, 1.0]], np.float32)
    from gpuforge.plugins.radiance.rasterize import gs_bin_tiles

    ranges, ids = gs_bin_tiles(m2d, np.array([6], np.int32), np.array([1.0], np.float32), 16, 16)
    out.append(KernelCase("over-opaque", (m2d, con, np.array([[1.0, 0.5, 0.2]], np.float32),
                                          np.array([2.0], np.float32), ranges, ids, 16, 16,
                                          np.array([0.0, 0.0, 0.0], np.float32))))
    e = _raster_inputs(0, 16, 16, 1)
    out.append(KernelCase("empty", e))
    bad = list(e)
    bad[4] = np.zeros(3, np.int32)
    out.append(KernelCase("bad-ranges", tuple(bad)))
    return out


def raster_bwd_cases():
    from gpuforge.plugins.radiance.rasterize import gs_rasterize_fwd

    out = []
    rng = np.random.default_rng(7)
    for c in raster_fwd_cases():
        args = c.args
        if c.name == "bad-ranges":
            out.append(KernelCase(c.name, args + (np.ones((16, 16), np.float32), np.zeros((16, 16), np.int32),
                                                  np.zeros((16, 16, 3), np.float32))))
            continue
        _, T, nc = gs_rasterize_fwd(*args)
        g = rng.standard_normal((args[7], args[6], 3)).astype(np.float32)
        out.append(KernelCase(c.name, args + (T, nc, g), simulator=c.simulator))
    return out
