"""Loading a Hugging Face model folder and the three training tasks on top of it.

- classification: mean-pooled last hidden state -> linear head; cross-entropy; metric
  accuracy.
- embedding: mean-pooled, L2-normalised sentence embeddings; loss (cos(a, b) - score)^2
  (sentence-transformers' CosineSimilarityLoss); metric Spearman correlation.
- causal-lm: next-token cross-entropy (on the response only for prompt/response data);
  metric perplexity (lower is better).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gpuforge.core.errors import BadInputError

HIGHER_IS_BETTER = {"accuracy": True, "spearman": True, "perplexity": False}


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")


def check_model_folder(path: Path, what: str = "MODEL") -> None:
    """A Hugging Face folder whose weights are safetensors: a folder that holds only
    pickle weights (``pytorch_model.bin`` ...) is refused, never opened."""
    if not (path / "config.json").is_file():
        raise BadInputError(f"{what} {path} is not a Hugging Face model folder (no config.json); pass a folder saved "
                            f"with save_pretrained")
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickled:
            raise BadInputError(f"{what} {path} holds its weights as {pickled[0]}: pickle files are not read; convert "
                                f"to safetensors (model.save_pretrained(folder, safe_serialization=True))")
        raise BadInputError(f"{what} {path} has no *.safetensors weights")


def check_finite(model: nn.Module, path: Path, what: str = "MODEL") -> None:
    """NaN or inf anywhere in the weights would train to loss=nan: refuse them at load."""
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise BadInputError(f"{what} {path}: tensor {name} holds NaN or inf; fix the model's weights (gpuforge "
                                "does not train or evaluate non-finite weights)")


def load_base(path: str | Path, task: str, qlora: bool = False):
    """(model, tokenizer) from a local folder, offline, on the CPU; one clear line if it is
    not a safetensors model folder or holds non-finite weights. ``qlora``: the frozen NF4
    base, quantized while it loads (:func:`.qlora.load_nf4_base`)."""
    path = Path(path)
    check_model_folder(path)
    from gpuforge.core.hub import offline

    with offline():
        from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            cls = AutoModelForCausalLM if task == "causal-lm" else AutoModel
            if qlora:
                from gpuforge.plugins.finetune.qlora import load_nf4_base

                model = load_nf4_base(path, task == "causal-lm")
            else:
                model = cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32, use_safetensors=True)
        except (OSError, ValueError, KeyError) as exc:
            raise BadInputError(f"cannot load MODEL {path} for --task {task}: {str(exc).splitlines()[0]}") from None
    check_finite(model, path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def to_device(batch, device):
    """A batch (nested dicts of tensors) on ``device``."""
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch.to(device) if isinstance(batch, torch.Tensor) else batch


def shard(batch, rank: int, world: int):
    """Rank ``rank``'s contiguous share of a batch's rows (data parallelism)."""
    if world == 1:
        return batch
    if isinstance(batch, dict):
        return {k: shard(v, rank, world) for k, v in batch.items()}
    return batch.tensor_split(world)[rank] if isinstance(batch, torch.Tensor) else batch


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


class TaskModel(nn.Module):
    """The backbone (with LoRA layers injected) plus what the task adds."""

    def __init__(self, backbone: nn.Module, task: str, labels: list[str] | None = None):
        super().__init__()
        self.backbone, self.task, self.labels = backbone, task, list(labels or [])
        if task == "classification" and self.labels:  # no labels: eval fits a probe instead
            hidden = backbone.config.hidden_size
            self.head = nn.Linear(hidden, len(self.labels))
        else:
            self.head = None

    @property
    def metric(self) -> str:
        return {"classification": "accuracy", "embedding": "spearman", "causal-lm": "perplexity"}[self.task]

    def embed(self, enc: dict) -> torch.Tensor:
        out = self.backbone(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        return mean_pool(out.last_hidden_state, enc["attention_mask"])

    def loss_terms(self, batch: dict) -> tuple[torch.Tensor, int]:
        """(sum of the per-example (causal-lm: per-token) losses, their count): the mean is
        sum / count, and data-parallel ranks divide their sums by the whole batch's count."""
        if self.task == "classification":
            y = batch["y"]
            return nn.functional.cross_entropy(self.head(self.embed(batch["enc"])), y, reduction="sum"), len(y)
        if self.task == "embedding":
            a = nn.functional.normalize(self.embed(batch["enc_a"]), dim=-1)
            b = nn.functional.normalize(self.embed(batch["enc_b"]), dim=-1)
            y = batch["y"]
            return nn.functional.mse_loss((a * b).sum(-1), y, reduction="sum"), len(y)
        out = self.backbone(input_ids=batch["enc"]["input_ids"], attention_mask=batch["enc"]["attention_mask"])
        # next-token loss, as transformers' ForCausalLMLoss: logits at t predict token t+1
        logits, labels = out.logits[:, :-1].float(), batch["labels"][:, 1:]
        total = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                            ignore_index=-100, reduction="sum")
        return total, count(batch, self.task)

    def loss(self, batch: dict) -> torch.Tensor:
        total, n = self.loss_terms(batch)
        return total / max(n, 1)

    def head_state(self) -> dict[str, torch.Tensor]:
        return {f"head.{k}": v for k, v in self.head.state_dict().items()} if self.head is not None else {}


