"""Training ESPCN on a folder of photographs (``gpuforge superres train``).

Each step draws ``batch`` random LR patches of ``patch`` x ``patch`` pixels (and the
matching HR patches) from the bicubic-downscaled training images, applies one of the
8 flips/rotations per patch, and minimises the MSE (paper section 2.2). Adam with a
cosine decay of the learning rate from ``lr`` to ``lr_min`` over all steps. After each
epoch (``epoch_steps`` steps) the whole validation images are upscaled, the Y-PSNR is
measured (evaluation protocol of :mod:`images`), and the best weights are written
atomically to ``out``; a resume file (model + optimizer + step) is kept beside it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gpuforge.core.errors import BadInputError
from gpuforge.core.log import get_logger

from .espcn import ESPCN, load_model, save_model
from .images import make_lr, rgb_to_ycbcr

log = get_logger("gpuforge.superres.train")


@dataclass
class TrainConfig:
    scale: int
    channels: str = "y"
    epochs: int = 20
    epoch_steps: int = 1000
    steps: int | None = None
    patch: int = 17
    batch: int = 64
    lr: float = 1e-3
    lr_min: float = 1e-4
    seed: int = 0

    @property
    def total_steps(self) -> int:
        return self.steps if self.steps is not None else self.epochs * self.epoch_steps


def _planes(rgb: np.ndarray, channels: str) -> np.ndarray:
    """(C, H, W) float32 in [0, 1]: Y only, or R, G, B."""
    if channels == "y":
        return rgb_to_ycbcr(rgb)[..., 0][None]
    return (rgb.astype(np.float32) / 255.0).transpose(2, 0, 1).copy()


def prepare(images: list[tuple[str, np.ndarray]], scale: int, channels: str, patch: int, what: str):
    pairs = []
    for name, rgb in images:
        if min(rgb.shape[:2]) < patch * scale:
            log.warning("image too small for a patch; skipped", image=name, size=rgb.shape[:2])
            continue
        hr, lr = make_lr(rgb, scale)
        pairs.append((name, _planes(lr, channels), _planes(hr, channels)))
    if not pairs:
        raise BadInputError(f"{what}: no image is at least {patch * scale}x{patch * scale} pixels; pass bigger images or a smaller --patch")
    return pairs


class PatchSampler:
    def __init__(self, pairs, scale: int, patch: int, rng: np.random.Generator):
        self.pairs, self.scale, self.patch, self.rng = pairs, scale, patch, rng
        # Sample images in proportion to their area, so every LR pixel is equally likely.
        areas = np.array([lr.shape[1] * lr.shape[2] for _, lr, _ in pairs], dtype=np.float64)
        self.p = areas / areas.sum()

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, p = self.scale, self.patch
        idx = self.rng.choice(len(self.pairs), size=n, p=self.p)
        lrs, hrs = [], []
        for i in idx:
            _, lr, hr = self.pairs[i]
            y = int(self.rng.integers(0, lr.shape[1] - p + 1))
            x = int(self.rng.integers(0, lr.shape[2] - p + 1))
            a = lr[:, y:y + p, x:x + p]
            b = hr[:, y * s:(y + p) * s, x * s:(x + p) * s]
            k = int(self.rng.integers(0, 8))  # the 8 symmetries of the square
            if k & 4:
                a, b = a[:, :, ::-1], b[:, :, ::-1]
            a, b = np.rot90(a, k & 3, axes=(1, 2)), np.rot90(b, k & 3, axes=(1, 2))
            lrs.append(a)
            hrs.append(b)
        return torch.from_numpy(np.ascontiguousarray(np.stack(lrs))), torch.from_numpy(np.ascontiguousarray(np.stack(hrs)))


def bicubic_psnr(pairs, scale: int) -> float:
    """The same measure as :func:`validate` for PIL bicubic upscaling of each plane."""
    from PIL import Image

    vals = []
    for _, lr, hr in pairs:
        up = np.stack([np.asarray(Image.fromarray(c, mode="F").resize((c.shape[1] * scale, c.shape[0] * scale), Image.BICUBIC))
                       for c in lr]).clip(0, 1)
        d = (up - hr)[:, scale:-scale, scale:-scale].astype(np.float64)
        vals.append(10 * math.log10(1.0 / max(float(np.mean(d * d)), 1e-12)))
    return float(np.mean(vals))


@torch.no_grad()
def validate(model: ESPCN, pairs) -> float:
    """Mean PSNR (dB) over the validation images, on the network's channels, border
    of ``scale`` pixels cropped."""
    model.eval()
    s = model.scale
    vals = []
    for _, lr, hr in pairs:
        sr = model(torch.from_numpy(lr)[None]).clamp_(0, 1)[0].numpy()
        d = (sr - hr)[:, s:-s, s:-s].astype(np.float64)
        vals.append(10 * math.log10(1.0 / max(float(np.mean(d * d)), 1e-12)))
    model.train()
    return float(np.mean(vals))


def lr_at(cfg: TrainConfig, step: int) -> float:
    t = min(step / max(cfg.total_steps, 1), 1.0)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * t))


RESUME_FORMAT = "gpuforge.superres.resume/1"
RESUME_SUFFIX = ".resume.safetensors"


def resume_path_for(out: Path) -> Path:
    return out.with_name(out.name + RESUME_SUFFIX)


def is_resume_file(path: Path) -> bool:
    """A resume state file (not a model to start from), by its metadata."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return (fh.metadata() or {}).get("format") == RESUME_FORMAT
    except Exception:  # not safetensors at all: load_model says so in one line
        return False


