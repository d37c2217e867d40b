"""The training loop of ``gpuforge finetune lora``: checkpoints, exact resume, logging.

Determinism: the example order of epoch e is a permutation drawn from
``numpy.random.default_rng((seed, e))`` and the position in it follows from the step
number alone; dropout draws from torch's global generator, whose state each
checkpoint saves. So a run killed after a checkpoint and resumed from it computes the
same steps as an uninterrupted run with the same seed (tested).

Checkpoints go to ``<OUT>.checkpoints/step-<N>/`` while training runs (so they survive a
kill); when the run finishes, the folder moves into ``OUT/checkpoints`` and ``OUT``
appears atomically.
"""
from __future__ import annotations

import json
import math
import os
import resource
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.core.files import Manifest, atomic_dir, check_output
from gpuforge.core.log import get_logger
from gpuforge.core.progress import progress
from gpuforge.plugins.finetune import lora as L
from gpuforge.plugins.finetune.dataset import load_jsonl
from gpuforge.plugins.finetune.tasks import Batcher, TaskModel, evaluate, load_base

log = get_logger("gpuforge.finetune")
KILL_ENV = "GPUFORGE_FINETUNE_KILL_AFTER_STEP"
"""Test switch: exit abruptly (status 137, like SIGKILL) right after this step's checkpoint."""


@dataclass
class TrainArgs:
    model: str
    data: str
    out: str
    task: str | None = None
    r: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    targets: str = "all-linear"
    qlora: bool = False
    freeze: str = "none"
    offload_optimizer: str = "none"
    optimizer: str = "adamw"
    gradient_checkpointing: bool = False
    epochs: int = 3
    max_steps: int | None = None
    lr: float = 5e-4
    head_lr: float | None = None
    weight_decay: float = 0.0
    batch_size: int = 16
    grad_accum: int = 1
    eval_data: str | None = None
    eval_every: int = 0
    checkpoint_every: int = 50
    warmup_ratio: float = 0.06
    slimfit_warmup: float = 0.15
    slimfit_keep: float = 0.4
    max_len: int = 128
    seed: int = 0
    force: bool = False
    resume: str | None = None
    extra: dict = field(default_factory=dict)

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        keys = ("model", "data", "task", "r", "alpha", "dropout", "targets", "qlora", "freeze", "offload_optimizer",
                "optimizer", "epochs", "max_steps", "lr", "head_lr", "weight_decay", "batch_size", "grad_accum",
                "warmup_ratio", "slimfit_warmup", "slimfit_keep", "max_len", "seed")
        d = asdict(self)
        return {k: d[k] for k in keys}


def check_args(a: TrainArgs) -> None:
    choices = {"task": (None, "causal-lm", "classification", "embedding"), "freeze": ("none", "slimfit"),
               "offload_optimizer": ("none", "cpu"), "optimizer": ("adamw", "adamw-8bit")}
    for k, allowed in choices.items():
        if getattr(a, k) not in allowed:
            flag = "--" + k.replace("_", "-")
            raise UsageError(f"{flag} {getattr(a, k)!r} is not one of {', '.join(x for x in allowed if x)}")
    for k in ("epochs", "batch_size", "grad_accum"):
        if getattr(a, k) < 1:
            raise UsageError(f"--{k.replace('_', '-')} must be >= 1, got {getattr(a, k)}")
    if a.max_steps is not None and a.max_steps < 1:
        raise UsageError(f"--max-steps must be >= 1, got {a.max_steps}")
    if not (a.lr > 0 and math.isfinite(a.lr)):
        raise UsageError(f"--lr must be a positive number, got {a.lr}")
    if not 0 <= a.dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1), got {a.dropout}")
    if a.checkpoint_every < 1:
        raise UsageError(f"--checkpoint-every must be >= 1, got {a.checkpoint_every}")


def memory_now() -> dict[str, float]:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available():
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def trainable_state_bytes(params: list[torch.nn.Parameter], opt) -> int:
    """Trainable parameters + their gradients + optimizer state: what SlimFit shrinks."""
    p = sum(t.numel() * t.element_size() for t in params)
    return 2 * p + opt.state_bytes()


def build(a: TrainArgs, ds_labels: list[str], task: str, qlora_report: dict | None = None):
    """Base model (NF4 with --qlora) + LoRA layers + task head, seeded."""
    torch.manual_seed(a.seed)
    backbone, tok = load_base(a.model, task, qlora=a.qlora)
    exclude = ("pooler",) if task != "causal-lm" else ()
    targets = L.select_targets(backbone, a.targets, exclude=exclude)
    if a.qlora and qlora_report is not None:
        from gpuforge.plugins.finetune.qlora import storage_report

        qlora_report.update(storage_report(backbone))
    L.inject(backbone, targets, a.r, a.alpha, a.dropout)
    model = TaskModel(backbone, task, ds_labels)
    if a.gradient_checkpointing:
        if not getattr(backbone, "supports_gradient_checkpointing", False):
            raise BadInputError(f"MODEL {a.model} does not support --gradient-checkpointing")
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tok, targets


