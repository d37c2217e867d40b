"""Analytic scenes with exact poses, written in the Blender/nerf_synthetic form.

``spheres``: textured, Lambert-shaded spheres, intersected exactly (closed-form
ray-sphere hits, no marching error) and anti-aliased with 4x4 supersampling, so the
ground truth of every view is known. Colours are view-independent (a radiance field
with SH degree 0 or a view-independent NeRF can fit them exactly).
``gaussians``: a known set of 3-D Gaussians rendered with this plugin's rasterizer.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from gpuforge.plugins.radiance.scene import look_at_opengl, pixel_rays

CAMERA_ANGLE_X = 0.6911112070083618  # nerf_synthetic's value
RADIUS = 4.0
AABB = [[-1.25, -1.25, -1.25], [1.25, 1.25, 1.25]]
KINDS = ("spheres", "gaussians")

# centre xyz, radius, base colour, texture frequency
SPHERES = [
    ((0.0, 0.0, 0.0), 0.62, (0.85, 0.35, 0.25), 6.0),
    ((0.78, 0.35, -0.2), 0.3, (0.25, 0.55, 0.9), 9.0),
    ((-0.5, 0.62, 0.15), 0.34, (0.3, 0.8, 0.35), 8.0),
    ((0.15, -0.72, 0.35), 0.27, (0.95, 0.8, 0.2), 10.0),
    ((-0.45, -0.35, -0.6), 0.3, (0.7, 0.4, 0.85), 7.0),
]
LIGHT = np.array([0.4, -0.3, 0.87]) / np.linalg.norm([0.4, -0.3, 0.87])


def poses(n: int, seed: int, fibonacci: bool) -> np.ndarray:
    """``n`` OpenGL cameras on the upper hemisphere (elevation 8..75 degrees) looking at the origin."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        if fibonacci:
            z = math.sin(math.radians(8)) + (math.sin(math.radians(75)) - math.sin(math.radians(8))) * (k + 0.5) / n
            az = k * math.pi * (3 - math.sqrt(5))
        else:
            z = rng.uniform(math.sin(math.radians(8)), math.sin(math.radians(75)))
            az = rng.uniform(0, 2 * math.pi)
        r = math.sqrt(1 - z * z)
        out.append(look_at_opengl(RADIUS * np.array([r * math.cos(az), r * math.sin(az), z])))
    return np.stack(out)


