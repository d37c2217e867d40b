"""Hash-grid NeRF (Instant-NGP, Mueller et al. 2022): multi-resolution hash encoding +
tiny MLPs, samples placed by an occupancy grid, front-to-back compositing with early
termination. Two details that make it converge on a CPU budget (FIELD-NOTES.md):

- the hash table is updated by a *sparse* Adam: only entries with a non-zero gradient
  this step move (as tiny-cuda-nn's optimizer does); with stock Adam, rarely-hit entries
  keep drifting on their stale moments and the test PSNR falls after its peak;
- training rays go through uniformly jittered sub-pixel positions, because the ground
  truth pixels are area-averaged (anti-aliased).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from numba import njit, prange

from gpuforge.core.errors import BadInputError
from gpuforge.plugins.radiance.hashgrid import HashEncodeFn, level_params, per_level_scale_for
from gpuforge.plugins.radiance.scene import Cameras, pixel_rays


@dataclass
class NerfConfig:
    steps: int = 3000
    levels: int = 16
    features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 1024
    hidden: int = 64
    geo_features: int = 15
    view_dirs: bool = True
    batch_rays: int = 4096
    target_samples: int = 32768
    grid_res: int = 32
    steps_per_box: int = 192
    """Marching step = box diagonal / steps_per_box."""
    max_samples: int = 512
    lr: float = 1e-2
    seed: int = 0


def sh_dirs(d: torch.Tensor) -> torch.Tensor:
    """Real SH basis up to degree 3 (16 values) of unit directions: Instant-NGP's direction encoding."""
    x, y, z = d[:, 0], d[:, 1], d[:, 2]
    xx, yy, zz = x * x, y * y, z * z
    return torch.stack([
        torch.full_like(x, 0.28209479177387814), -0.48860251190291987 * y, 0.48860251190291987 * z,
        -0.48860251190291987 * x, 1.0925484305920792 * x * y, -1.0925484305920792 * y * z,
        0.94617469575755997 * zz - 0.31539156525252005, -1.0925484305920792 * x * z,
        0.54627421529603959 * (xx - yy), 0.59004358992664352 * y * (-3 * xx + yy),
        2.8906114426405538 * x * y * z, 0.45704579946446572 * y * (1 - 5 * zz),
        0.3731763325901154 * z * (5 * zz - 3), 0.45704579946446572 * x * (1 - 5 * zz),
        1.4453057213202769 * z * (xx - yy), 0.59004358992664352 * x * (-xx + 3 * yy)], 1)


class CompositeFn(torch.autograd.Function):
    """(color, opacity) = composite(sigmas, rgbs) for fixed deltas and ray ranges (numba kernels)."""

    @staticmethod
    def forward(ctx, sigmas, rgbs, deltas, ranges, backend):
        from gpuforge.core.kernels import get_impl

        s, c = sigmas.detach().numpy(), rgbs.detach().numpy()
        color, opacity, n_used = get_impl("radiance.composite_fwd", backend)(s, c, deltas, ranges)
        ctx.saved = (s, c, deltas, ranges, color, opacity, n_used, backend)
        return torch.from_numpy(color), torch.from_numpy(opacity)

    @staticmethod
    def backward(ctx, g_color, g_opacity):
        from gpuforge.core.kernels import get_impl

        s, c, deltas, ranges, color, opacity, n_used, backend = ctx.saved
        gs, gc = get_impl("radiance.composite_bwd", backend)(s, c, deltas, ranges, color, opacity, n_used,
                                                              g_color.contiguous().numpy(),
                                                              g_opacity.contiguous().numpy())
        return torch.from_numpy(gs), torch.from_numpy(gc), None, None, None


@njit(parallel=True, cache=True)
def _sparse_adam_1d(p, g, m, v, lr, b1, b2, eps, c1, c2):
    for i in prange(p.shape[0]):
        gi = g[i]
        if gi != 0:
            mi = b1 * m[i] + (1 - b1) * gi
            vi = b2 * v[i] + (1 - b2) * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] -= lr * (mi / c1) / (math.sqrt(vi / c2) + eps)