def _resume_state(model, opt, step: int, best: float, cfg: TrainConfig) -> dict:
    return {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
            "scale": cfg.scale, "channels": 1 if cfg.channels == "y" else 3}


def train(run, cfg: TrainConfig, train_images, val_images, out: Path, resume_path: Path, resume: Path | None,
          command: str, on_epoch=None, bar=None) -> dict:
    """Train; the best model so far is written to ``out`` (the run's temporary output)
    after each epoch that improved, the resume state to ``resume_path`` after each epoch."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    nch = 1 if cfg.channels == "y" else 3
    train_pairs = prepare(train_images, cfg.scale, cfg.channels, cfg.patch, "DATA_DIR")
    if val_images:
        val_pairs = prepare(val_images, cfg.scale, cfg.channels, 1, "--val")
    else:
        log.warning("no --val folder: validating on the training images (optimistic)")
        val_pairs = train_pairs
    model = ESPCN(cfg.scale, nch)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, best = 0, -math.inf
    if resume is not None:
        if resume.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt"):
            raise BadInputError(f"--resume {resume}: pickle files are not read (resume files of earlier gpuforge "
                                f"versions were); start again, or from the model: --resume <model>.safetensors")
        if is_resume_file(resume):
            from gpuforge.core.statefile import read_state_file

            state = read_state_file(resume, RESUME_FORMAT, "--resume", "superres resume file")
            if int(state["scale"]) != cfg.scale or int(state["channels"]) != nch:
                raise BadInputError(f"--resume {resume} was trained for another scale or channel count")
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            step, best = int(state["step"]), float(state["best"])
        else:
            init, meta = load_model(resume)
            if meta["scale"] != cfg.scale or init.channels != nch:
                raise BadInputError(f"--resume {resume} is x{meta['scale']} {meta['channels']}, not x{cfg.scale} {cfg.channels}")
            model.load_state_dict(init.state_dict())
    model.train()
    base = bicubic_psnr(val_pairs, cfg.scale)
    log.info("validation baseline", bicubic_psnr=round(base, 4), start_psnr=round(validate(model, val_pairs), 4))
    sampler = PatchSampler(train_pairs, cfg.scale, cfg.patch, rng)
    history = []
    t0 = time.perf_counter()
    extra = {"command": command, "train_images": [n for n, _, _ in train_pairs],
             "val_images": [n for n, _, _ in val_pairs] if val_images else [], "patch": str(cfg.patch),
             "batch": str(cfg.batch)}
    total = cfg.total_steps
    while step < total:
        chunk = min(cfg.epoch_steps - step % cfg.epoch_steps, total - step)
        loss_sum = 0.0
        for _ in range(chunk):
            for g in opt.param_groups:
                g["lr"] = lr_at(cfg, step)
            lr_b, hr_b = sampler.batch(cfg.batch)
            loss = torch.nn.functional.mse_loss(model(lr_b), hr_b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += float(loss.detach())
            step += 1
            if bar is not None:
                bar.advance()
        val = validate(model, val_pairs)
        improved = val > best
        if improved:
            best = val
            extra["val_psnr_y"] = f"{val:.4f}"
            extra["step"] = str(step)
            save_model(model, out, extra)
        state = _resume_state(model, opt, step, best, cfg)
        from gpuforge.core.statefile import write_state_file

        run.write_state(resume_path, lambda tmp: write_state_file(tmp, state, RESUME_FORMAT))
        rec = {"epoch": math.ceil(step / cfg.epoch_steps), "step": step, "train_loss": loss_sum / max(chunk, 1),
               "val_psnr": round(val, 4), "gain_db": round(val - base, 3), "best": improved, "seconds": round(time.perf_counter() - t0, 1)}
        history.append(rec)
        log.info("epoch", **rec)
        if on_epoch:
            on_epoch(rec)
    return {"scale": cfg.scale, "channels": cfg.channels, "steps": step, "best_val_psnr": round(best, 4),
            "val_bicubic_psnr": round(base, 4),
            "history": history, "resume_file": str(resume_path), "train_images": extra["train_images"],
            "val_images": extra["val_images"]}