def lr_at(step: int, total: int, base: float, warmup_ratio: float) -> float:
    """Linear warm-up, then linear decay to 0 (step counts from 0)."""
    warm = max(1, int(round(warmup_ratio * total)))
    if step < warm:
        return base * (step + 1) / warm
    return base * max(0.0, (total - step) / max(1, total - warm))


def find_checkpoint(path: str | Path) -> Path:
    """``--resume`` accepts a step folder, a checkpoints folder or a finished output folder."""
    path = Path(path)
    if (path / "state.pt").is_file():
        return path
    for base in (path, path / "checkpoints"):
        steps = sorted(base.glob("step-*/state.pt")) if base.is_dir() else []
        if steps:
            return steps[-1].parent
    raise BadInputError(f"--resume {path}: no checkpoint found (expected step-*/state.pt inside); checkpoints of "
                        f"a running job are in <OUT>.checkpoints")


def train(a: TrainArgs) -> dict[str, Any]:
    from gpuforge.plugins.finetune.optim import make_optimizer
    from gpuforge.plugins.finetune.slimfit import SlimFit, freeze

    check_args(a)
    out = Path(a.out)
    check_output(out, a.force)
    manifest = Manifest("finetune lora", a.fingerprint())
    ds = load_jsonl(a.data, a.task, "--data")
    task = a.task or ds.task
    eval_ds = load_jsonl(a.eval_data, task, "--eval-data") if a.eval_data else None
    ckpt_dir = Path(str(out) + ".checkpoints")
    resume_state = None
    if a.resume:
        ck = find_checkpoint(a.resume)
        resume_state = torch.load(ck / "state.pt", weights_only=False)
        if resume_state["args"] != a.fingerprint():
            diff = [k for k in a.fingerprint() if resume_state["args"].get(k) != a.fingerprint()[k]]
            raise BadInputError(f"--resume {ck}: the checkpoint was made with different settings ({diff[0]}="
                                f"{resume_state['args'].get(diff[0])!r}, now {a.fingerprint()[diff[0]]!r}); rerun "
                                f"with the same options")
        ckpt_dir = ck.parent
    with manifest.timed("load"):
        qrep: dict = {}
        model, tok, targets = build(a, ds.labels, task, qrep)
        batcher = Batcher(tok, ds, task, ds.labels, a.max_len)
        eval_batcher = Batcher(tok, eval_ds, task, ds.labels, a.max_len) if eval_ds else None
    layers = L.lora_layers(model.backbone)
    head_params = list(model.head.parameters()) if model.head is not None else []
    lora_params = [p for l in layers.values() for p in (l.lora_A.weight, l.lora_B.weight)]
    trainable = lora_params + head_params
    opt = make_optimizer(trainable, a.optimizer, a.offload_optimizer, a.lr, a.weight_decay)
    micro_per_epoch = math.ceil(len(ds) / a.batch_size)
    total = a.max_steps or max(1, (micro_per_epoch * a.epochs) // a.grad_accum)
    slim = SlimFit(layers, int(round(a.slimfit_warmup * total)), a.slimfit_keep) if a.freeze == "slimfit" else None
    history: list[dict] = []
    start = 0
    state_bytes_before = None
    if resume_state is not None:
        L.load_lora_state(model.backbone, resume_state["lora"], where="checkpoint")
        if model.head is not None:
            model.head.load_state_dict(resume_state["head"])
        if slim is not None and resume_state.get("slimfit"):
            slim.load(resume_state["slimfit"])
            if slim.done:
                freeze(layers, slim.frozen)
                trainable = [p for p in trainable if p.requires_grad]
                opt = opt.restrict(trainable)
        opt.load_state_dict(resume_state["opt"])
        torch.set_rng_state(resume_state["rng"])
        history = list(resume_state["history"])
        start = int(resume_state["step"])
        state_bytes_before = resume_state.get("state_bytes_before")
        log.info("resuming", checkpoint=str(find_checkpoint(a.resume)), step=start)

    model.train()
    kill_at = int(os.environ.get(KILL_ENV, "0") or 0)
    t_train = time.perf_counter()
    tokens_total = 0
    with progress("fine-tuning", total=total) as bar:
        bar.advance(start)
        for step in range(start, total):
            t0 = time.perf_counter()
            lr = lr_at(step, total, a.lr, a.warmup_ratio)
            loss_sum, tokens = 0.0, 0
            for k in range(a.grad_accum):
                micro = step * a.grad_accum + k
                epoch, pos = divmod(micro, micro_per_epoch)
                perm = np.random.default_rng((a.seed, epoch)).permutation(len(ds))
                idx = perm[pos * a.batch_size:(pos + 1) * a.batch_size]
                batch, ntok = batcher.batch(idx)
                loss = model.loss(batch) / a.grad_accum
                loss.backward()
                loss_sum += float(loss.detach())
                tokens += ntok
            opt.step(lr)
            opt.zero_grad()
            if slim is not None and not slim.done:
                slim.observe()
                if step + 1 >= slim.warmup:
                    state_bytes_before = trainable_state_bytes(trainable, opt)
                    frozen = slim.decide()
                    freeze(layers, frozen)
                    trainable = [p for p in trainable if p.requires_grad]
                    opt = opt.restrict(trainable)
                    log.info("slimfit froze layers", frozen=len(frozen), kept=len(layers) - len(frozen))
            dt = time.perf_counter() - t0
            tokens_total += tokens
            entry = {"step": step + 1, "loss": round(loss_sum, 6), "lr": lr, "tokens_per_s": round(tokens / dt, 1),
                     "trainable_state_bytes": trainable_state_bytes(trainable, opt), **memory_now()}
            if eval_batcher is not None and a.eval_every and (step + 1) % a.eval_every == 0 and step + 1 < total:
                entry[f"eval_{model.metric}"] = evaluate(model, eval_batcher)
            history.append(entry)
            bar.advance()
            if (step + 1) % 10 == 0 or step + 1 == total:
                log.info("step", step=step + 1, of=total, loss=entry["loss"], tokens_per_s=entry["tokens_per_s"])
            if (step + 1) % a.checkpoint_every == 0 and step + 1 < total:
                _save_checkpoint(ckpt_dir, step + 1, a, model, opt, slim, history, state_bytes_before)
                if kill_at and step + 1 >= kill_at:
                    os._exit(137)
    train_s = time.perf_counter() - t_train
    final_metric = evaluate(model, eval_batcher) if eval_batcher is not None else None
    result = {
        "out": str(out), "task": task, "steps": total, "metric": model.metric,
        "eval_metric": final_metric, "final_loss": history[-1]["loss"] if history else None,
        "targets": len(targets), "lora_params": sum(p.numel() for p in lora_params),
        "trainable_state_bytes": trainable_state_bytes(trainable, opt),
        "trainable_state_bytes_before_freeze": state_bytes_before,
        "slimfit_frozen": slim.frozen if slim is not None else [],
        "tokens_per_s": round(tokens_total / train_s, 1) if train_s > 0 else None,
        "train_seconds": round(train_s, 2), **memory_now(),
    }
    if qrep:
        result["qlora"] = qrep
    cfg = L.peft_config(a.model, model.backbone, targets, a.r, a.alpha, a.dropout)
    meta = {"task": task, "labels": ds.labels, "base": L.base_fingerprint(model.backbone), "qlora": a.qlora,
            "gpuforge": "finetune lora"}
    with atomic_dir(out, force=a.force) as tmp:
        L.save_adapter(tmp, model.backbone, cfg, meta, model.head_state())
        (tmp / "train_log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
        manifest.add_input(a.data)
        if a.eval_data:
            manifest.add_input(a.eval_data)
        manifest.set("result", result)
        if ckpt_dir.is_dir():
            shutil.move(str(ckpt_dir), str(tmp / "checkpoints"))
        for name in (L.ADAPTER_WEIGHTS, L.ADAPTER_CONFIG, L.OUR_META, "train_log.jsonl"):
            manifest.add_output(out / name)
        manifest.write(tmp)
    return result


def _save_checkpoint(folder: Path, step: int, a: TrainArgs, model: TaskModel, opt, slim, history, state_bytes_before):
    state = {
        "step": step, "args": a.fingerprint(), "lora": L.lora_state_dict(model.backbone),
        "head": model.head.state_dict() if model.head is not None else None, "opt": opt.state_dict(),
        "rng": torch.get_rng_state(), "slimfit": slim.state() if slim is not None else None, "history": history,
        "state_bytes_before": state_bytes_before,
    }
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder / f"step-{step:06d}", force=True) as tmp:
        torch.save(state, tmp / "state.pt")
    old = sorted(folder.glob("step-*"))[:-2]  # keep the last two
    for p in old:
        shutil.rmtree(p, ignore_errors=True)