def sparse_adam(param, grad, m, v, lr, b1, b2, eps, step):
    """Adam that moves only entries whose gradient is non-zero (tiny-cuda-nn's behaviour).
    All arrays contiguous and of one shape; updated in place."""
    flat = [a.reshape(-1) for a in (param, grad, m, v)]
    if any(not np.shares_memory(f, a) for f, a in zip(flat, (param, grad, m, v))):
        raise ValueError("sparse_adam needs contiguous arrays (updated in place)")
    _sparse_adam_1d(*flat, float(lr), float(b1), float(b2), float(eps), 1 - b1 ** step, 1 - b2 ** step)


class NerfModel(torch.nn.Module):
    def __init__(self, cfg: NerfConfig, aabb: np.ndarray):
        super().__init__()
        self.cfg = cfg
        self.aabb = np.asarray(aabb, np.float64)
        T = 2 ** cfg.log2_hashmap_size
        b = per_level_scale_for(cfg.levels, cfg.base_resolution, cfg.max_resolution)
        self.scales, self.resolutions = level_params(cfg.levels, cfg.base_resolution, b)
        g = torch.Generator().manual_seed(cfg.seed)
        # Instant-NGP initialises the table uniformly in [-1e-4, 1e-4].
        self.table = torch.nn.Parameter((torch.rand((cfg.levels, T, cfg.features_per_level), generator=g) * 2 - 1) * 1e-4)
        enc = cfg.levels * cfg.features_per_level
        self.density = torch.nn.Sequential(torch.nn.Linear(enc, cfg.hidden), torch.nn.ReLU(),
                                           torch.nn.Linear(cfg.hidden, 1 + cfg.geo_features))
        cin = cfg.geo_features + (16 if cfg.view_dirs else 0)
        self.color = torch.nn.Sequential(torch.nn.Linear(cin, cfg.hidden), torch.nn.ReLU(),
                                         torch.nn.Linear(cfg.hidden, cfg.hidden), torch.nn.ReLU(),
                                         torch.nn.Linear(cfg.hidden, 3))
        self.grid = np.zeros((cfg.grid_res,) * 3, np.float32)  # density EMA, filled by update_grid
        self.occ = np.ones((cfg.grid_res,) * 3, np.uint8)
        self.step_size = float(np.linalg.norm(self.aabb[1] - self.aabb[0]) / cfg.steps_per_box)
        self.backend = "numba-cpu"

    def normalize(self, p: np.ndarray) -> np.ndarray:
        return ((p - self.aabb[0]) / (self.aabb[1] - self.aabb[0])).astype(np.float32)

    def query_density(self, x01: torch.Tensor):
        feats = HashEncodeFn.apply(x01, self.table, self.scales, self.resolutions, self.backend)
        h = self.density(feats)
        return torch.exp(torch.clamp(h[:, 0], max=15.0)), h[:, 1:]

    def forward_samples(self, x01: torch.Tensor, dirs: torch.Tensor):
        sigma, geo = self.query_density(x01)
        if self.cfg.view_dirs:
            geo = torch.cat([geo, sh_dirs(dirs)], 1)
        return sigma, torch.sigmoid(self.color(geo))

    def march(self, o: np.ndarray, d: np.ndarray, offsets: np.ndarray):
        from gpuforge.core.kernels import get_impl

        return get_impl("radiance.march_rays", self.backend)(o, d, self.aabb.astype(np.float32), self.occ,
                                                             self.step_size, self.cfg.max_samples, offsets)

    def render_rays(self, o: np.ndarray, d: np.ndarray, bg: torch.Tensor, offsets: np.ndarray):
        """Composited colours [R, 3] (+ background through the remaining transmittance), samples used."""
        ranges, ts, deltas = self.march(o, d, offsets)
        counts = np.diff(ranges)
        ray_of = np.repeat(np.arange(len(o)), counts)
        pts = o[ray_of] + ts[:, None] * d[ray_of]
        x01 = torch.from_numpy(self.normalize(pts))
        dirs = torch.from_numpy(np.ascontiguousarray(d[ray_of]))
        sigma, rgb = self.forward_samples(x01, dirs)
        color, opacity = CompositeFn.apply(sigma, rgb, deltas, ranges, self.backend)
        return color + (1 - opacity)[:, None] * bg, len(ts)

    @torch.no_grad()
    def update_grid(self, rng: np.random.Generator, decay: float = 0.95):
        G = self.cfg.grid_res
        idx = np.stack(np.meshgrid(*(np.arange(G),) * 3, indexing="ij"), -1).reshape(-1, 3)
        x01 = ((idx + rng.random(idx.shape)) / G).astype(np.float32)
        sigma, _ = self.query_density(torch.from_numpy(x01))
        new = sigma.numpy().reshape(G, G, G)
        self.grid = np.maximum(self.grid * decay, new)
        thresh = min(float(self.grid.mean()), 0.01 / self.step_size)
        self.occ = (self.grid > thresh).astype(np.uint8)

    @torch.no_grad()
    def render_image(self, cams: Cameras, i: int, bg, W: int | None = None, H: int | None = None,
                     chunk: int = 8192) -> np.ndarray:
        W, H = W or cams.width, H or cams.height
        sx, sy = W / cams.width, H / cams.height
        j, ii = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
        o, d = pixel_rays(cams.c2w[i], cams.fx[i] * sx, cams.fy[i] * sy, cams.cx[i] * sx, cams.cy[i] * sy,
                          ii.ravel() + 0.5, j.ravel() + 0.5)
        bg_t = torch.as_tensor(np.asarray(bg, np.float32))
        out = []
        for s in range(0, len(o), chunk):
            c, _ = self.render_rays(o[s:s + chunk], d[s:s + chunk], bg_t, np.full(len(o[s:s + chunk]), 0.5))
            out.append(c.numpy())
        return np.concatenate(out).reshape(H, W, 3)