def count(batch: dict, task: str) -> int:
    """How many terms a batch's loss averages: examples, or predicted tokens for causal-lm."""
    if task == "causal-lm":
        return int((batch["labels"][:, 1:] != -100).sum())
    return len(batch["y"])


class Batcher:
    """Tokenizes once; makes padded batches of rows by index."""

    def __init__(self, tok, ds, task: str, labels: list[str] | None = None, max_len: int = 128):
        self.tok, self.task, self.max_len = tok, task, max_len
        self.rows = ds.rows
        label_index = {l: i for i, l in enumerate(labels or [])}
        if task == "classification":
            missing = [r["label"] for r in ds.rows if str(r["label"]) not in label_index]
            if missing:
                raise BadInputError(f"{ds.path}: label {missing[0]!r} was not in the training labels {labels}")
            self.y = [label_index[str(r["label"])] for r in ds.rows]
        elif task == "embedding":
            self.y = [float(r["score"]) for r in ds.rows]

    def _enc(self, texts: list[str]) -> dict:
        return dict(self.tok(texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt"))

    def batch(self, idx) -> tuple[dict, int]:
        rows = [self.rows[i] for i in idx]
        if self.task == "classification":
            enc = self._enc([r["text"] for r in rows])
            return {"enc": enc, "y": torch.tensor([self.y[i] for i in idx])}, int(enc["attention_mask"].sum())
        if self.task == "embedding":
            a, b = self._enc([r["sentence1"] for r in rows]), self._enc([r["sentence2"] for r in rows])
            y = torch.tensor([self.y[i] for i in idx], dtype=torch.float32)
            return {"enc_a": a, "enc_b": b, "y": y}, int(a["attention_mask"].sum() + b["attention_mask"].sum())
        # causal-lm: prompt tokens and padding get label -100 (no loss)
        eos = self.tok.eos_token or ""
        if "prompt" in rows[0]:
            prompts = [r["prompt"] for r in rows]
            texts = [r["prompt"] + r["response"] + eos for r in rows]
        else:
            prompts = None
            texts = [r["text"] + eos for r in rows]
        enc = self._enc(texts)
        labels = enc["input_ids"].clone()
        labels[enc["attention_mask"] == 0] = -100
        if prompts is not None:
            for j, p in enumerate(prompts):
                n = len(self.tok(p, truncation=True, max_length=self.max_len)["input_ids"])
                labels[j, :n] = -100
        return {"enc": enc, "labels": labels}, int(enc["attention_mask"].sum())


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def evaluate(model: TaskModel, batcher: Batcher, batch_size: int = 64) -> float:
    """The task's metric on every row of ``batcher`` (model in eval mode, on its device)."""
    was = model.training
    model.eval()
    dev = model_device(model)
    n = len(batcher.rows)

    def batches():
        for s in range(0, n, batch_size):
            yield to_device(batcher.batch(range(s, min(n, s + batch_size)))[0], dev)

    try:
        if model.task == "classification":
            correct = 0
            for b in batches():
                correct += int((model.head(model.embed(b["enc"])).argmax(-1) == b["y"]).sum())
            return correct / n
        if model.task == "embedding":
            from scipy.stats import spearmanr

            sims = []
            for b in batches():
                a = nn.functional.normalize(model.embed(b["enc_a"]), dim=-1)
                c = nn.functional.normalize(model.embed(b["enc_b"]), dim=-1)
                sims.append((a * c).sum(-1).cpu())
            rho = spearmanr(torch.cat(sims).numpy(), np.array(batcher.y)).statistic
            return float(rho) if math.isfinite(rho) else 0.0
        total, terms = 0.0, 0
        for b in batches():
            s, k = model.loss_terms(b)
            total += float(s)
            terms += k
        return math.exp(total / max(terms, 1))
    finally:
        model.train(was)
