"""Hash-grid NeRF (Instant-NGP, Mueller et al. 2022): multi-resolution hash encoding +
tiny MLPs, samples placed by an occupancy grid, front-to-back compositing with early
termination. Two details that make it converge on a CPU budget (FIELD-NOTES.md):

- the hash table is updated by a *sparse* Adam: only entries with a non-zero gradient
  this step move (as tiny-cuda-nn's optimizer does); with stock Adam, rarely-hit entries
  keep drifting on their stale moments and the test PSNR falls after its peak;
- training rays go through the pixel centres, where evaluation and rendering cast theirs.
  The ground truth pixels are area averages (anti-aliased); rays jittered over the pixel
  fit a field that the pixel's box filter has already blurred, and a render through the
  centres then blurs it once more (box * box). At 15 CPU-minutes that cost 1.0-5.3 dB on
  three of four scenes, none on the fourth (``ray_jitter``, docs/BENCHMARKS.md).

``supersample`` s > 1 (off by default) models the pixel's box filter instead: each pixel,
in training and in rendering, is the mean of s x s rays through its sub-pixel centres (the
multisampling idea of Zip-NeRF, Barron et al. 2023, without its cone geometry). It costs
s^2 rays a pixel, so fewer pixels a step and s^2 slower renders.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from numba import njit, prange

from gpuforge.core.errors import BadInputError
from gpuforge.core.kernels import call
from gpuforge.plugins.radiance import kernel_io as kio
from gpuforge.plugins.radiance.optim import Adam
from gpuforge.plugins.radiance.hashgrid import HashEncodeFn, level_params, per_level_scale_for
from gpuforge.plugins.radiance.scene import Cameras, pixel_rays_torch


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
    ray_jitter: float = 0.0
    """Width, in pixels, of the square around each pixel centre that a training ray's
    position is drawn from uniformly (0, the default: the centre, where evaluation and
    rendering cast their rays; 1: the whole pixel, the default before issue 20). With
    ``supersample`` s > 1 the width is in sub-pixels (1/s of a pixel)."""
    supersample: int = 1
    """s: every pixel is the mean of s x s rays through the centres of an s x s grid of
    sub-pixels, in training and in rendering (a box filter, like an anti-aliased camera's
    pixel; Zip-NeRF's multisampling idea in its simplest form). Costs s^2 rays a pixel."""


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
    """(color, opacity) = composite(sigmas, rgbs) for fixed deltas and ray ranges: the
    ``radiance.composite_fwd`` / ``_bwd`` kernels on the tensors' device."""

    @staticmethod
    def forward(ctx, sigmas, rgbs, deltas, ranges):
        s, c = kio.arg(sigmas), kio.arg(rgbs)
        color, opacity, n_used = call("radiance.composite_fwd", s, c, deltas, ranges)
        ctx.saved = (s, c, deltas, ranges, color, opacity, n_used, sigmas.device)
        return kio.tensor(color, sigmas.device), kio.tensor(opacity, sigmas.device)

    @staticmethod
    def backward(ctx, g_color, g_opacity):
        s, c, deltas, ranges, color, opacity, n_used, device = ctx.saved
        gs, gc = call("radiance.composite_bwd", s, c, deltas, ranges, color, opacity, n_used, kio.arg(g_color),
                      kio.arg(g_opacity))
        return kio.tensor(gs, device), kio.tensor(gc, device), None, None


@njit(parallel=True, cache=True)
def _sparse_adam_1d(p, g, m, v, lr, b1, b2, eps, c1, c2):
    # Branch-free: every entry's update is computed and kept only where the gradient is
    # non-zero (a select, which LLVM vectorizes). The table's gradient is non-zero at a
    # scattered ~15-50% of the entries, so the branch it replaces mispredicted often: 52.4 ->
    # 32.0 ms a NeRF step (2^19 table, one thread, docs/nerf_step_profile.py), the same bits.
    for i in prange(p.shape[0]):
        gi = g[i]
        mo, vo, po = m[i], v[i], p[i]
        mi = b1 * mo + (1 - b1) * gi
        vi = b2 * vo + (1 - b2) * gi * gi
        pi = po - lr * (mi / c1) / (math.sqrt(vi / c2) + eps)
        touched = gi != 0
        m[i] = mi if touched else mo
        v[i] = vi if touched else vo
        p[i] = pi if touched else po


def sparse_adam(param, grad, m, v, lr, b1, b2, eps, step):
    """Adam that moves only entries whose gradient is non-zero (tiny-cuda-nn's behaviour).
    All arrays contiguous and of one shape; updated in place. NumPy arrays or CPU tensors
    take one fused Numba pass; CUDA tensors the same arithmetic in torch on the GPU."""
    if isinstance(param, torch.Tensor) and param.is_cuda:
        nz = grad != 0
        m.copy_(torch.where(nz, b1 * m + (1 - b1) * grad, m))
        v.copy_(torch.where(nz, b2 * v + (1 - b2) * grad * grad, v))
        upd = lr * (m / (1 - b1 ** step)) / (torch.sqrt(v / (1 - b2 ** step)) + eps)
        param.sub_(torch.where(nz, upd, torch.zeros_like(upd)))
        return
    arrays = [a.numpy() if isinstance(a, torch.Tensor) else a for a in (param, grad, m, v)]
    flat = [a.reshape(-1) for a in arrays]
    if any(not np.shares_memory(f, a) for f, a in zip(flat, arrays)):
        raise ValueError("sparse_adam needs contiguous arrays (updated in place)")
    _sparse_adam_1d(*flat, float(lr), float(b1), float(b2), float(eps), 1 - b1 ** step, 1 - b2 ** step)


class NerfModel(torch.nn.Module):
    """Hash table, MLPs and occupancy grid, all on ``device``."""

    def __init__(self, cfg: NerfConfig, aabb: np.ndarray, device=None):
        super().__init__()
        self.cfg = cfg
        self.device = torch.device("cpu") if device is None else torch.device(device)
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
        self.to(self.device)
        G = cfg.grid_res
        self.grid = torch.zeros((G,) * 3, device=self.device)  # density EMA, filled by update_grid
        self.occ = torch.ones((G,) * 3, dtype=torch.uint8, device=self.device)
        self.aabb32 = self.aabb.astype(np.float32)
        self._lo = torch.tensor(self.aabb[0], dtype=torch.float32, device=self.device)
        self._size = torch.tensor(self.aabb[1] - self.aabb[0], dtype=torch.float32, device=self.device)
        self.step_size = float(np.linalg.norm(self.aabb[1] - self.aabb[0]) / cfg.steps_per_box)

    def normalize(self, p: torch.Tensor) -> torch.Tensor:
        return (p - self._lo) / self._size

    def query_density(self, x01: torch.Tensor):
        feats = HashEncodeFn.apply(x01, self.table, self.scales, self.resolutions)
        h = self.density(feats)
        return torch.exp(torch.clamp(h[:, 0], max=15.0)), h[:, 1:]

    def forward_samples(self, x01: torch.Tensor, dirs: torch.Tensor):
        sigma, geo = self.query_density(x01)
        if self.cfg.view_dirs:
            geo = torch.cat([geo, sh_dirs(dirs)], 1)
        return sigma, torch.sigmoid(self.color(geo))

    def march(self, o, d, offsets):
        """``radiance.march_rays`` through the occupancy grid: (ranges, ts, deltas) as the kernel returns them."""
        return call("radiance.march_rays", kio.arg(o), kio.arg(d), self.aabb32, kio.arg(self.occ), self.step_size,
                    self.cfg.max_samples, kio.arg(offsets))

    def render_rays(self, o: torch.Tensor, d: torch.Tensor, bg: torch.Tensor, offsets: torch.Tensor):
        """Composited colours [R, 3] (+ background through the remaining transmittance), samples used."""
        ranges, ts, deltas = self.march(o, d, offsets)
        ranges_t, ts_t = kio.tensor(ranges, self.device), kio.tensor(ts, self.device)
        counts = (ranges_t[1:] - ranges_t[:-1]).long()
        ray_of = torch.repeat_interleave(torch.arange(len(o), device=self.device), counts)
        dirs = d[ray_of]
        x01 = self.normalize(o[ray_of] + ts_t[:, None] * dirs)
        sigma, rgb = self.forward_samples(x01, dirs)
        color, opacity = CompositeFn.apply(sigma, rgb, deltas, ranges)
        return color + (1 - opacity)[:, None] * bg, int(ts_t.shape[0])

    @torch.no_grad()
    def update_grid(self, gen: torch.Generator, decay: float = 0.95):
        G = self.cfg.grid_res
        ax = torch.arange(G, device=self.device, dtype=torch.float32)
        idx = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
        x01 = (idx + torch.rand(idx.shape, generator=gen, device=self.device)) / G
        sigma, _ = self.query_density(x01)
        self.grid = torch.maximum(self.grid * decay, sigma.reshape(G, G, G))
        self.refresh_occupancy()

    def refresh_occupancy(self):
        thresh = min(float(self.grid.mean()), 0.01 / self.step_size)
        self.occ = (self.grid > thresh).to(torch.uint8)

    @torch.no_grad()
    def render_image(self, cams: Cameras, i: int, bg, W: int | None = None, H: int | None = None,
                     chunk: int = 8192) -> np.ndarray:
        W, H = W or cams.width, H or cams.height
        sx, sy = W / cams.width, H / cams.height
        dev = self.device
        j, ii = torch.meshgrid(torch.arange(H, device=dev, dtype=torch.float32),
                               torch.arange(W, device=dev, dtype=torch.float32), indexing="ij")
        c2w = torch.tensor(cams.c2w[i], dtype=torch.float32, device=dev)
        bg_t = torch.as_tensor(np.asarray(bg, np.float32), device=dev)
        sub = subpixel_offsets(self.cfg.supersample, device=dev)  # [k, 2] in [0, 1)
        k = len(sub)
        px, py = ii.reshape(-1), j.reshape(-1)
        out = []
        step = max(1, chunk // k)
        for s in range(0, len(px), step):
            n = min(step, len(px) - s)
            # pixel-major: the k rays of a pixel are consecutive, then averaged
            u = (px[s:s + n, None] + sub[None, :, 0]).reshape(-1)
            v = (py[s:s + n, None] + sub[None, :, 1]).reshape(-1)
            o, d = pixel_rays_torch(c2w, float(cams.fx[i] * sx), float(cams.fy[i] * sy), float(cams.cx[i] * sx),
                                    float(cams.cy[i] * sy), u, v)
            c, _ = self.render_rays(o, d, bg_t, torch.full((n * k,), 0.5, device=dev))
            out.append(c.reshape(n, k, 3).mean(1))
        return torch.cat(out).reshape(H, W, 3).cpu().numpy()


def subpixel_offsets(s: int, device=None) -> torch.Tensor:
    """[s*s, 2] (x, y) offsets from a pixel's corner to the centres of its s x s sub-pixels
    (s = 1: the pixel centre, (0.5, 0.5))."""
    a = (torch.arange(s, dtype=torch.float32, device=device) + 0.5) / s
    gy, gx = torch.meshgrid(a, a, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)


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
          on_step=None, log=None, device=None, cpu_minutes: float | None = None):
    """Train on ``device`` (default the CPU): every tensor of a step (rays, samples, table,
    MLPs, occupancy grid) lives there and the kernels run there. Returns (model, curve
    [{seconds, step, test_psnr}], stats). The curve uses the first ``eval_views`` test
    views; the final number (by the caller) all of them."""
    from gpuforge.plugins.radiance.budget import Clock

    dev = torch.device("cpu") if device is None else torch.device(device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    tr, te = scene.split("train"), scene.split("test")
    model = NerfModel(cfg, scene.aabb, dev)
    opt = Adam({k: p for k, p in model.named_parameters() if k != "table"}, cfg.lr, betas=(0.9, 0.99), eps=1e-15,
               weight_decay=1e-6)
    tab_m, tab_v = torch.zeros_like(model.table.data), torch.zeros_like(model.table.data)
    cams = tr.cameras
    N, H, W = tr.images.shape[:3]
    f32 = dict(dtype=torch.float32, device=dev)
    c2w = torch.tensor(cams.c2w[:, :3, :4], **f32)
    fx, fy, cx, cy = (torch.tensor(v, **f32) for v in (cams.fx, cams.fy, cams.cx, cams.cy))
    images = torch.from_numpy(tr.images).to(dev)
    alphas = torch.from_numpy(tr.alphas).to(dev)
    bgc = torch.tensor(np.asarray(scene.background, np.float32), **f32)
    premult = images - (1 - alphas[..., None]) * bgc  # straight colour x alpha
    have_alpha = bool((tr.alphas < 1).any())
    rays = cfg.batch_rays
    if cfg.supersample < 1:
        raise BadInputError(f"supersample must be >= 1, got {cfg.supersample}")
    sub = subpixel_offsets(cfg.supersample, device=dev)
    k = len(sub)
    curve, it, loss_v = [], 0, 0.0
    clock = Clock(minutes, cpu_minutes)
    for it in range(1, cfg.steps + 1):
        clock.__enter__()
        p = clock.progress(it, cfg.steps)  # the schedule follows whichever budget ends training first
        lr = cfg.lr * (0.33 ** sum(p > f for f in (0.5, 0.75, 0.9)))
        if it % 16 == 1 or it <= 16:
            model.update_grid(gen)
        pix = max(1, rays // k)
        img = torch.randint(0, N, (pix,), generator=gen, device=dev)
        py = torch.randint(0, H, (pix,), generator=gen, device=dev)
        px = torch.randint(0, W, (pix,), generator=gen, device=dev)
        jit = torch.rand((pix * k, 2), generator=gen, device=dev)  # in the (sub-)pixel; scaled to the jitter square
        if cfg.ray_jitter != 1.0:
            jit = 0.5 + (jit - 0.5) * cfg.ray_jitter
        if k > 1:  # the k rays of a pixel are consecutive, one per sub-pixel
            jit = (sub.repeat(pix, 1) - 0.5 / cfg.supersample) + jit / cfg.supersample
            img, py, px = (t.repeat_interleave(k) for t in (img, py, px))
        o, d = pixel_rays_torch(c2w[img], fx[img], fy[img], cx[img], cy[img], px + jit[:, 0], py + jit[:, 1])
        if k > 1:
            img, py, px = img[::k], py[::k], px[::k]
        if have_alpha:  # a random background per pixel keeps empty space empty (Instant-NGP)
            bg = torch.rand((pix, 3), generator=gen, device=dev)
            gt = premult[img, py, px] + (1 - alphas[img, py, px])[:, None] * bg
        else:
            bg = bgc.expand(pix, 3)
            gt = images[img, py, px]
        color, n_samples = model.render_rays(o, d, bg.repeat_interleave(k, 0) if k > 1 else bg,
                                             torch.rand(pix * k, generator=gen, device=dev))
        if k > 1:
            color = color.reshape(pix, k, 3).mean(1)
        loss = ((color - gt) ** 2).mean()
        opt.zero_grad()
        model.table.grad = None
        loss.backward()
        opt.lr = dict.fromkeys(opt.lr, lr)
        opt.step()
        if model.table.grad is not None:
            sparse_adam(model.table.data, model.table.grad, tab_m, tab_v, lr, 0.9, 0.99, 1e-15, it)
        # keep the number of samples per step near the target (Instant-NGP's dynamic batch)
        rays = int(np.clip(rays * cfg.target_samples / max(n_samples, 1), min(256, cfg.batch_rays), 1 << 14))
        loss_v = float(loss.detach())
        clock.__exit__()
        if on_step:
            on_step(it, loss_v)
        last = it == cfg.steps or clock.spent()
        if it % eval_every == 0 or last:
            e = evaluate(model, te, scene.background, with_ssim=False, limit=eval_views)
            curve.append({"seconds": round(clock.wall, 2), "cpu_seconds": round(clock.cpu, 2), "step": it,
                          "test_psnr": round(e["psnr"], 3),
                          "views": e["views"], "rays": rays, "samples": n_samples})
            if log:
                log.info("eval", **curve[-1], loss=round(loss_v, 6))
        if last:
            break
    return model, curve, {"steps": it, **clock.stats(), "final_loss": loss_v}


def save_run(folder: Path, model: NerfModel, info: dict) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state["occupancy_density"] = model.grid.detach().cpu().contiguous()
    save_file(state, str(folder / "nerf.safetensors"))
    (folder / "config.json").write_text(json.dumps({**info, "kind": "nerf", "config": asdict(model.cfg),
                                                    "aabb": model.aabb.tolist()}, indent=2))


def load_run(folder: Path, device=None) -> tuple[NerfModel, dict]:
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.is_file() or not (folder / "nerf.safetensors").is_file():
        raise BadInputError(f"{folder} is not a NeRF run (needs config.json and nerf.safetensors); "
                            "make one with `gpuforge radiance nerf train`")
    info = json.loads(cfg_path.read_text())
    if info.get("kind") != "nerf":
        raise BadInputError(f"{folder} is a {info.get('kind')!r} run, not a NeRF run")
    ss = info["config"].get("supersample", 1)
    if not (isinstance(ss, int) and not isinstance(ss, bool) and 1 <= ss <= 64):
        raise BadInputError(f"{cfg_path}: bad \"supersample\" {ss!r} in \"config\" (want a whole number >= 1)")
    model = NerfModel(NerfConfig(**info["config"]), np.asarray(info["aabb"]), device)
    state = load_file(str(folder / "nerf.safetensors"))
    model.grid = state.pop("occupancy_density").to(model.device)
    model.load_state_dict(state)
    model.refresh_occupancy()
    return model, info


def config_dict(cfg: NerfConfig) -> dict:
    return asdict(cfg)
