"""The training loop of ``gpuforge finetune lora``: device placement, checkpoints, exact
resume, logging.

Determinism: the example order of epoch e is a permutation drawn from
``numpy.random.default_rng((seed, e))`` and the position in it follows from the step
number alone; dropout draws from torch's global generator (and the GPU's), whose state
each checkpoint saves. So a run killed after a checkpoint and resumed from it computes the
same steps as an uninterrupted run with the same seed (tested by killing the process).

Placement: the base model (NF4 with ``--qlora``), the LoRA layers and the head live on
the run's device (the CPU under Numba's simulator); the optimizer's flat buffers too,
unless ``--offload-optimizer cpu`` keeps them in host memory (ZeRO-Offload).

Checkpoints go to ``<OUT>.checkpoints/step-<N>.safetensors`` while training runs (they
survive a kill; see :mod:`.checkpoint`); when the run finishes, the folder moves into
``OUT/checkpoints`` and ``OUT`` appears atomically.
"""
from __future__ import annotations

import json
import math
import resource
import shutil
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.core.log import get_logger
from gpuforge.plugins.finetune import checkpoint as C
from gpuforge.plugins.finetune import lora as L
from gpuforge.plugins.finetune.dataset import load_jsonl
from gpuforge.plugins.finetune.tasks import Batcher, TaskModel, count, evaluate, load_base, shard, to_device

log = get_logger("gpuforge.finetune")

CHOICES = {"task": (None, "causal-lm", "classification", "embedding"), "freeze": ("none", "slimfit"),
           "offload_optimizer": ("none", "cpu"), "optimizer": ("auto", "adamw", "adamw-8bit", "torch-adamw")}
