"""Analytic scenes with exact poses, written in the Blender/nerf_synthetic form.

Every analytic kind is intersected exactly (closed-form ray hits, no marching error),
Lambert-shaded and anti-aliased with 4x4 supersampling, so the ground truth of every view
is known; colours are view-independent (SH degree 0 or a view-independent NeRF can fit
them exactly). The kinds differ in what makes them hard:

``spheres``: five smooth textured spheres (the scene the defaults were first tuned on).
``cubes``: four oriented boxes: flat faces, sharp edges and corners, checks and stripes.
``table``: a checkered disc (a large flat high-frequency surface seen at grazing angles)
with three spheres and six thin capped rods (structures a few pixels wide).
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
KINDS = ("spheres", "cubes", "table", "gaussians")

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


def _lambert(albedo: np.ndarray, n: np.ndarray) -> np.ndarray:
    return np.clip(albedo * (0.35 + 0.65 * np.clip(n @ LIGHT, 0, None))[:, None], 0, 1)


def _hit_spheres(o, d, spheres, best, rgb):
    for c, r, base, freq in spheres:
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
        rgb[hit] = _lambert(np.asarray(base) * (0.55 + 0.45 * tex[:, None]), n)
        best[hit] = t[hit]


def _rotation(yaw: float, tilt: float) -> np.ndarray:
    cz, sz, cx, sx = math.cos(yaw), math.sin(yaw), math.cos(tilt), math.sin(tilt)
    return np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])


def _hit_boxes(o, d, boxes, best, rgb):
    """Oriented boxes (slab test in each box's frame); faces carry stripes or checks."""
    for c, half, yaw, tilt, base, freq in boxes:
        R = _rotation(yaw, tilt)
        ol, dl = (o - np.asarray(c)) @ R, d @ R  # into the box frame
        dl = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
        h = np.asarray(half)
        t0, t1 = (-h - ol) / dl, (h - ol) / dl
        tn, tf = np.minimum(t0, t1).max(1), np.maximum(t0, t1).min(1)
        hit = (tf > tn) & (tn > 0) & (tn < best)
        if not hit.any():
            continue
        axis = np.argmax(np.minimum(t0, t1)[hit], 1)  # the slab entered last is the face hit
        pl = ol[hit] + tn[hit, None] * dl[hit]
        nl = np.zeros_like(pl)
        nl[np.arange(len(pl)), axis] = -np.sign(dl[hit][np.arange(len(pl)), axis])
        uv = pl * freq
        check = (np.floor(uv[:, 0]) + np.floor(uv[:, 1]) + np.floor(uv[:, 2])) % 2
        stripe = 0.5 + 0.5 * np.sin(2.7 * uv.sum(1))
        tex = np.where(axis == 2, check, stripe)
        rgb[hit] = _lambert(np.asarray(base) * (0.5 + 0.5 * tex[:, None]), nl @ R.T)
        best[hit] = tn[hit]


def _hit_disc(o, d, disc, best, rgb):
    """A horizontal disc (a table top) with a checkerboard of two colours."""
    z, radius, c1, c2, freq = disc
    dz = np.where(np.abs(d[:, 2]) < 1e-12, 1e-12, d[:, 2])
    t = (z - o[:, 2]) / dz
    p = o + t[:, None] * d
    hit = (t > 0) & (t < best) & (np.hypot(p[:, 0], p[:, 1]) < radius) & (o[:, 2] > z)
    if not hit.any():
        return
    q = p[hit]
    check = ((np.floor(q[:, 0] * freq) + np.floor(q[:, 1] * freq)) % 2)[:, None]
    rgb[hit] = _lambert(np.asarray(c1) * check + np.asarray(c2) * (1 - check), np.tile([0.0, 0, 1], (len(q), 1)))
    best[hit] = t[hit]


def _hit_rods(o, d, rods, best, rgb):
    """Finite vertical cylinders (thin structures), banded along their height, closed by a
    flat cap at the top (the bottom stands on the table). Solid: a ray looking down into a
    rod hits its cap. Before the cap (scenes made before 2026-12-07) a rod was an open
    tube whose inside was invisible, so from above one saw through it to the table below,
    a view-dependent transparency no 3-D field can represent."""
    for (cx, cy), r, z0, z1, base in rods:
        ox, oy = o[:, 0] - cx, o[:, 1] - cy
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = ox * d[:, 0] + oy * d[:, 1]
        disc = b * b - a * (ox * ox + oy * oy - r * r)
        a = np.maximum(a, 1e-12)
        t = (-b - np.sqrt(np.maximum(disc, 0))) / a
        z = o[:, 2] + t * d[:, 2]
        side = (disc > 0) & (t > 0) & (t < best) & (z > z0) & (z < z1)
        dz = np.where(np.abs(d[:, 2]) < 1e-12, -1e-12, d[:, 2])
        tc = (z1 - o[:, 2]) / dz
        cap = (o[:, 2] > z1) & (tc > 0) & (tc < best) & ~side
        cap &= np.hypot(ox + tc * d[:, 0], oy + tc * d[:, 1]) < r
        for hit, th, top in ((side, t, False), (cap, tc, True)):
            if not hit.any():
                continue
            p = o[hit] + th[hit, None] * d[hit]
            if top:
                n = np.tile([0.0, 0.0, 1.0], (len(p), 1))
                p[:, 2] = z1 - 1e-9  # the top band
            else:
                n = np.stack([p[:, 0] - cx, p[:, 1] - cy, np.zeros(len(p))], 1) / r
            band = (0.6 + 0.4 * (np.floor(p[:, 2] * 8) % 2))[:, None]
            rgb[hit] = _lambert(np.asarray(base) * band, n)
            best[hit] = th[hit]


BOXES = [  # centre, half sizes, yaw, tilt, base colour, texture frequency
    ((0.0, 0.0, -0.35), (0.55, 0.4, 0.3), 0.4, 0.0, (0.8, 0.45, 0.2), 5.0),
    ((0.55, -0.5, 0.2), (0.22, 0.22, 0.22), -0.3, 0.5, (0.2, 0.5, 0.85), 9.0),
    ((-0.6, 0.45, 0.1), (0.15, 0.35, 0.45), 1.1, 0.2, (0.35, 0.75, 0.3), 7.0),
    ((-0.2, -0.7, 0.45), (0.3, 0.12, 0.12), 0.2, -0.6, (0.9, 0.85, 0.3), 11.0),
]
DISC = (-0.62, 1.15, (0.92, 0.9, 0.85), (0.25, 0.3, 0.45), 4.0)
TABLE_SPHERES = [((0.0, 0.0, -0.1), 0.45, (0.85, 0.35, 0.25), 6.0), ((0.65, 0.3, -0.35), 0.25, (0.25, 0.55, 0.9), 9.0),
                 ((-0.5, -0.45, -0.3), 0.3, (0.7, 0.4, 0.85), 7.0)]
RODS = [((0.6 * math.cos(a), 0.6 * math.sin(a)), 0.05, -0.62, 0.55, c)
        for a, c in zip(np.linspace(0, 2 * math.pi, 7)[:-1],
                        [(0.9, 0.3, 0.2), (0.2, 0.7, 0.3), (0.2, 0.4, 0.9), (0.9, 0.8, 0.2), (0.6, 0.3, 0.8),
                         (0.3, 0.8, 0.8)])]


def _shade(o: np.ndarray, d: np.ndarray, kind: str = "spheres") -> tuple[np.ndarray, np.ndarray]:
    """Exact first hit of each ray with the analytic scene ``kind``: (rgb [M, 3], hit [M])."""
    o, d = o.astype(np.float64), d.astype(np.float64)
    best = np.full(len(o), np.inf)
    rgb = np.zeros((len(o), 3))
    if kind == "spheres":
        _hit_spheres(o, d, SPHERES, best, rgb)
    elif kind == "cubes":
        _hit_boxes(o, d, BOXES, best, rgb)
    elif kind == "table":
        _hit_disc(o, d, DISC, best, rgb)
        _hit_spheres(o, d, TABLE_SPHERES, best, rgb)
        _hit_rods(o, d, RODS, best, rgb)
    else:
        raise ValueError(f"no analytic scene {kind!r}")
    return rgb, np.isfinite(best)


def _shade_spheres(o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return _shade(o, d, "spheres")


def render_spheres(c2w: np.ndarray, fx: float, W: int, H: int, ss: int = 4, distortion=None,
                   fisheye: bool = False, kind: str = "spheres") -> np.ndarray:
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
    rgb, hit = _shade(o, d, kind)
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
            img = render_spheres(c2w, fx, res, res, kind=kind) if g is None else render_gaussians(g, c2w, fx, res, res)
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