def _shade_spheres(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact first hit of each ray: (rgb [M, 3], hit [M])."""
    o, d = o.astype(np.float64), d.astype(np.float64)
    best = np.full(len(o), np.inf)
    rgb = np.zeros((len(o), 3))
    for c, r, base, freq in SPHERES:
        c = np.asarray(c)
        oc = o - c
        b = (oc * d).sum(-1)
        disc = b * b - ((oc * oc).sum(-1) - r * r)
        t = -b - np.sqrt(np.maximum(disc, 0))
        hit = (disc > 0) & (t > 0) & (t < best)
        if not hit.any():
            continue
        p = o[hit] + t[hit, None] * d[hit]
        n = (p - c) / r
        tex = 0.5 + 0.5 * np.sin(freq * p[:, 0]) * np.sin(freq * p[:, 1] + 1.3) * np.cos(freq * 0.7 * p[:, 2])
        albedo = np.asarray(base) * (0.55 + 0.45 * tex[:, None])
        lam = 0.35 + 0.65 * np.clip(n @ LIGHT, 0, None)
        rgb[hit] = np.clip(albedo * lam[:, None], 0, 1)
        best[hit] = t[hit]
    return rgb, np.isfinite(best)


def render_spheres(c2w: np.ndarray, fx: float, W: int, H: int, ss: int = 4, distortion=None,
                   fisheye: bool = False) -> np.ndarray:
    """RGBA float image [H, W, 4] (straight alpha) with ss x ss supersampling; with
    ``distortion`` ([k1, k2, k3, k4, p1, p2], nerfstudio's model, see distortion.py) each
    pixel's ray is found by inverting the distortion."""
    j, i = np.meshgrid(np.arange(H * ss), np.arange(W * ss), indexing="ij")
    u, v = (i.ravel() + 0.5) / ss, (j.ravel() + 0.5) / ss
    if distortion is None and not fisheye:
        o, d = pixel_rays(c2w, fx, fx, W / 2, H / 2, u, v)
    else:
        from gpuforge.plugins.radiance.distortion import undistort_points

        und = undistort_points(np.stack([(u - W / 2) / fx, (v - H / 2) / fx], -1), distortion or [0] * 6)
        if fisheye:
            theta = np.linalg.norm(und, axis=-1)
            sin_t = np.where(theta > 0, np.sin(theta) / np.maximum(theta, 1e-300), 1.0)
            d_cv = np.concatenate([und * sin_t[:, None], np.cos(theta)[:, None]], -1)
        else:
            d_cv = np.concatenate([und, np.ones((len(und), 1))], -1)
        d = (d_cv * [1, -1, -1]) @ np.asarray(c2w)[:3, :3].T  # OpenCV -> OpenGL camera, then to world
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        o = np.broadcast_to(np.asarray(c2w)[:3, 3], d.shape)
    rgb, hit = _shade_spheres(o, d)
    rgb = rgb.reshape(H, ss, W, ss, 3)
    cov = hit.reshape(H, ss, W, ss).astype(np.float64)
    alpha = cov.mean((1, 3))
    premult = (rgb * cov[..., None]).mean((1, 3))
    straight = np.where(alpha[..., None] > 0, premult / np.maximum(alpha[..., None], 1e-12), 0)
    return np.concatenate([straight, alpha[..., None]], -1)


def known_gaussians(seed: int = 0, n: int = 400) -> dict:
    """A fixed set of Gaussians (activated parameters) inside the scene box."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-0.8, 0.8, (n, 3))
    scales = np.exp(rng.uniform(np.log(0.03), np.log(0.12), (n, 3)))
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    colors = rng.uniform(0.1, 0.95, (n, 3))
    opac = rng.uniform(0.5, 0.95, n)
    return {"means": means, "scales": scales, "quats": q, "colors": colors, "opacities": opac}


def render_gaussians(g: dict, c2w: np.ndarray, fx: float, W: int, H: int) -> np.ndarray:
    import torch

    from gpuforge.plugins.radiance.splat import render_gaussians_raw

    with torch.no_grad():
        rgb, alpha = render_gaussians_raw(
            torch.as_tensor(g["means"], dtype=torch.float32), torch.as_tensor(g["scales"], dtype=torch.float32),
            torch.as_tensor(g["quats"], dtype=torch.float32), torch.as_tensor(g["colors"], dtype=torch.float32),
            torch.as_tensor(g["opacities"], dtype=torch.float32), c2w, fx, fx, W / 2, H / 2, W, H,
            np.zeros(3, np.float32))
    a = alpha.numpy()[..., None]
    straight = np.where(a > 0, rgb.numpy() / np.maximum(a, 1e-12), 0)
    return np.concatenate([np.clip(straight, 0, 1), a], -1)


def make_scene(out: Path, kind: str = "spheres", views: int = 100, res: int = 128, test_views: int = 20,
               val_views: int = 10, seed: int = 0) -> dict:
    """Write ``transforms_{train,val,test}.json`` and RGBA PNGs into ``out`` (an existing empty folder)."""
    from PIL import Image

    fx = 0.5 * res / math.tan(0.5 * CAMERA_ANGLE_X)
    g = known_gaussians(seed) if kind == "gaussians" else None
    counts = {}
    for split, n, s, fib in (("train", views, seed, True), ("val", val_views, seed + 1, False),
                             ("test", test_views, seed + 2, False)):
        if n <= 0:  # an empty split is left out (the loader treats val as optional)
            continue
        (out / split).mkdir()
        frames = []
        for k, c2w in enumerate(poses(n, s, fib)):
            img = render_spheres(c2w, fx, res, res) if g is None else render_gaussians(g, c2w, fx, res, res)
            Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), "RGBA").save(out / split / f"r_{k}.png")
            frames.append({"file_path": f"./{split}/r_{k}", "rotation": 0.0, "transform_matrix": c2w.tolist()})
        meta = {"camera_angle_x": CAMERA_ANGLE_X, "aabb": AABB, "frames": frames,
                "gpuforge": {"kind": kind, "seed": seed}}
        (out / f"transforms_{split}.json").write_text(json.dumps(meta, indent=2))
        counts[split] = n
    return {"kind": kind, "res": res, "views": counts, "camera_angle_x": CAMERA_ANGLE_X, "fl_x": fx}


def sphere_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points on the spheres' surfaces with their (view-independent) shaded colours:
    what structure from motion would reconstruct of this scene."""
    rng = np.random.default_rng(seed)
    area = np.array([r * r for _, r, _, _ in SPHERES])
    which = rng.choice(len(SPHERES), n, p=area / area.sum())
    pts, cols = [], []
    for k in range(len(SPHERES)):
        c, r, _, _ = SPHERES[k]
        m = int((which == k).sum())
        nrm = rng.normal(size=(m, 3))
        nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
        p = np.asarray(c) + r * nrm * 1.001
        o = p + nrm * 0.5  # a ray from just outside, straight back at the point
        rgb, _ = _shade_spheres(o, -nrm)
        pts.append(p), cols.append(rgb)
    return np.concatenate(pts), np.concatenate(cols)


def make_nerfstudio_scene(out: Path, views: int = 20, res: int = 32, seed: int = 0, camera_model: str = "OPENCV",
                          distortion=None, points: int = 0, shuffle: bool = True) -> dict:
    """The spheres scene as a nerfstudio capture: one ``transforms.json`` (intrinsics
    ``fl_x, fl_y, cx, cy, w, h``, ``camera_model``, distortion ``k1..k4, p1, p2``), images
    under ``images/``, no split lists, and with ``points`` an SfM-like ``sparse_pc.ply``
    (``ply_file_path``). Frames are listed in shuffled order, as captures often are."""
    from PIL import Image

    fx = 0.5 * res / math.tan(0.5 * CAMERA_ANGLE_X)
    (out / "images").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    frames = []
    fisheye = camera_model == "OPENCV_FISHEYE"
    for k, c2w in enumerate(poses(views, seed, True)):
        img = render_spheres(c2w, fx, res, res, distortion=distortion, fisheye=fisheye)
        name = f"images/frame_{k + 1:05d}.png"
        Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8), "RGBA").save(out / name)
        frames.append({"file_path": name, "transform_matrix": c2w.tolist()})
    if shuffle:
        frames = [frames[i] for i in rng.permutation(len(frames))]
    meta = {"camera_model": camera_model, "fl_x": fx, "fl_y": fx, "cx": res / 2, "cy": res / 2, "w": res, "h": res,
            "frames": frames, "aabb": AABB}
    meta.update(dict(zip(("k1", "k2", "k3", "k4", "p1", "p2"), distortion or [0.0] * 6)))
    if points:
        from plyfile import PlyData, PlyElement

        xyz, rgb = sphere_points(points, seed)
        arr = np.empty(len(xyz), dtype=[("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"),
                                        ("blue", "u1")])
        arr["x"], arr["y"], arr["z"] = xyz.T
        for c, nm in enumerate(("red", "green", "blue")):
            arr[nm] = np.round(rgb[:, c] * 255).astype(np.uint8)
        PlyData([PlyElement.describe(arr, "vertex")]).write(str(out / "sparse_pc.ply"))
        meta["ply_file_path"] = "sparse_pc.ply"
    (out / "transforms.json").write_text(json.dumps(meta, indent=2))
    return {"views": views, "res": res, "fl_x": fx, "camera_model": camera_model}
