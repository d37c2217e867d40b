"""Lens distortion of nerfstudio scenes, removed at load time (NumPy).

nerfstudio (``cameras.py``, ``camera_utils.radial_and_tangential_undistort``) models a
``camera_model`` of ``OPENCV`` (and ``PINHOLE``, ``SIMPLE_PINHOLE``, ``SIMPLE_RADIAL``,
``RADIAL``) as a perspective camera and ``OPENCV_FISHEYE`` as an equidistant fisheye,
both with the distortion parameters ``[k1, k2, k3, k4, p1, p2]`` applied to normalized
OpenCV image coordinates ``u`` (x right, y down)::

    r2 = |u|^2,  d = 1 + r2 (k1 + r2 (k2 + r2 (k3 + r2 k4)))
    x_d = u_x d + 2 p1 u_x u_y + p2 (r2 + 2 u_x^2)
    y_d = u_y d + 2 p2 u_x u_y + p1 (r2 + 2 u_y^2)
    pixel = (fx x_d + cx, fy y_d + cy)

where a perspective ray through ``(x, y, 1)`` has ``u = (x, y)`` and a fisheye ray at
angle ``theta`` from the optical axis has ``|u| = theta`` (so ``theta_d = theta (1 + k1
theta^2 + ... + k4 theta^8)``: OpenCV's fisheye model). gpuforge's rasterizer and ray
generator are pinhole, so each distorted frame is resampled to a pinhole camera with the
same principal point: every output pixel's ray direction is pushed through the model
above to the source pixel it came from (bilinear). The output focal length is scaled so
that every output pixel comes from inside the source image (COLMAP's undistorter does
the same); the periphery a pinhole cannot show (beyond 90 degrees for a fisheye) is
dropped. ``undistort_points`` inverts the model (Newton, as nerfstudio) for ray
directions of the original pixels and for tests.
"""
from __future__ import annotations

import numpy as np

PERSPECTIVE = ("PINHOLE", "SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
FISHEYE = ("OPENCV_FISHEYE",)
KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


def distort(u: np.ndarray, params) -> np.ndarray:
    """Normalized undistorted coordinates [..., 2] -> distorted ones (the model above)."""
    k1, k2, k3, k4, p1, p2 = (float(v) for v in params)
    x, y = u[..., 0], u[..., 1]
    r2 = x * x + y * y
    d = 1 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
    return np.stack([x * d + 2 * p1 * x * y + p2 * (r2 + 2 * x * x),
                     y * d + 2 * p2 * x * y + p1 * (r2 + 2 * y * y)], -1)


def undistort_points(ud: np.ndarray, params, iterations: int = 20) -> np.ndarray:
    """Inverse of :func:`distort` by Newton's method from the distorted point (float64)."""
    ud = np.asarray(ud, np.float64)
    u = ud.copy()
    k1, k2, k3, k4, p1, p2 = (float(v) for v in params)
    for _ in range(iterations):
        x, y = u[..., 0], u[..., 1]
        r2 = x * x + y * y
        d = 1 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
        fx = d * x + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) - ud[..., 0]
        fy = d * y + 2 * p2 * x * y + p1 * (r2 + 2 * y * y) - ud[..., 1]
        d_r = k1 + r2 * (2 * k2 + r2 * (3 * k3 + r2 * 4 * k4))
        d_x, d_y = 2 * x * d_r, 2 * y * d_r
        fx_x = d + d_x * x + 2 * p1 * y + 6 * p2 * x
        fx_y = d_y * x + 2 * p1 * x + 2 * p2 * y
        fy_x = d_x * y + 2 * p2 * y + 2 * p1 * x
        fy_y = d + d_y * y + 2 * p2 * x + 6 * p1 * y
        det = fx_x * fy_y - fx_y * fy_x
        det = np.where(np.abs(det) < 1e-12, 1e-12, det)
        u = u - np.stack([(fx * fy_y - fy * fx_y) / det, (fy * fx_x - fx * fy_x) / det], -1)
    return u


