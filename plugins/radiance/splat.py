"""3D Gaussian Splatting (Kerbl et al. 2023): model, differentiable rendering through this
plugin's tile rasterizer, training with the paper's densify / prune / opacity-reset
schedule, and the Inria PLY layout.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gpuforge.core.errors import BadInputError, UnsupportedError
from gpuforge.core.kernels import call
from gpuforge.plugins.radiance import kernel_io as kio
from gpuforge.plugins.radiance.optim import Adam
from gpuforge.plugins.radiance.rasterize import DILATION, project_torch
from gpuforge.plugins.radiance.scene import GL_TO_CV, Cameras

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
         1.445305721320277, -0.5900435899266435)


def eval_sh(deg: int, sh: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Colours from SH coefficients sh [N, K, 3] (K = (deg+1)^2) along unit dirs [N, 3] (Inria's ordering)."""
    out = SH_C0 * sh[:, 0]
    if deg < 1:
        return out
    x, y, z = dirs[:, 0:1], dirs[:, 1:2], dirs[:, 2:3]
    out = out - SH_C1 * y * sh[:, 1] + SH_C1 * z * sh[:, 2] - SH_C1 * x * sh[:, 3]
    if deg < 2:
        return out
    xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
    out = (out + SH_C2[0] * xy * sh[:, 4] + SH_C2[1] * yz * sh[:, 5] + SH_C2[2] * (2 * zz - xx - yy) * sh[:, 6]
           + SH_C2[3] * xz * sh[:, 7] + SH_C2[4] * (xx - yy) * sh[:, 8])
    if deg < 3:
        return out
    return (out + SH_C3[0] * y * (3 * xx - yy) * sh[:, 9] + SH_C3[1] * xy * z * sh[:, 10]
            + SH_C3[2] * y * (4 * zz - xx - yy) * sh[:, 11] + SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy) * sh[:, 12]
            + SH_C3[4] * x * (4 * zz - xx - yy) * sh[:, 13] + SH_C3[5] * z * (xx - yy) * sh[:, 14]
            + SH_C3[6] * x * (xx - 3 * yy) * sh[:, 15])


# ============================================================================ rasterizer as autograd
class RasterizeFn(torch.autograd.Function):
    """image, alpha = rasterize(means2d, conics, colors, opacities) for fixed tile lists.

    Both passes are registered kernels (``radiance.gs_rasterize_fwd`` / ``_bwd``) called
    through the registry with the tensors' own device: CUDA tensors go to numba-cuda
    without a copy, CPU tensors to numba-cpu (or to numba-cuda on a simulated CUDA run)."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, ranges, ids, W, H, bg):
        args = [kio.arg(a) for a in (means2d, conics, colors, opacities)]
        image, final_T, n_contrib = call("radiance.gs_rasterize_fwd", *args, ranges, ids, W, H, bg)
        ctx.saved = (args, ranges, ids, W, H, bg, final_T, n_contrib, means2d.device)
        image, final_T = kio.tensor(image, means2d.device), kio.tensor(final_T, means2d.device)
        alpha = 1 - final_T
        ctx.mark_non_differentiable(alpha)
        return image, alpha

    @staticmethod
    def backward(ctx, grad_image, grad_alpha):
        args, ranges, ids, W, H, bg, final_T, n_contrib, device = ctx.saved
        g = call("radiance.gs_rasterize_bwd", *args, ranges, ids, W, H, bg, final_T, n_contrib, kio.arg(grad_image))
        return (*(kio.tensor(x, device) for x in g), None, None, None, None, None)


def viewmat_of(c2w_gl: np.ndarray) -> np.ndarray:
    return np.linalg.inv(np.asarray(c2w_gl, np.float64) @ GL_TO_CV).astype(np.float32)


def project(means, scales, quats, c2w, fx, fy, cx, cy, W, H, dilation: float = DILATION):
    """EWA projection: differentiable torch (the reference) when gradients are wanted,
    else the ``radiance.gs_project`` kernel on the data's device."""
    view = viewmat_of(c2w)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (means, scales, quats)):
        return project_torch(means, scales, quats, torch.from_numpy(view).to(means.device), float(fx), float(fy),
                             float(cx), float(cy), int(W), int(H), float(dilation))
    K = np.array([fx, fy, cx, cy], np.float32)
    out = call("radiance.gs_project", kio.arg(means), kio.arg(scales), kio.arg(quats), view, K, int(W), int(H),
               float(dilation))
    return tuple(kio.tensor(o, means.device) for o in out)


