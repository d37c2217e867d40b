"""Scenes: cameras + images in the Blender/nerf_synthetic and nerfstudio forms.

Both forms store camera-to-world matrices in the OpenGL convention (camera looks
down -Z, +Y up, +X right). OpenCV/COLMAP cameras look down +Z with +Y down, so
``c2w_cv = c2w_gl @ diag(1, -1, -1, 1)`` and COLMAP stores the inverse (world to
camera) as a quaternion + translation. Every reader error is a one-line
:class:`BadInputError` (exit 3).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError

GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
"""Flips the camera's Y and Z axes: right-multiplying a c2w converts OpenGL <-> OpenCV."""


# ----------------------------------------------------------------------------- conventions
def opengl_to_opencv(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world matrices [..., 4, 4]: OpenGL (Blender/nerfstudio) -> OpenCV."""
    return np.asarray(c2w, np.float64) @ GL_TO_CV


def opencv_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """Inverse of :func:`opengl_to_opencv` (the flip is its own inverse)."""
    return np.asarray(c2w, np.float64) @ GL_TO_CV


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """3x3 rotation -> unit quaternion (w, x, y, z) with w >= 0 (COLMAP's qvec)."""
    R = np.asarray(R, np.float64)
    w = math.sqrt(max(0.0, 1.0 + R[0, 0] + R[1, 1] + R[2, 2])) / 2
    x = math.sqrt(max(0.0, 1.0 + R[0, 0] - R[1, 1] - R[2, 2])) / 2
    y = math.sqrt(max(0.0, 1.0 - R[0, 0] + R[1, 1] - R[2, 2])) / 2
    z = math.sqrt(max(0.0, 1.0 - R[0, 0] - R[1, 1] + R[2, 2])) / 2
    x = math.copysign(x, R[2, 1] - R[1, 2])
    y = math.copysign(y, R[0, 2] - R[2, 0])
    z = math.copysign(z, R[1, 0] - R[0, 1])
    q = np.array([w, x, y, z])
    return q / np.linalg.norm(q)


def qvec_to_rotmat(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def opengl_c2w_to_colmap(c2w_gl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenGL camera-to-world -> COLMAP (qvec, tvec) of the world-to-camera transform."""
    w2c = np.linalg.inv(opengl_to_opencv(c2w_gl))
    return rotmat_to_qvec(w2c[:3, :3]), w2c[:3, 3].copy()


def colmap_to_opengl_c2w(qvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    w2c = np.eye(4)
    w2c[:3, :3] = qvec_to_rotmat(qvec)
    w2c[:3, 3] = tvec
    return opencv_to_opengl(np.linalg.inv(w2c))


def look_at_opengl(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """OpenGL camera-to-world for a camera at ``eye`` looking at ``target`` (Z up, as Blender)."""
    eye, target, up = (np.asarray(v, np.float64) for v in (eye, target, up))
    back = eye - target
    back /= np.linalg.norm(back)  # camera +Z points away from what it looks at
    right = np.cross(up, back)
    if np.linalg.norm(right) < 1e-9:
        right = np.cross(np.array([0.0, 1.0, 0.0]), back)
    right /= np.linalg.norm(right)
    cam_up = np.cross(back, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, cam_up, back, eye
    return m


# ----------------------------------------------------------------------------- data
@dataclass
class Cameras:
    """Pinhole cameras, OpenGL camera-to-world ``c2w`` [N, 4, 4]."""

    c2w: np.ndarray
    fx: np.ndarray
    fy: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    width: int
    height: int

    def __len__(self) -> int:
        return len(self.c2w)

    def subset(self, idx) -> "Cameras":
        return Cameras(self.c2w[idx], self.fx[idx], self.fy[idx], self.cx[idx], self.cy[idx], self.width, self.height)

    def scaled(self, width: int, height: int) -> "Cameras":
        sx, sy = width / self.width, height / self.height
        return Cameras(self.c2w, self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy, width, height)

    def to_dict(self) -> dict:
        return {"c2w": self.c2w.tolist(), "fx": self.fx.tolist(), "fy": self.fy.tolist(), "cx": self.cx.tolist(),
                "cy": self.cy.tolist(), "width": self.width, "height": self.height}

    @classmethod
    def from_dict(cls, d: dict) -> "Cameras":
        return cls(np.asarray(d["c2w"], np.float64), *(np.asarray(d[k], np.float64) for k in ("fx", "fy", "cx", "cy")),
                   int(d["width"]), int(d["height"]))


@dataclass
class Split:
    cameras: Cameras
    images: np.ndarray
    """[N, H, W, 3] float32 in [0, 1], composited on the scene's background."""
    alphas: np.ndarray
    """[N, H, W] float32 coverage (1 where the file has no alpha channel)."""
    names: list[str] = field(default_factory=list)


@dataclass
class Scene:
    root: Path
    form: str
    """``blender`` or ``nerfstudio``."""
    splits: dict[str, Split]
    background: np.ndarray
    aabb: np.ndarray
    """[2, 3] bounds of the content (from ``aabb`` in the JSON, else the camera-derived default)."""
    points: np.ndarray | None = None
    """[P, 3] SfM points (nerfstudio's ``ply_file_path``), in the cameras' world frame, or None."""
    point_colors: np.ndarray | None = None
    """[P, 3] their colours in [0, 1]."""
    notes: list[str] = field(default_factory=list)
    """What the loader did that a user should know (undistortion, split rule)."""

    def split(self, name: str) -> Split:
        if name in self.splits:
            return self.splits[name]
        if name == "val" and "test" in self.splits:
            return self.splits["test"]
        raise BadInputError(f"scene {self.root} has no {name!r} split (it has: {', '.join(self.splits)})")


# ----------------------------------------------------------------------------- reading
def parse_background(text: str | None) -> np.ndarray:
    names = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "gray": (0.5, 0.5, 0.5), "grey": (0.5, 0.5, 0.5)}
    if text is None:
        return np.ones(3, np.float32)
    if text.lower() in names:
        return np.array(names[text.lower()], np.float32)
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != 3 or not all(0 <= v <= 1 for v in vals):
        raise BadInputError(f"background {text!r} is not white/black/gray or 'r,g,b' in [0, 1]")
    return np.array(vals, np.float32)


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInputError(f"scene file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"malformed JSON in {path}: {exc}; fix or regenerate the scene file") from None
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise BadInputError(f"{path} has no 'frames' list; is it a Blender/nerfstudio transforms file?")
    return data


def check_c2w(m, where: str) -> np.ndarray:
    """A camera-to-world matrix: 4x4 (or 3x4), finite, last row 0 0 0 1, rotation orthonormal."""
    try:
        a = np.asarray(m, np.float64)
    except (TypeError, ValueError):
        raise BadInputError(f"{where}: transform_matrix is not a numeric matrix") from None
    if a.shape == (3, 4):
        a = np.vstack([a, [0, 0, 0, 1]])
    if a.shape != (4, 4):
        raise BadInputError(f"{where}: transform_matrix has shape {a.shape}, expected 4x4")
    if not np.all(np.isfinite(a)):
        raise BadInputError(f"{where}: transform_matrix has NaN/inf entries")
    if not np.allclose(a[3], [0, 0, 0, 1], atol=1e-5):
        raise BadInputError(f"{where}: transform_matrix last row is {a[3].tolist()}, expected [0, 0, 0, 1]")
    R = a[:3, :3]
    if not np.allclose(R.T @ R, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        raise BadInputError(f"{where}: transform_matrix rotation is not orthonormal (det {np.linalg.det(R):.3g}); "
                            "scaled or mirrored cameras are not supported")
    return a


def _read_image(path: Path, background: np.ndarray, size: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise BadInputError(f"image not found: {path}; the scene's frames list a file that is missing")
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("RGBA") if im.mode in ("RGBA", "LA", "P", "PA") else im.convert("RGB")
            if size is not None and im.size != size:
                im = im.resize(size, Image.BILINEAR if im.mode == "RGB" else Image.BOX)
            a = np.asarray(im, np.float32) / 255.0
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInputError(f"cannot read image {path}: {exc}") from None
    if a.shape[-1] == 4:
        alpha = a[..., 3]
        rgb = a[..., :3] * alpha[..., None] + background * (1 - alpha[..., None])
    else:
        alpha = np.ones(a.shape[:2], np.float32)
        rgb = a
    return rgb.astype(np.float32), alpha.astype(np.float32)


def _num(d: dict, key: str, where: str) -> float:
    v = d.get(key)
    if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise BadInputError(f"{where}: '{key}' must be a positive number, got {v!r}")
    return float(v)


def _frames_to_split(root: Path, frames: list, meta: dict, form: str, where: Path, background, res: int | None,
                     notes: list[str] | None = None) -> Split:
    notes = [] if notes is None else notes
    c2ws, fxs, fys, cxs, cys, imgs, alphas, names = [], [], [], [], [], [], [], []
    undistorted: list[float] = []
    W = H = None
    for i, fr in enumerate(frames):
        fw = f"{where} frame {i}"
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise BadInputError(f"{fw}: needs 'file_path' and 'transform_matrix'")
        c2ws.append(check_c2w(fr["transform_matrix"], fw))
        rel = str(fr["file_path"])
        path = root / rel
        if form == "blender" and path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            path = root / (rel + ".png")
        rgb, alpha = _read_image(path, background, None if W is None else (W, H))
        h0, w0 = rgb.shape[:2]
        if W is None:
            W, H = w0, h0
        if form == "blender":
            fx = 0.5 * W / math.tan(0.5 * _num(meta, "camera_angle_x", str(where)))
            fy = 0.5 * H / math.tan(0.5 * meta["camera_angle_y"]) if "camera_angle_y" in meta else fx
            cx, cy = W / 2.0, H / 2.0
        else:
            src = {**meta, **{k: fr[k] for k in ("fl_x", "fl_y", "cx", "cy", "w", "h", *DIST_KEYS) if k in fr}}
            fw_, fh_ = _num(src, "w", fw), _num(src, "h", fw)
            sx, sy = W / fw_, H / fh_  # intrinsics are given for (w, h); the image may be downscaled
            fx, fy = _num(src, "fl_x", fw) * sx, float(src.get("fl_y", src["fl_x"])) * sy
            cx, cy = float(src.get("cx", fw_ / 2)) * sx, float(src.get("cy", fh_ / 2)) * sy
            params = [_coef(src, k, fw) for k in DIST_KEYS]
            fisheye = _camera_model(meta, where) == "fisheye"
            if fisheye or any(params):
                from gpuforge.plugins.radiance.distortion import undistort_image

                both, scale = undistort_image(np.concatenate([rgb, alpha[..., None]], -1), fx, fy, cx, cy, params,
                                              fisheye, fw)
                rgb, alpha = np.ascontiguousarray(both[..., :3]), np.ascontiguousarray(both[..., 3])
                fx, fy = fx * scale, fy * scale
                undistorted.append(scale)
        fxs.append(fx), fys.append(fy), cxs.append(cx), cys.append(cy)
        imgs.append(rgb), alphas.append(alpha), names.append(rel)
    if not frames:
        raise BadInputError(f"{where}: the frames list is empty")
    if undistorted:
        notes.append(f"{len(undistorted)} frame(s) with {meta.get('camera_model', 'OPENCV')} distortion resampled to "
                     f"pinhole cameras (focal length x{min(undistorted):.3f}..x{max(undistorted):.3f}, same size)")
    cams = Cameras(np.stack(c2ws), *(np.asarray(v, np.float64) for v in (fxs, fys, cxs, cys)), W, H)
    images, alphas_ = np.stack(imgs), np.stack(alphas)
    if res is not None and res != W:
        from PIL import Image

        newh = max(1, round(H * res / W))
        images = np.stack([np.asarray(Image.fromarray((im * 255 + 0.5).astype(np.uint8)).resize((res, newh), Image.BOX),
                                      np.float32) / 255 for im in images])
        alphas_ = np.stack([np.asarray(Image.fromarray(a).resize((res, newh), Image.BOX), np.float32) for a in alphas_])
        cams = cams.scaled(res, newh)
    return Split(cams, images, alphas_, names)


def load_scene(path: str | Path, background: str | None = None, res: int | None = None,
               splits: tuple[str, ...] = ("train", "val", "test")) -> Scene:
    """Read a Blender (``transforms_<split>.json``) or nerfstudio (``transforms.json``) scene."""
    root = Path(path)
    if not root.exists():
        raise BadInputError(f"scene not found: {root}")
    if root.is_file():
        root = root.parent
    bg = parse_background(background)
    if (root / "transforms_train.json").exists():
        out, aabb = {}, None
        for s in splits:
            f = root / f"transforms_{s}.json"
            if not f.exists():
                if s == "train":
                    raise BadInputError(f"scene file not found: {f}")
                continue
            meta = _load_json(f)
            if "camera_angle_x" not in meta:
                raise BadInputError(f"{f}: missing 'camera_angle_x' (the Blender form needs it)")
            out[s] = _frames_to_split(root, meta["frames"], meta, "blender", f, bg, res)
            aabb = meta.get("aabb", aabb)
        return Scene(root, "blender", out, bg, _aabb(aabb, out["train"].cameras, root))
    f = root / "transforms.json"
    if not f.exists():
        raise BadInputError(f"{root} has neither transforms_train.json (Blender) nor transforms.json (nerfstudio)")
    meta = _load_json(f)
    _camera_model(meta, f)  # an unsupported camera model is refused before any image is read
    # nerfstudio sorts the frames by file name before splitting
    frames = sorted(meta["frames"], key=lambda fr: str(fr.get("file_path", "")) if isinstance(fr, dict) else "")
    names = [str(fr.get("file_path", "")) if isinstance(fr, dict) else "" for fr in frames]
    notes: list[str] = []
    if any(f"{k}_filenames" in meta for k in ("train", "val", "test")):
        if "train_filenames" not in meta:
            raise BadInputError(f"{f}: has val/test_filenames but no train_filenames")
        parts = {}
        for k in ("train", "val", "test"):
            if f"{k}_filenames" in meta:
                want = {_norm(x) for x in meta[f"{k}_filenames"]}
                missing = want - {_norm(n) for n in names}
                if missing:
                    raise BadInputError(f"{f}: {k}_filenames lists {len(missing)} file(s) that no frame has, e.g. "
                                        f"{sorted(missing)[0]!r}")
                parts[k] = [fr for fr, n in zip(frames, names) if _norm(n) in want]
        if "test" not in parts and "val" in parts:
            parts["test"] = parts["val"]
    else:  # nerfstudio's default eval mode "fraction": 90% for training, spread evenly, the rest held out
        i_train, i_test = split_fraction(len(frames), 0.9)
        parts = {"train": [frames[i] for i in i_train], "test": [frames[i] for i in i_test]}
        notes.append(f"split as nerfstudio's default (train_split_fraction 0.9): {len(i_train)} train, "
                     f"{len(i_test)} test frames")
        if not i_test:
            parts["test"] = parts["train"]
            notes.append(f"only {len(frames)} frames: the 90/10 split holds none out, so evaluation uses the training "
                         "frames (add test_filenames to transforms.json to hold some out)")
    out = {k: _frames_to_split(root, v, meta, "nerfstudio", f, bg, res, notes) for k, v in parts.items() if v}
    if "train" not in out:
        raise BadInputError(f"{f}: no training frames")
    points = colors = None
    if "ply_file_path" in meta:
        points, colors = read_points(root / str(meta["ply_file_path"]), f)
    return Scene(root, "nerfstudio", out, bg, _aabb(meta.get("aabb"), out["train"].cameras, root), points, colors,
                 notes)


DIST_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
UNSUPPORTED_MODELS = ("EQUIRECTANGULAR", "OMNIDIRECTIONALSTEREO_L", "OMNIDIRECTIONALSTEREO_R", "VR180_L", "VR180_R",
                      "FISHEYE624", "ORTHOPHOTO")


def _camera_model(meta: dict, where) -> str:
    """``perspective`` or ``fisheye`` for nerfstudio's ``camera_model``; others refused (exit 4)."""
    from gpuforge.core.errors import UnsupportedError
    from gpuforge.plugins.radiance.distortion import FISHEYE, PERSPECTIVE

    model = meta.get("camera_model", "OPENCV")
    if model in PERSPECTIVE:
        return "perspective"
    if model in FISHEYE:
        return "fisheye"
    raise UnsupportedError(f"{where}: camera_model {model!r} is not supported (gpuforge renders pinhole cameras; it "
                           f"undistorts {', '.join(PERSPECTIVE + FISHEYE)})")


def _coef(src: dict, key: str, where: str) -> float:
    v = src.get(key, 0.0)
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        raise BadInputError(f"{where}: distortion coefficient {key!r} must be a finite number, got {v!r}")
    return float(v)


def _norm(name: str) -> str:
    """File names compare without a leading './' (nerfstudio resolves both against the folder)."""
    n = str(name)
    return n[2:] if n.startswith("./") else n


def split_fraction(n: int, train_fraction: float) -> tuple[list[int], list[int]]:
    """nerfstudio's ``get_train_eval_split_fraction``: ceil(n * f) training frames at
    ``linspace(0, n - 1, ...)`` (integer part), the others held out."""
    n_train = math.ceil(n * train_fraction)
    i_train = np.linspace(0, n - 1, n_train, dtype=int)
    return [int(i) for i in i_train], [i for i in range(n) if i not in set(i_train.tolist())]


def read_points(path: Path, where) -> tuple[np.ndarray, np.ndarray]:
    """SfM points of ``ply_file_path``: (xyz [P, 3], rgb [P, 3] in [0, 1]; grey when the PLY has no colour)."""
    from plyfile import PlyData

    if not path.is_file():
        raise BadInputError(f"{where}: ply_file_path {path.name!r} not found ({path})")
    try:
        v = PlyData.read(str(path))["vertex"]
        names = [p.name for p in v.properties]
        xyz = np.stack([np.asarray(v[k], np.float64) for k in ("x", "y", "z")], 1)
    except Exception as exc:  # plyfile raises several types for malformed files
        raise BadInputError(f"cannot read the SfM points {path}: {exc}") from None
    if not np.all(np.isfinite(xyz)):
        raise BadInputError(f"{path}: SfM points with NaN/inf coordinates")
    if len(xyz) == 0:
        raise BadInputError(f"{path}: no SfM points")
    if all(k in names for k in ("red", "green", "blue")):
        rgb = np.stack([np.asarray(v[k], np.float64) for k in ("red", "green", "blue")], 1)
        if v["red"].dtype.kind in "ui":
            rgb = rgb / 255.0
        rgb = np.clip(np.nan_to_num(rgb, nan=0.5), 0, 1)
    else:
        rgb = np.full_like(xyz, 0.5)
    return xyz, rgb


def _aabb(aabb, cams: Cameras, root: Path) -> np.ndarray:
    if aabb is not None:
        a = np.asarray(aabb, np.float64)
        if a.shape != (2, 3) or not np.all(a[1] > a[0]):
            raise BadInputError(f"{root}: 'aabb' must be [[xmin, ymin, zmin], [xmax, ymax, zmax]]")
        return a
    # Cameras look at the content: a cube half as far out as the mean camera distance.
    r = float(np.linalg.norm(cams.c2w[:, :3, 3], axis=1).mean()) * 0.5
    return np.array([[-r] * 3, [r] * 3])


# ----------------------------------------------------------------------------- rays
def camera_rays(cams: Cameras, idx: int, jitter: np.ndarray | None = None, width: int | None = None,
                height: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """World-space ray origins and unit directions [H*W, 3] through pixel centres (+jitter)."""
    W, H = width or cams.width, height or cams.height
    sx, sy = W / cams.width, H / cams.height
    j, i = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    u, v = i.ravel() + 0.5, j.ravel() + 0.5
    if jitter is not None:
        u, v = u + jitter[:, 0], v + jitter[:, 1]
    return pixel_rays(cams.c2w[idx], cams.fx[idx] * sx, cams.fy[idx] * sy, cams.cx[idx] * sx, cams.cy[idx] * sy, u, v)


def pixel_rays(c2w, fx, fy, cx, cy, u, v) -> tuple[np.ndarray, np.ndarray]:
    """Rays through pixel coordinates (u right, v down, in pixels) of an OpenGL camera."""
    d_cam = np.stack([(u - cx) / fx, -(v - cy) / fy, -np.ones_like(u)], -1)  # OpenGL: -Z forward, +Y up
    d = d_cam @ np.asarray(c2w)[:3, :3].T
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    o = np.broadcast_to(np.asarray(c2w)[:3, 3], d.shape)
    return o.astype(np.float32), d.astype(np.float32)


def pixel_rays_torch(c2w, fx, fy, cx, cy, u, v):
    """:func:`pixel_rays` in torch on the tensors' device: ``c2w`` [R, 3+, 4] (or one [3+, 4])
    and intrinsics [R] (or scalars) per ray; float32 origins and unit directions [R, 3]."""
    import torch

    d_cam = torch.stack([(u - cx) / fx, -(v - cy) / fy, -torch.ones_like(u)], -1)  # OpenGL: -Z forward, +Y up
    R = c2w[..., :3, :3]
    d = (R @ d_cam[..., None])[..., 0] if R.dim() == 3 else d_cam @ R.T
    d = d / d.norm(dim=-1, keepdim=True)
    o = c2w[..., :3, 3].expand_as(d) if c2w.dim() == 2 else c2w[:, :3, 3]
    return o.float().contiguous(), d.float().contiguous()