def source_coords(x: np.ndarray, y: np.ndarray, params, fisheye: bool) -> np.ndarray:
    """Pinhole ray directions (x, y, 1) -> distorted normalized coordinates in the source."""
    u = np.stack([x, y], -1)
    if fisheye:
        r = np.hypot(x, y)
        theta = np.arctan(r)
        u = u * np.where(r > 0, theta / np.maximum(r, 1e-300), 1.0)[..., None]
    return distort(u, params)


def _border(W: int, H: int, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-edge points around the image frame (where the undistorted image ends)."""
    t = np.linspace(0, 1, n)
    xs = np.concatenate([t * W, t * W, np.zeros(n), np.full(n, W)])
    ys = np.concatenate([np.zeros(n), np.full(n, H), t * H, t * H])
    return xs, ys


def _inside(scale, fx, fy, cx, cy, W, H, params, fisheye) -> bool:
    xs, ys = _border(W, H)
    src = source_coords((xs - cx) / (fx * scale), (ys - cy) / (fy * scale), params, fisheye)
    px, py = fx * src[:, 0] + cx, fy * src[:, 1] + cy
    return bool(np.all((px >= -1e-6) & (px <= W + 1e-6) & (py >= -1e-6) & (py <= H + 1e-6)))


def check_monotone(params, fisheye: bool, r_max: float, where: str) -> None:
    """The model must map the radius one-to-one over the image (else it cannot be inverted)."""
    from gpuforge.core.errors import BadInputError

    r = np.linspace(0, r_max, 2048)
    rd = np.linalg.norm(source_coords(r, np.zeros_like(r), params, fisheye), axis=-1)
    rd2 = np.linalg.norm(source_coords(np.zeros_like(r), r, params, fisheye), axis=-1)
    if np.any(np.diff(rd) <= 0) or np.any(np.diff(rd2) <= 0):
        raise BadInputError(f"{where}: the distortion {dict(zip(KEYS, params))} folds the image over (not "
                            "one-to-one inside the frame); check the camera parameters")


def pinhole_scale(fx, fy, cx, cy, W, H, params, fisheye: bool, where: str) -> float:
    """The smallest focal scale whose pinhole frame lies entirely inside the source image."""
    from gpuforge.core.errors import BadInputError

    lo, hi = 1e-3, 1e3
    if not _inside(hi, fx, fy, cx, cy, W, H, params, fisheye):
        raise BadInputError(f"{where}: cannot undistort: no pinhole view of this camera fits inside the image")
    for _ in range(60):
        mid = (lo * hi) ** 0.5
        if _inside(mid, fx, fy, cx, cy, W, H, params, fisheye):
            hi = mid
        else:
            lo = mid
    return hi


def bilinear(img: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Sample ``img`` [H, W, C] at continuous pixel positions (pixel centres at i + 0.5)."""
    H, W = img.shape[:2]
    x = np.clip(px - 0.5, 0, W - 1)
    y = np.clip(py - 0.5, 0, H - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, W - 1), np.minimum(y0 + 1, H - 1)
    tx, ty = (x - x0)[..., None], (y - y0)[..., None]
    top = img[y0, x0] * (1 - tx) + img[y0, x1] * tx
    bot = img[y1, x0] * (1 - tx) + img[y1, x1] * tx
    return (top * (1 - ty) + bot * ty).astype(img.dtype)


def undistort_image(img: np.ndarray, fx, fy, cx, cy, params, fisheye: bool, where: str):
    """``img`` [H, W, C] of a distorted camera -> (pinhole image of the same size, focal scale)."""
    H, W = img.shape[:2]
    s = pinhole_scale(fx, fy, cx, cy, W, H, params, fisheye, where)
    check_monotone(params, fisheye, np.hypot(max(cx, W - cx) / (fx * s), max(cy, H - cy) / (fy * s)), where)
    j, i = np.meshgrid(np.arange(H, dtype=np.float64) + 0.5, np.arange(W, dtype=np.float64) + 0.5, indexing="ij")
    src = source_coords((i - cx) / (fx * s), (j - cy) / (fy * s), params, fisheye)
    return bilinear(img, fx * src[..., 0] + cx, fy * src[..., 1] + cy), s