def opacity_compensation(conics: torch.Tensor, dilation: float) -> torch.Tensor:
    """Mip-Splatting's 2-D filter (Yu et al. 2024, eq. 9; gsplat's "antialiased" mode): a
    Gaussian dilated by ``dilation`` px² keeps its integral when its opacity is scaled by
    sqrt(det(cov2d) / det(cov2d + dilation I)). From the conic (a, b, c) of the dilated
    covariance that ratio is 1 - dilation (a + c) + dilation² (a c - b²); culled Gaussians
    (conic 0) get 1. Differentiable."""
    a, b, c = conics.unbind(-1)
    ratio = 1 - dilation * (a + c) + dilation * dilation * (a * c - b * b)
    return torch.sqrt(ratio.clamp(min=1e-12))


def bin_tiles(m2d, radii, depths, W, H):
    """Tile lists (``radiance.gs_bin_tiles``) in the form the rasterizer kernels take."""
    return call("radiance.gs_bin_tiles", kio.arg(m2d), kio.arg(radii), kio.arg(depths), int(W), int(H))


def render_gaussians_raw(means, scales, quats, colors, opacities, c2w, fx, fy, cx, cy, W, H, bg,
                         dilation: float = DILATION, antialiased: bool = False):
    """Render activated Gaussians (scales, opacities in [0,1], RGB colours) on their device:
    (rgb [H,W,3], alpha [H,W]). ``dilation`` is the screen-space low-pass (px²) added to
    every projected covariance; ``antialiased`` scales opacities to keep each Gaussian's
    integral (:func:`opacity_compensation`)."""
    m2d, conics, depths, radii = project(means, scales, quats, c2w, fx, fy, cx, cy, W, H, dilation)
    if antialiased:
        opacities = opacities * opacity_compensation(conics, dilation)
    ranges, ids = bin_tiles(m2d, radii, depths, W, H)
    bg = np.asarray(bg, np.float32)
    return RasterizeFn.apply(m2d, conics, colors, opacities, ranges, ids, int(W), int(H), bg)


# ============================================================================ model
MIP_DILATION = 0.1
"""Mip-Splatting's 2-D filter variance (px²): about a one-pixel box filter (variance 1/12)."""


def filter_config(antialiased: bool | None, dilation: float | None) -> dict:
    """SplatConfig fields for the CLI's ``--antialiased/--classic`` and ``--dilation``
    (None: the defaults)."""
    out = {}
    if antialiased is not None:
        out["antialiased"] = bool(antialiased)
        out["dilation"] = MIP_DILATION if antialiased else DILATION
    if dilation is not None:
        out["dilation"] = float(dilation)
    return out


@dataclass
class SplatConfig:
    steps: int = 3000
    sh_degree: int = 3
    init_points: int = 1000
    lr_means: float = 1.6e-4
    lr_means_final: float = 1.6e-6
    lr_dc: float = 2.5e-3
    lr_rest: float = 2.5e-3 / 20
    lr_opacity: float = 0.05
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lambda_dssim: float = 0.2
    densify_from_frac: float = 0.15
    """Densification starts at this fraction of training or at ``densify_from_step``,
    whichever comes first (500 of 30k steps in 3DGS is 1.7%; short runs need a few hundred
    steps of fitting first)."""
    densify_from_step: int = 500
    """3DGS's start of densification, in steps: the random initial Gaussians need a fixed
    number of steps to settle, not a share of the budget (at 15% of a 15-CPU-minute run,
    ~1900 steps, the model sat at ~21 dB for the first 2 minutes)."""
    densify_until_frac: float = 0.6
    densify_every: int = 100
    densify_grad: float = 0.0002
    percent_dense: float = 0.01
    views_per_step: int = 1
    """Training views rendered per optimisation step (their mean loss); with --nproc N
    they are split over the N processes."""
    opacity_reset_frac: float = 0.0
    """Reset opacities every this fraction of training while densifying (3DGS: 3k of 30k
    steps; 0 = never)."""
    sh_up_frac: float = 0.33
    """One more SH degree every this fraction of training (3DGS: 1000 of 30k steps)."""
    max_gaussians: int = 200_000
    seed: int = 0
    dilation: float = MIP_DILATION
    """Screen-space low-pass added to every projected 2-D covariance, in pixels² (3DGS: 0.3).
    With ``antialiased`` it is Mip-Splatting's 2-D filter (0.1 there: about one pixel's box
    filter, what a camera's pixel integrates over)."""
    antialiased: bool = True
    """Scale each Gaussian's opacity by sqrt(det cov2d / det(cov2d + dilation I)) so the
    dilation keeps its integral (Mip-Splatting's 2-D filter; gsplat's ``antialiased``). The
    default: 3DGS's 0.3 dilation blurs every edge by more than a pixel's footprint; at 15
    CPU-minutes this filter gave +2.3 dB on the table scene, +5.9 dB on cubes, +0.6 dB on
    spheres and the same on gaussians (docs/BENCHMARKS.md). ``False`` with ``dilation`` 0.3 is 3DGS ("classic"),
    what Inria-layout viewers render."""