def evaluate(model: NerfModel, split, bg, with_ssim: bool = True, limit: int | None = None) -> dict:
    from gpuforge.plugins.radiance.splat import psnr, ssim

    n = len(split.cameras) if limit is None else min(limit, len(split.cameras))
    ps, ss = [], []
    for i in range(n):
        img = model.render_image(split.cameras, i, bg)
        ps.append(psnr(img, split.images[i]))
        if with_ssim:
            ss.append(ssim(img, split.images[i]))
    out = {"psnr": float(np.mean(ps)), "views": n}
    if with_ssim:
        out["ssim"] = float(np.mean(ss))
    return out


def train(scene, cfg: NerfConfig, minutes: float | None = None, eval_every: int = 500, eval_views: int = 5,
          on_step=None, log=None):
    """Returns (model, curve [{seconds, step, test_psnr}], stats). The curve uses the first
    ``eval_views`` test views; the final number (by the caller) all of them."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    tr, te = scene.split("train"), scene.split("test")
    model = NerfModel(cfg, scene.aabb)
    mlp_params = list(model.density.parameters()) + list(model.color.parameters())
    opt = torch.optim.Adam(mlp_params, lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15, weight_decay=1e-6)
    tab_m, tab_v = np.zeros(model.table.shape, np.float32), np.zeros(model.table.shape, np.float32)
    cams = tr.cameras
    N, H, W = tr.images.shape[:3]
    bgc = np.asarray(scene.background, np.float32)
    premult = tr.images - (1 - tr.alphas[..., None]) * bgc  # straight colour x alpha
    have_alpha = bool((tr.alphas < 1).any())
    rays = cfg.batch_rays
    curve, t_train, it, loss_v = [], 0.0, 0, 0.0
    for it in range(1, cfg.steps + 1):
        t0 = time.perf_counter()
        lr = cfg.lr * (0.33 ** sum(it > f * cfg.steps for f in (0.5, 0.75, 0.9)))
        if it % 16 == 1 or it <= 16:
            model.update_grid(rng)
        img = rng.integers(0, N, rays)
        py, px = rng.integers(0, H, rays), rng.integers(0, W, rays)
        jit = rng.random((rays, 2))  # sub-pixel jitter: the pixel is an area average
        o, d = np.empty((rays, 3), np.float32), np.empty((rays, 3), np.float32)
        for k in np.unique(img):
            sel = img == k
            o[sel], d[sel] = pixel_rays(cams.c2w[k], cams.fx[k], cams.fy[k], cams.cx[k], cams.cy[k],
                                        px[sel] + jit[sel, 0], py[sel] + jit[sel, 1])
        if have_alpha:  # a random background per ray keeps empty space empty (Instant-NGP)
            bg = rng.random((rays, 3)).astype(np.float32)
            gt = premult[img, py, px] + (1 - tr.alphas[img, py, px])[:, None] * bg
        else:
            bg = np.broadcast_to(bgc, (rays, 3)).copy()
            gt = tr.images[img, py, px]
        color, n_samples = model.render_rays(o, d, torch.from_numpy(bg), rng.random(rays))
        loss = ((color - torch.from_numpy(gt)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        model.table.grad = None
        loss.backward()
        for grp in opt.param_groups:
            grp["lr"] = lr
        opt.step()
        if model.table.grad is not None:
            sparse_adam(model.table.data.numpy(), model.table.grad.numpy(), tab_m, tab_v, lr, 0.9, 0.99, 1e-15, it)
        # keep the number of samples per step near the target (Instant-NGP's dynamic batch)
        rays = int(np.clip(rays * cfg.target_samples / max(n_samples, 1), 256, 1 << 14))
        loss_v = float(loss.detach())
        t_train += time.perf_counter() - t0
        if on_step:
            on_step(it, loss_v)
        last = it == cfg.steps or (minutes is not None and t_train >= minutes * 60)
        if it % eval_every == 0 or last:
            e = evaluate(model, te, scene.background, with_ssim=False, limit=eval_views)
            curve.append({"seconds": round(t_train, 2), "step": it, "test_psnr": round(e["psnr"], 3),
                          "views": e["views"], "rays": rays, "samples": n_samples})
            if log:
                log.info("eval", **curve[-1], loss=round(loss_v, 6))
        if last:
            break
    return model, curve, {"steps": it, "train_seconds": round(t_train, 2), "final_loss": loss_v}


def save_run(folder: Path, model: NerfModel, info: dict) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    state["occupancy_density"] = torch.from_numpy(model.grid)
    save_file(state, str(folder / "nerf.safetensors"))
    (folder / "config.json").write_text(json.dumps({**info, "kind": "nerf", "config": asdict(model.cfg),
                                                    "aabb": model.aabb.tolist()}, indent=2))


def load_run(folder: Path) -> tuple[NerfModel, dict]:
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file() or not (folder / "nerf.safetensors").is_file():
        raise BadInputError(f"{folder} is not a NeRF run (needs config.json and nerf.safetensors); "
                            "make one with `gpuforge radiance nerf train`")
    info = json.loads(cfg_path.read_text())
    if info.get("kind") != "nerf":
        raise BadInputError(f"{folder} is a {info.get('kind')!r} run, not a NeRF run")
    model = NerfModel(NerfConfig(**info["config"]), np.asarray(info["aabb"]))
    state = load_file(str(folder / "nerf.safetensors"))
    model.grid = state.pop("occupancy_density").numpy()
    model.load_state_dict(state)
    model.occ = (model.grid > min(float(model.grid.mean()), 0.01 / model.step_size)).astype(np.uint8)
    return model, info


def config_dict(cfg: NerfConfig) -> dict:
    return asdict(cfg)