OPTIMIZERS = ("adamw", "adamw-8bit", "torch-adamw")   # what ``auto`` resolves to


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
    optimizer: str = "auto"
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
    resume: str | None = None
    nproc: int = 1
    extra: dict = field(default_factory=dict)

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must share with the run it continues."""
        keys = ("model", "data", "task", "r", "alpha", "dropout", "targets", "qlora", "freeze", "offload_optimizer",
                "optimizer", "epochs", "max_steps", "lr", "head_lr", "weight_decay", "batch_size", "grad_accum",
                "warmup_ratio", "slimfit_warmup", "slimfit_keep", "max_len", "seed")
        d = asdict(self)
        return {k: d[k] for k in keys}


def check_args(a: TrainArgs) -> None:
    """The same ranges the CLI checks where it parses them, for callers of the Python API."""
    for k, allowed in CHOICES.items():
        if getattr(a, k) not in allowed:
            flag = "--" + k.replace("_", "-")
            raise UsageError(f"{flag} {getattr(a, k)!r} is not one of {', '.join(x for x in allowed if x)}")
    for k in ("r", "epochs", "batch_size", "grad_accum", "checkpoint_every", "max_len", "nproc"):
        if getattr(a, k) < 1:
            raise UsageError(f"--{k.replace('_', '-')} must be >= 1, got {getattr(a, k)}")
    if a.max_steps is not None and a.max_steps < 1:
        raise UsageError(f"--max-steps must be >= 1, got {a.max_steps}")
    if a.eval_every < 0:
        raise UsageError(f"--eval-every must be >= 0, got {a.eval_every}")
    for k in ("lr", "alpha"):
        if not (getattr(a, k) > 0 and math.isfinite(getattr(a, k))):
            raise UsageError(f"--{k} must be a positive number, got {getattr(a, k)}")
    if not (a.weight_decay >= 0 and math.isfinite(a.weight_decay)):
        raise UsageError(f"--weight-decay must be >= 0, got {a.weight_decay}")
    if not 0 <= a.dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1), got {a.dropout}")
    if not 0 < a.slimfit_keep <= 1:
        raise UsageError(f"--slimfit-keep must be in (0, 1], got {a.slimfit_keep}")
    if not 0 <= a.slimfit_warmup < 1:
        raise UsageError(f"--slimfit-warmup must be in [0, 1), got {a.slimfit_warmup}")
    if a.optimizer == "torch-adamw" and a.offload_optimizer != "none":
        raise UsageError("--offload-optimizer cpu needs --optimizer adamw, adamw-8bit or auto (torch.optim.AdamW "
                         "keeps its state beside the parameters)")


def resolve_optimizer(a: TrainArgs, resume_state: dict | None = None) -> str:
    """The step ``--optimizer auto`` runs (issue 20: torch's fused step, ours only where it
    wins or is needed):

    - resuming: the checkpoint's optimizer (its state is in that optimizer's layout);
    - ``--offload-optimizer cpu`` or ``--nproc`` > 1: ``adamw``, our flat buffers (host
      buffers updated by the numba-cpu kernel; the one gradient buffer the ranks sum);
    - otherwise ``torch-adamw``, ``torch.optim.AdamW(fused=True)``: ours moves the same 28
      bytes per parameter and was 1.1-1.2x it on the CPU, not the 2x that would justify a
      default of our own.

    ``adamw-8bit`` is only ever asked for by name (it trades speed for 4x less state).
    Any other value is returned as it is."""
    if a.optimizer != "auto":
        return a.optimizer
    had = ((resume_state or {}).get("args") or {}).get("optimizer")
    if had in OPTIMIZERS:
        return had
    if a.offload_optimizer != "none" or a.nproc > 1:
        return "adamw"
    return "torch-adamw"


def memory_now(device: torch.device | None = None) -> dict[str, float]:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device is not None and device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def trainable_state_bytes(params: list[torch.nn.Parameter], opt) -> int:
    """Trainable parameters + their gradients + optimizer state: what SlimFit shrinks."""
    p = sum(t.numel() * t.element_size() for t in params)
    return 2 * p + opt.state_bytes()


def build(a: TrainArgs, ds_labels: list[str], task: str, device: torch.device, qlora_report: dict | None = None):
    """Base model (NF4 with --qlora) + LoRA layers + task head, seeded, on ``device``."""
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
    return model.to(device), tok, targets


def lr_at(step: int, total: int, base: float, warmup_ratio: float) -> float:
    """Linear warm-up, then linear decay to 0 (step counts from 0)."""
    warm = max(1, int(round(warmup_ratio * total)))
    if step < warm:
        return base * (step + 1) / warm
    return base * max(0.0, (total - step) / max(1, total - warm))


# ------------------------------------------------------------------ one training session

class Session:
    """Everything one process needs to train: data, model, optimizer, schedule, and the
    state restored from a checkpoint. Every data-parallel rank builds the same one."""

    def __init__(self, a: TrainArgs, device: torch.device, resume_state: dict | None = None):
        from gpuforge.plugins.finetune.optim import make_optimizer
        from gpuforge.plugins.finetune.slimfit import SlimFit, freeze

        self.a, self.device = a, device
        self.ds = load_jsonl(a.data, a.task, "--data")
        self.task = a.task or self.ds.task
        eval_ds = load_jsonl(a.eval_data, self.task, "--eval-data") if a.eval_data else None
        self.qrep: dict = {}
        self.model, tok, self.targets = build(a, self.ds.labels, self.task, device, self.qrep)
        self.batcher = Batcher(tok, self.ds, self.task, self.ds.labels, a.max_len)
        self.eval_batcher = Batcher(tok, eval_ds, self.task, self.ds.labels, a.max_len) if eval_ds else None
        self.layers = L.lora_layers(self.model.backbone)
        head_params = list(self.model.head.parameters()) if self.model.head is not None else []
        self.lora_params = [p for l in self.layers.values() for p in (l.lora_A.weight, l.lora_B.weight)]
        self.trainable = self.lora_params + head_params
        self.opt = make_optimizer(self.trainable, a.optimizer, a.offload_optimizer, a.lr, a.weight_decay, device)
        self.micro_per_epoch = math.ceil(len(self.ds) / a.batch_size)
        self.total = a.max_steps or max(1, (self.micro_per_epoch * a.epochs) // a.grad_accum)
        self.slim = SlimFit(self.layers, int(round(a.slimfit_warmup * self.total)), a.slimfit_keep) \
            if a.freeze == "slimfit" else None
        self.history: list[dict] = []
        self.final_metric = None
        self.start = 0
        self.state_bytes_before = None
        self.tokens = 0
        if resume_state is not None:
            st = resume_state
            L.load_lora_state(self.model.backbone, st["lora"], where="checkpoint")
            if self.model.head is not None:
                self.model.head.load_state_dict(st["head"])
            if self.slim is not None and st.get("slimfit"):
                self.slim.load(st["slimfit"])
                if self.slim.done:
                    freeze(self.layers, self.slim.frozen)
                    self.trainable = [p for p in self.trainable if p.requires_grad]
                    self.opt = self.opt.restrict(self.trainable)
            self.opt.load_state_dict(st["opt"])
            torch.set_rng_state(st["rng"]["cpu"])
            if device.type == "cuda" and st["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(st["rng"]["cuda"], device)
            self.history = list(st["history"])
            self.start = int(st["step"])
            self.state_bytes_before = st.get("state_bytes_before")

    def state(self, step: int) -> dict[str, Any]:
        """What a checkpoint holds after ``step`` steps."""
        m = self.model
        return {
            "step": step, "args": self.a.fingerprint(), "lora": L.lora_state_dict(m.backbone),
            "head": m.head.state_dict() if m.head is not None else None, "opt": self.opt.state_dict(),
            "rng": {"cpu": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None},
            "slimfit": self.slim.state() if self.slim is not None else None, "history": self.history,
            "state_bytes_before": self.state_bytes_before,
        }

    def fit(self, *, rank: int = 0, world: int = 1, save: Callable[[int], None] | None = None, bar=None) -> None:
        """Steps ``start`` .. ``total``. With ``world`` > 1 each rank computes its share of
        every batch and the flat gradient buffer is all-reduced (summed) before the
        identical optimizer step on every rank; losses are divided by the whole batch's
        count, so the sum equals the one-process gradient."""
        from gpuforge.plugins.finetune.slimfit import freeze

        a, model = self.a, self.model
        sharded = world > 1 and a.qlora
        if world > 1:
            import torch.distributed as dist
        if sharded:
            from gpuforge.plugins.finetune.distributed import shard_frozen_base

            self.qrep.update(shard_frozen_base(model.backbone, world))
        model.train()
        t_train = time.perf_counter()
        for step in range(self.start, self.total):
            t0 = time.perf_counter()
            if world > 1:  # each rank its own dropout masks, a function of the step (exact resume)
                from gpuforge.plugins.finetune.distributed import rank_seed

                torch.manual_seed(rank_seed(a.seed, step, rank))
            lr = lr_at(step, self.total, a.lr, a.warmup_ratio)
            loss_sum, tokens = torch.zeros((), dtype=torch.float64), 0
            for k in range(a.grad_accum):
                micro = step * a.grad_accum + k
                epoch, pos = divmod(micro, self.micro_per_epoch)
                perm = np.random.default_rng((a.seed, epoch)).permutation(len(self.ds))
                idx = perm[pos * a.batch_size:(pos + 1) * a.batch_size]
                batch, ntok = self.batcher.batch(idx)
                n_all = count(batch, self.task)
                mine = shard(batch, rank, world)
                tokens += ntok
                weight = 1.0
                if count(mine, self.task) == 0 and world > 1:
                    if not sharded:
                        continue  # fewer rows than ranks: this rank adds nothing to the sum
                    # a sharded forward is a collective every rank must join: rank 0's rows,
                    # weighted 0, so this rank still adds nothing to the sum
                    mine, weight = shard(batch, 0, world), 0.0
                total, _ = model.loss_terms(to_device(mine, self.device))
                loss = total * weight / (max(n_all, 1) * a.grad_accum)
                loss.backward()
                loss_sum += loss.detach().double().cpu()
            if world > 1:
                grad = torch.as_tensor(self.opt.gather_grads())
                if grad.device.type != "cpu":
                    raise UsageError("--nproc runs on the CPU (gloo); use --device cpu")
                dist.all_reduce(grad)
                dist.all_reduce(loss_sum)
                self.opt.step(lr, gathered=True)
            else:
                self.opt.step(lr)
            self.opt.zero_grad()
            slim = self.slim
            if slim is not None and not slim.done:
                slim.observe()
                if step + 1 >= slim.warmup:
                    self.state_bytes_before = trainable_state_bytes(self.trainable, self.opt)
                    frozen = slim.decide()
                    freeze(self.layers, frozen)
                    self.trainable = [p for p in self.trainable if p.requires_grad]
                    self.opt = self.opt.restrict(self.trainable)
                    if rank == 0:
                        log.info("slimfit froze layers", frozen=len(frozen), kept=len(self.layers) - len(frozen))
            dt = time.perf_counter() - t0
            self.tokens += tokens
            entry = {"step": step + 1, "loss": round(float(loss_sum), 6), "lr": lr,
                     "tokens_per_s": round(tokens / dt, 1), "trainable_state_bytes":
                     trainable_state_bytes(self.trainable, self.opt), **memory_now(self.device)}
            last = step + 1 == self.total
            if (rank == 0 or sharded) and self.eval_batcher is not None and a.eval_every \
                    and (step + 1) % a.eval_every == 0 and not last:  # sharded: a forward needs every rank
                entry[f"eval_{model.metric}"] = evaluate(model, self.eval_batcher)
            self.history.append(entry)
            if bar is not None:
                bar.advance()
            if rank == 0 and ((step + 1) % 10 == 0 or last):
                log.info("step", step=step + 1, of=self.total, loss=entry["loss"], tokens_per_s=entry["tokens_per_s"])
            if save is not None and (step + 1) % a.checkpoint_every == 0 and not last:
                save(step + 1)
        self.train_seconds = time.perf_counter() - t_train
        if sharded and self.eval_batcher is not None:  # while every rank is still here
            self.final_metric = evaluate(model, self.eval_batcher)


# ------------------------------------------------------------------ the command

def train(run, a: TrainArgs, bar=None) -> dict[str, Any]:
    """``finetune lora`` on ``run``: outputs and state files declared (and checked) before
    any work, then the session trained on ``run``'s device, the adapter folder written."""
    check_args(a)
    run.input(a.model, "MODEL")
    run.input(a.data, "--data file")
    if a.eval_data:
        run.input(a.eval_data, "--eval-data file")
    out = run.output(a.out, kind="dir")
    resume_file = C.find(a.resume) if a.resume else None
    ckpt_dir = Path(str(a.out) + ".checkpoints")
    resuming_here = resume_file is not None and resume_file.parent.resolve() == ckpt_dir.resolve()
    run.state_file(ckpt_dir, resuming=resuming_here)
    if resume_file is not None and not resuming_here:
        run.input(resume_file, "--resume file")
    elif resume_file is not None:  # our own state file: rotated away as training goes on, so noted now
        from gpuforge.core.files import describe_input

        run.note("resumed_from", describe_input(resume_file))
    resume_state = C.load(resume_file) if resume_file is not None else None
    a = replace(a, optimizer=resolve_optimizer(a, resume_state))
    if resume_state is not None:
        _check_resumable(resume_state, a, resume_file)
    if ckpt_dir.exists() and not resuming_here:  # --force: an earlier run's checkpoints are replaced
        _clear_checkpoints(ckpt_dir)
    _remove_stale_writes(ckpt_dir)
    device = run.torch_device
    if a.nproc > 1 and device.type != "cpu":
        from gpuforge.core.errors import UnsupportedError

        raise UnsupportedError(f"--nproc {a.nproc} runs data-parallel processes on the CPU (gloo); GPU processes "
                               f"(NCCL) are not supported yet: use --device cpu or --nproc 1")

    with ExitStack() as stack:
        ranks = None
        if a.nproc > 1:  # started first: they load the model while this process does
            from gpuforge.plugins.finetune.distributed import ranks as start_ranks

            ranks = stack.enter_context(start_ranks(a, resume_file, run.backend))
        with run.timed("load"):
            s = Session(a, device, resume_state)
        run.note("optimizer", s.opt.describe())
        if s.start:
            log.info("resuming", checkpoint=str(resume_file), step=s.start)

        def save(step: int) -> None:
            state = s.state(step)
            run.write_state(C.step_file(ckpt_dir, step), lambda tmp: C.save(tmp, state))
            for old in C.steps_in(ckpt_dir)[:-2]:  # keep the last two
                old.unlink(missing_ok=True)

        if bar is not None:
            bar.update(total=s.total)
            bar.advance(s.start)
        with run.timed("train"):
            if ranks is not None:
                ranks.fit(s, save, bar)
            else:
                s.fit(save=save, bar=bar)
    if s.final_metric is not None:      # evaluated by all ranks of a sharded base
        final_metric = s.final_metric
    else:
        final_metric = evaluate(s.model, s.eval_batcher) if s.eval_batcher is not None else None
    result = {
        "out": str(a.out), "task": s.task, "steps": s.total, "metric": s.model.metric,
        "eval_metric": final_metric, "final_loss": s.history[-1]["loss"] if s.history else None,
        "targets": len(s.targets), "lora_params": sum(p.numel() for p in s.lora_params),
        "trainable_state_bytes": trainable_state_bytes(s.trainable, s.opt),
        "trainable_state_bytes_before_freeze": s.state_bytes_before,
        "slimfit_frozen": s.slim.frozen if s.slim is not None else [],
        "tokens_per_s": round(s.tokens / s.train_seconds, 1) if s.train_seconds > 0 else None,
        "train_seconds": round(s.train_seconds, 2), "nproc": a.nproc, "optimizer": a.optimizer, **memory_now(device),
    }
    if s.qrep:
        result["qlora"] = s.qrep
    cfg = L.peft_config(a.model, s.model.backbone, s.targets, a.r, a.alpha, a.dropout)
    meta = {"task": s.task, "labels": s.ds.labels, "base": L.base_fingerprint(s.model.backbone), "qlora": a.qlora,
            "gpuforge": "finetune lora"}
    L.save_adapter(out.tmp, s.model.backbone, cfg, meta, s.model.head_state())
    (out.tmp / "train_log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in s.history))
    if ckpt_dir.is_dir():
        shutil.move(str(ckpt_dir), str(out.tmp / "checkpoints"))
    return result


def _check_resumable(state: dict, a: TrainArgs, path: Path) -> None:
    have, now = state.get("args") or {}, a.fingerprint()
    diff = [k for k in now if have.get(k) != now[k]]
    if diff:
        raise BadInputError(f"--resume {path}: the checkpoint was made with different settings ({diff[0]}="
                            f"{have.get(diff[0])!r}, now {now[diff[0]]!r}); rerun with the same options")


def _clear_checkpoints(folder: Path) -> None:
    for p in C.steps_in(folder):
        p.unlink()
    for p in folder.glob("step-*"):  # an earlier version's step folders
        if p.is_dir():
            shutil.rmtree(p)


def _remove_stale_writes(folder: Path) -> None:
    """Temporary checkpoint files of a run killed mid-write (its pid gone)."""
    from gpuforge.core.run import remove_stale_temporaries

    if folder.is_dir():
        for tmp in folder.glob(".step-*.gpuforge-*"):
            remove_stale_temporaries(folder / tmp.name[1:].split(".gpuforge-")[0])