class Gaussians:
    """Raw (optimized) parameters in the Inria convention: log scales, logit opacity, SH;
    ``dilation`` / ``antialiased``: the screen-space filter the model was trained with
    (:class:`SplatConfig`), used whenever it is rendered."""

    def __init__(self, means, log_scales, quats, sh_dc, sh_rest, opacity_logit, sh_degree: int,
                 dilation: float = DILATION, antialiased: bool = False):
        self.means, self.log_scales, self.quats = means, log_scales, quats
        self.sh_dc, self.sh_rest, self.opacity_logit = sh_dc, sh_rest, opacity_logit
        self.sh_degree = sh_degree
        self.dilation, self.antialiased = float(dilation), bool(antialiased)

    PARAMS = ("means", "log_scales", "quats", "sh_dc", "sh_rest", "opacity_logit")

    def tensors(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in self.PARAMS}

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def device(self) -> torch.device:
        return self.means.device

    def to(self, device) -> "Gaussians":
        return Gaussians(*(getattr(self, k).to(device) for k in self.PARAMS), self.sh_degree, self.dilation,
                         self.antialiased)

    @classmethod
    def from_dict(cls, d: dict, sh_degree: int, dilation: float = DILATION, antialiased: bool = False) -> "Gaussians":
        return cls(*(d[k].float().contiguous() for k in cls.PARAMS), sh_degree, dilation, antialiased)

    def filter_info(self) -> dict:
        """The screen-space filter, as recorded in a run's config.json."""
        return {"dilation": self.dilation, "antialiased": self.antialiased}

    def colors(self, c2w: np.ndarray, degree: int | None = None) -> torch.Tensor:
        deg = self.sh_degree if degree is None else min(degree, self.sh_degree)
        sh = torch.cat([self.sh_dc, self.sh_rest], 1)
        if deg == 0:
            return torch.clamp(SH_C0 * sh[:, 0] + 0.5, min=0)
        campos = torch.as_tensor(np.asarray(c2w)[:3, 3], dtype=torch.float32, device=self.device)
        dirs = self.means - campos
        dirs = dirs / dirs.norm(dim=1, keepdim=True).clamp(min=1e-12)
        return torch.clamp(eval_sh(deg, sh[:, :(deg + 1) ** 2], dirs) + 0.5, min=0)

    def render(self, cams: Cameras, i: int, bg, degree: int | None = None, width: int | None = None,
               height: int | None = None):
        W, H = width or cams.width, height or cams.height
        sx, sy = W / cams.width, H / cams.height
        return render_gaussians_raw(self.means, torch.exp(self.log_scales), self.quats, self.colors(cams.c2w[i], degree),
                                    torch.sigmoid(self.opacity_logit), cams.c2w[i], cams.fx[i] * sx, cams.fy[i] * sy,
                                    cams.cx[i] * sx, cams.cy[i] * sy, W, H, bg, self.dilation, self.antialiased)


def init_gaussians(n: int, aabb: np.ndarray, sh_degree: int, seed: int, device=None) -> Gaussians:
    """Random points in the scene box (3DGS's initialisation for synthetic scenes), scale =
    mean distance to the 3 nearest neighbours, opacity 0.1."""
    rng = np.random.default_rng(seed)
    lo, hi = np.asarray(aabb, np.float64)
    pts = rng.uniform(lo, hi, (n, 3))
    return gaussians_at(pts, rng.uniform(0, 1, (n, 3)), sh_degree, device)


def gaussians_at(pts: np.ndarray, rgb: np.ndarray, sh_degree: int, device=None) -> Gaussians:
    """Isotropic Gaussians at ``pts`` with colours ``rgb`` (SH DC only), scale = mean distance
    to the 3 nearest neighbours (the shared ``kernels.pairwise_topk`` kernel), opacity 0.1
    (3DGS's initialisation)."""
    n = len(pts)
    p32 = np.ascontiguousarray(pts, np.float32)
    k = min(3, n - 1)
    if k > 0:
        d, _ = call("kernels.pairwise_topk", p32, p32, k, exclude_self=True)
        dist = np.maximum(np.asarray(kio.tensor(d).cpu(), np.float64).mean(1), 1e-7)
    else:
        dist = np.full(n, 0.1)
    K = (sh_degree + 1) ** 2
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float32, device=device)  # noqa: E731
    return Gaussians(t(pts), t(np.log(np.repeat(dist[:, None], 3, 1))), t(np.tile([1.0, 0, 0, 0], (n, 1))),
                     t((np.asarray(rgb) - 0.5) / SH_C0)[:, None, :], torch.zeros((n, K - 1, 3), device=device),
                     t(np.full(n, math.log(0.1 / 0.9))), sh_degree)


# ============================================================================ losses and metrics
def _gauss_1d(size=11, sigma=1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2).float() / (2 * sigma * sigma))
    return g / g.sum()


_WIN: dict = {}


def _blur(z: torch.Tensor) -> torch.Tensor:
    """The 11x11 Gaussian window (sigma 1.5) over every channel of ``z`` [1, C, H, W], zero
    padded: the window is the outer product of a 1-D Gaussian with itself, so it runs as a
    column pass and a row pass (22 taps a pixel, not 121)."""
    g = _WIN.get(z.device)
    if g is None:
        g = _WIN[z.device] = _gauss_1d().to(z.device)
    C, k = z.shape[1], g.numel()
    z = torch.nn.functional.conv2d(z, g.view(1, 1, k, 1).expand(C, 1, k, 1), padding=(k // 2, 0), groups=C)
    return torch.nn.functional.conv2d(z, g.view(1, 1, 1, k).expand(C, 1, 1, k), padding=(0, k // 2), groups=C)


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM [3, H, W] of [H, W, 3] images: the 11x11 Gaussian window (sigma 1.5),
    zero padding at the borders. The five local statistics are blurred in one call
    (15 channels); with five full 11x11 convolutions the loss was a third of a 128x128
    training step."""
    x, y = a.permute(2, 0, 1), b.permute(2, 0, 1)
    mx, my, xx, yy, xy = _blur(torch.cat([x, y, x * x, y * y, x * y], 0)[None])[0].split(3)
    sxx, syy, sxy = xx - mx * mx, yy - my * my, xy - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    return ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))


def ssim_torch(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM of [H, W, 3] images (11x11 Gaussian window, as the 3DGS loss and evaluation)."""
    return ssim_map(a, b).mean()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - b) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM with the 11x11 Gaussian window (sigma 1.5), as the 3DGS/NeRF evaluation scripts."""
    with torch.no_grad():
        return float(ssim_torch(torch.from_numpy(np.clip(a, 0, 1).astype(np.float32)),
                                torch.from_numpy(np.asarray(b, np.float32))))


# ============================================================================ training
class Trainer:
    """3DGS training on one device. With ``comm`` (a :class:`~gpuforge.plugins.radiance.
    distributed.Comm` of ``world`` processes) it is one rank of a data-parallel run: each
    step draws ``views_per_step`` training views, one from each of as many interleaved
    shards of the training set; rank r renders the views of its own shards, the
    gradients (and the densification statistics) are summed over all ranks, and every
    rank applies the same update, so the parameters stay identical everywhere."""

    def __init__(self, scene, cfg: SplatConfig, log=None, device=None, comm=None):
        from gpuforge.plugins.radiance.distributed import Comm

        self.scene, self.cfg, self.log = scene, cfg, log
        self.comm = comm or Comm.single()
        self.device = torch.device("cpu") if device is None else torch.device(device)
        torch.manual_seed(cfg.seed)
        self.train = scene.split("train")
        self.test = scene.split("test")
        self.bg = scene.background
        self.extent = float(np.linalg.norm(self.train.cameras.c2w[:, :3, 3]
                                           - self.train.cameras.c2w[:, :3, 3].mean(0), axis=1).max()) * 1.1
        if getattr(scene, "points", None) is not None:  # SfM points (nerfstudio's ply_file_path), as 3DGS
            self.g = gaussians_at(scene.points, scene.point_colors, cfg.sh_degree, self.device)
            self.init = f"{len(scene.points)} SfM points"
        else:  # random points in the box, as 3DGS does for synthetic scenes
            self.g = init_gaussians(cfg.init_points, scene.aabb, cfg.sh_degree, cfg.seed, self.device)
            self.init = f"{cfg.init_points} random points"
        if not (math.isfinite(cfg.dilation) and cfg.dilation >= 0):
            raise BadInputError(f"dilation must be a finite number >= 0 (pixels²), got {cfg.dilation}")
        self.g.dilation, self.g.antialiased = float(cfg.dilation), bool(cfg.antialiased)
        self._make_optimizer()
        self._reset_stats()
        self.resets = 0
        self.rng = np.random.default_rng(cfg.seed)
        B, world, rank = cfg.views_per_step, self.comm.world, self.comm.rank
        if B < 1 or B % world:
            raise ValueError(f"views_per_step {B} must be a positive multiple of the {world} processes")
        n = len(self.train.cameras)
        if B > n:
            raise BadInputError(f"{B} views per step, but the scene has {n} training views")
        self.shards = [np.arange(b, n, B) for b in range(B)]
        self.mine = list(range(rank * B // world, (rank + 1) * B // world))
        own = sorted(int(i) for b in self.mine for i in self.shards[b])
        # only this rank's shards go to its device
        self.images = {i: torch.from_numpy(self.train.images[i]).to(self.device) for i in own}
        self.bg32 = np.asarray(self.bg, np.float32)

    def _make_optimizer(self):
        c = self.cfg
        lrs = {"means": c.lr_means * self.extent, "log_scales": c.lr_scales, "quats": c.lr_quats, "sh_dc": c.lr_dc,
               "sh_rest": c.lr_rest, "opacity_logit": c.lr_opacity}
        for k in Gaussians.PARAMS:
            getattr(self.g, k).requires_grad_(True)
        self.opt = Adam(self.g.tensors(), lrs, eps=1e-15)

    def _reset_stats(self):
        n = len(self.g)
        self.grad_accum = torch.zeros(n, device=self.device)
        self.denom = torch.zeros(n, device=self.device)
        self.max_radii = torch.zeros(n, device=self.device)

    def lr_means_at(self, p: float) -> float:
        """Position learning rate at training progress ``p`` in [0, 1] (exponential decay)."""
        c = self.cfg
        t = min(max(p, 0.0), 1.0)
        return math.exp(math.log(c.lr_means * self.extent) * (1 - t) + math.log(c.lr_means_final * self.extent) * t)

    def views(self) -> list[int]:
        """This step's views: one per shard, drawn from one generator every rank shares."""
        return [int(sh[self.rng.integers(len(sh))]) for sh in self.shards]

    def _render_loss(self, i: int, deg: int):
        c, cams, g = self.cfg, self.train.cameras, self.g
        W, H = cams.width, cams.height
        m2d, conics, depths, radii = project(g.means, torch.exp(g.log_scales), g.quats, cams.c2w[i], cams.fx[i],
                                             cams.fy[i], cams.cx[i], cams.cy[i], W, H, c.dilation)
        m2d.retain_grad()
        ranges, ids = bin_tiles(m2d, radii, depths, W, H)
        opac = torch.sigmoid(g.opacity_logit)
        if c.antialiased:
            opac = opac * opacity_compensation(conics, c.dilation)
        img, _ = RasterizeFn.apply(m2d, conics, g.colors(cams.c2w[i], deg), opac, ranges, ids, W, H, self.bg32)
        gt = self.images[i]
        loss = (1 - c.lambda_dssim) * (img - gt).abs().mean() + c.lambda_dssim * (1 - ssim_torch(img, gt))
        return loss, m2d, radii

    def step(self, it: int, p: float | None = None) -> float:
        """One optimisation step at training progress ``p`` (default ``it / steps``): the
        schedule (SH degree, learning rate, densification window, resets) follows ``p``, so it
        fits a time budget as well as a step count. Returns the mean loss of the step's views."""
        c, cams = self.cfg, self.train.cameras
        p = it / max(c.steps, 1) if p is None else p
        views = self.views()
        deg = min(c.sh_degree, int(p / c.sh_up_frac)) if c.sh_up_frac > 0 else c.sh_degree
        W, H = cams.width, cams.height
        g, B = self.g, len(views)
        densifying = p < c.densify_until_frac
        self.opt.zero_grad()
        total = 0.0
        for b in self.mine:
            loss, m2d, radii = self._render_loss(views[b], deg)
            (loss / B).backward()  # the step's gradient is the mean over its views
            total += float(loss.detach())
            if densifying:
                with torch.no_grad():
                    vis = radii > 0
                    if m2d.grad is not None:
                        # 3DGS thresholds each view's gradient w.r.t. NDC coordinates:
                        # d/d ndc = d/d pixel * (W/2, H/2) (times B: the view's own loss)
                        gn = (m2d.grad * torch.tensor([0.5 * W * B, 0.5 * H * B], device=self.device)).norm(dim=1)
                        self.grad_accum[vis] += gn[vis]
                        self.denom[vis] += 1
                    self.max_radii[vis] = torch.maximum(self.max_radii[vis], radii[vis].float())
        total = self.comm.sum_grads(list(self.opt.params.values()), total)
        self.opt.lr["means"] = self.lr_means_at(p)
        self.opt.step()
        with torch.no_grad():
            g.quats /= g.quats.norm(dim=1, keepdim=True).clamp(min=1e-12)
            if densifying:
                if self.densify_due(it, p):
                    self.comm.sum_(self.grad_accum, self.denom)
                    self.comm.max_(self.max_radii)
                    self.densify_and_prune(size_limit=self.resets > 0)
                if c.opacity_reset_frac > 0 and p >= (self.resets + 1) * c.opacity_reset_frac:
                    self.reset_opacity()
                    self.resets += 1
        return total / B

    def densify_due(self, it: int, p: float) -> bool:
        """Whether step ``it`` at progress ``p`` densifies and prunes: every
        ``densify_every`` steps from ``densify_from_step`` (or ``densify_from_frac`` of a
        shorter run) until ``densify_until_frac``."""
        c = self.cfg
        return (p < c.densify_until_frac and (p >= c.densify_from_frac or it >= c.densify_from_step)
                and it % c.densify_every == 0)

    # -- densification (3DGS section 5.2)
    def _replace(self, new: dict[str, torch.Tensor], keep: torch.Tensor | None, n_added: int):
        """Swap in new parameter tensors, carrying Adam moments for kept rows (zeros for new ones)."""
        for k, v in new.items():
            p = v.detach().clone().contiguous().requires_grad_(True)
            setattr(self.g, k, p)
            moments = []
            for mv in (self.opt.m[k], self.opt.v[k]):
                mv = mv if keep is None else mv[keep]
                moments.append(torch.cat([mv, torch.zeros((n_added, *mv.shape[1:]), device=mv.device)], 0))
            self.opt.replace(k, p, *moments)

    def densify_and_prune(self, size_limit: bool):
        c, g = self.cfg, self.g
        grads = self.grad_accum / self.denom.clamp(min=1)
        scales = torch.exp(g.log_scales)
        big = scales.max(1).values > c.percent_dense * self.extent
        sel = grads >= c.densify_grad
        room = c.max_gaussians - len(g)
        clone = sel & ~big
        split = sel & big
        if room <= 0:
            clone[:] = False
            split[:] = False
        tens = g.tensors()
        # clone: copy as is
        add = {k: v[clone] for k, v in tens.items()}
        # split: two samples from the Gaussian, scale / 1.6
        if split.any():
            s = scales[split].repeat(2, 1)
            from gpuforge.plugins.radiance.rasterize import quat_to_rotmat_torch

            R = quat_to_rotmat_torch(g.quats[split]).repeat(2, 1, 1)
            samples = torch.randn_like(s) * s
            means = (R @ samples[..., None])[..., 0] + g.means[split].repeat(2, 1)
            sp = {"means": means, "log_scales": torch.log(s / 1.6)}
            for k in ("quats", "sh_dc", "sh_rest", "opacity_logit"):
                sp[k] = tens[k][split].repeat(2, *([1] * (tens[k].dim() - 1)))
            add = {k: torch.cat([add[k], sp[k]], 0) for k in tens}
        keep = ~split
        new = {k: torch.cat([tens[k][keep], add[k]], 0) for k in tens}
        n_add = len(add["means"])
        self._replace(new, keep, n_add)
        # prune: transparent, or (after the first opacity reset) too big on screen / in the world
        g = self.g
        prune = torch.sigmoid(g.opacity_logit) < 0.005
        if size_limit:
            radii = torch.cat([self.max_radii[keep], torch.zeros(n_add, device=self.device)])
            prune |= radii > 20
            prune |= torch.exp(g.log_scales).max(1).values > 0.1 * self.extent
        if prune.any() and (~prune).sum() > 0:
            keep2 = ~prune
            self._replace({k: v[keep2] for k, v in g.tensors().items()}, keep2, 0)
        self._reset_stats()

    def reset_opacity(self):
        """Opacities down to at most 0.01, their Adam moments zeroed (3DGS's reset)."""
        g = self.g
        target = torch.logit(torch.minimum(torch.sigmoid(g.opacity_logit), torch.tensor(0.01, device=self.device)))
        p = target.detach().clone().contiguous().requires_grad_(True)
        g.opacity_logit = p
        self.opt.replace("opacity_logit", p, torch.zeros_like(p), torch.zeros_like(p))


def evaluate(g: Gaussians, split, bg, with_ssim: bool = True, limit: int | None = None) -> dict:
    ps, ss = [], []
    n = len(split.cameras) if limit is None else min(limit, len(split.cameras))
    with torch.no_grad():
        for i in range(n):
            img, _ = g.render(split.cameras, i, bg)
            a = img.cpu().numpy()
            ps.append(psnr(a, split.images[i]))
            if with_ssim:
                ss.append(ssim(a, split.images[i]))
    out = {"psnr": float(np.mean(ps)), "views": n}
    if with_ssim:
        out["ssim"] = float(np.mean(ss))
    return out


def train(scene, cfg: SplatConfig, minutes: float | None = None, eval_every: int = 500, on_step=None, log=None,
          device=None, cpu_minutes: float | None = None, comm=None) -> tuple:
    """Train on ``device`` (default the CPU) for ``cfg.steps`` steps or until ``minutes`` of
    wall clock / ``cpu_minutes`` of process CPU time are spent; returns (gaussians, curve
    [{seconds, cpu_seconds, step, test_psnr, gaussians}], stats). With ``comm``, one rank
    of a data-parallel run: rank 0 evaluates; every rank takes the same steps."""
    from gpuforge.plugins.radiance.budget import Clock

    tr = Trainer(scene, cfg, device=device, comm=comm)
    clock = Clock(minutes, cpu_minutes)
    curve = []
    it = 0
    for it in range(1, cfg.steps + 1):
        p = tr.comm.max_scalar(clock.progress(it, cfg.steps))  # one schedule for all ranks
        with clock:
            loss = tr.step(it, p)
        if on_step:
            on_step(it, loss)
        last = it == cfg.steps or tr.comm.max_scalar(float(clock.spent())) > 0
        if (it % eval_every == 0 or last) and tr.comm.rank == 0:
            e = evaluate(tr.g, tr.test, tr.bg, with_ssim=False)
            curve.append({"seconds": round(clock.wall, 2), "cpu_seconds": round(clock.cpu, 2), "step": it,
                          "test_psnr": round(e["psnr"], 3), "gaussians": len(tr.g)})
            if log:
                log.info("eval", **curve[-1], loss=round(loss, 5))
        if last:
            break
    for k in Gaussians.PARAMS:
        getattr(tr.g, k).requires_grad_(False)
    return tr.g, curve, {"steps": it, **clock.stats(), "gaussians": len(tr.g), "init": tr.init,
                         "views_per_step": cfg.views_per_step, "processes": tr.comm.world}


# ============================================================================ files
def save_run(folder: Path, g: Gaussians, info: dict) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in g.tensors().items()}, str(folder / "gaussians.safetensors"))
    (folder / "config.json").write_text(json.dumps({**info, "sh_degree": g.sh_degree, "filter": g.filter_info(),
                                                    "kind": "splat"}, indent=2))


def load_run(folder: Path) -> tuple[Gaussians, dict]:
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file() or not (folder / "gaussians.safetensors").is_file():
        raise BadInputError(f"{folder} is not a splat run (needs config.json and gaussians.safetensors); "
                            "make one with `gpuforge radiance splat train` or `splat import`")
    info = json.loads(cfg_path.read_text())
    if info.get("kind") != "splat":
        raise BadInputError(f"{folder} is a {info.get('kind')!r} run, not a splat run")
    filt = info.get("filter") or {}  # runs saved before the filter was recorded used 3DGS's
    dilation, aa = filt.get("dilation", DILATION), filt.get("antialiased", False)
    if not (isinstance(dilation, (int, float)) and math.isfinite(dilation) and dilation >= 0
            and isinstance(aa, bool)):
        raise BadInputError(f"{cfg_path}: bad \"filter\" {filt!r} (want a dilation >= 0 in pixels² and antialiased "
                            "true or false)")
    g = Gaussians.from_dict(load_file(str(folder / "gaussians.safetensors")), int(info["sh_degree"]), dilation, aa)
    return g, info


def ply_field_names(sh_degree: int) -> list[str]:
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(n_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def export_ply(g: Gaussians, path: Path) -> None:
    """Inria layout: f_rest is channel-major ([N, 3, K-1] flattened), log scales, logit opacity."""
    from plyfile import PlyData, PlyElement

    n = len(g)
    g = g.to("cpu")
    rest = g.sh_rest.detach().transpose(1, 2).reshape(n, -1).numpy()
    cols = ([g.means.detach().numpy(), np.zeros((n, 3), np.float32), g.sh_dc.detach()[:, 0].numpy(), rest,
             g.opacity_logit.detach().numpy()[:, None], g.log_scales.detach().numpy(), g.quats.detach().numpy()])
    data = np.concatenate(cols, 1).astype(np.float32)
    names = ply_field_names(g.sh_degree)
    arr = np.empty(n, dtype=[(nm, "f4") for nm in names])
    for j, nm in enumerate(names):
        arr[nm] = data[:, j]
    PlyData([PlyElement.describe(arr, "vertex")], comments=[ply_filter_comment(g)]).write(str(path))


PLY_FILTER_TAG = "gpuforge-filter"


def ply_filter_comment(g: Gaussians) -> str:
    """A header comment recording the screen-space filter (the Inria layout has no field for
    it; PLY readers skip comments): ``gpuforge-filter antialiased 0.1`` or ``... classic 0.3``."""
    return f"{PLY_FILTER_TAG} {'antialiased' if g.antialiased else 'classic'} {g.dilation!r}"


def ply_filter(comments: list[str]) -> dict | None:
    """The filter recorded by :func:`ply_filter_comment`, or None (a PLY from another tool)."""
    for c in comments:
        parts = c.split()
        if len(parts) == 3 and parts[0] == PLY_FILTER_TAG and parts[1] in ("antialiased", "classic"):
            try:
                d = float(parts[2])
            except ValueError:
                continue
            if math.isfinite(d) and d >= 0:
                return {"antialiased": parts[1] == "antialiased", "dilation": d}
    return None


def import_ply(path: Path) -> Gaussians:
    """An Inria-layout PLY; the screen-space filter from gpuforge's header comment, else 3DGS's
    classic one (what the PLYs of other tools are trained with)."""
    from plyfile import PlyData

    try:
        ply = PlyData.read(str(path))
        v = ply["vertex"]
    except FileNotFoundError:
        raise BadInputError(f"PLY file not found: {path}") from None
    except Exception as exc:  # plyfile raises several types for malformed files
        raise BadInputError(f"cannot read PLY {path}: {exc}") from None
    names = [p.name for p in v.properties]
    need = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
            "rot_0", "rot_1", "rot_2", "rot_3"]
    missing = [n for n in need if n not in names]
    if missing:
        raise UnsupportedError(f"{path} is not an Inria 3DGS PLY (missing {', '.join(missing)})")
    n_rest = sum(1 for nm in names if nm.startswith("f_rest_"))
    K = n_rest // 3 + 1
    deg = {1: 0, 4: 1, 9: 2, 16: 3}.get(K)
    if deg is None or n_rest % 3:
        raise UnsupportedError(f"{path}: {n_rest} f_rest fields do not match an SH degree 0..3")
    try:
        cols = {nm: np.asarray(v[nm], np.float32) for nm in need + [f"f_rest_{i}" for i in range(n_rest)]}
    except (KeyError, ValueError, TypeError) as exc:
        raise BadInputError(f"cannot read the vertex fields of {path}: {exc}") from None
    for nm, c in cols.items():
        bad = ~np.isfinite(c)
        if bad.any():
            raise BadInputError(f"{path}: field {nm!r} has {int(bad.sum())} NaN/inf value(s) (first at vertex "
                                f"{int(np.flatnonzero(bad)[0])}); a trained 3DGS PLY has finite values only")
    q = np.stack([cols[f"rot_{i}"] for i in range(4)], 1)
    zero = np.linalg.norm(q, axis=1) == 0
    if zero.any():
        raise BadInputError(f"{path}: {int(zero.sum())} Gaussian(s) have a zero rotation quaternion (first at vertex "
                            f"{int(np.flatnonzero(zero)[0])}); they cannot be rendered")
    col = cols.__getitem__
    n = len(col("x"))
    rest = np.stack([col(f"f_rest_{i}") for i in range(n_rest)], 1) if n_rest else np.zeros((n, 0), np.float32)
    t = torch.from_numpy
    filt = ply_filter(list(ply.comments)) or {"antialiased": False, "dilation": DILATION}
    return Gaussians(t(np.stack([col("x"), col("y"), col("z")], 1)),
                     t(np.stack([col(f"scale_{i}") for i in range(3)], 1)),
                     t(np.stack([col(f"rot_{i}") for i in range(4)], 1)),
                     t(np.stack([col(f"f_dc_{i}") for i in range(3)], 1))[:, None, :],
                     t(np.ascontiguousarray(rest.reshape(n, 3, K - 1).transpose(0, 2, 1))),
                     t(col("opacity")), deg, filt["dilation"], filt["antialiased"])


def config_dict(cfg: SplatConfig) -> dict:
    return asdict(cfg)
