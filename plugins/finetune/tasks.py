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


def load_base(path: str | Path, task: str, qlora: bool = False):
    """(model, tokenizer) from a local folder, offline; one clear line if it is not one.
    ``qlora``: the frozen NF4 base, quantized while it loads (:func:`.qlora.load_nf4_base`)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise BadInputError(f"MODEL {path} is not a Hugging Face model folder (no config.json); pass a folder saved "
                            f"with save_pretrained")
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
                model = cls.from_pretrained(str(path), local_files_only=True, dtype=torch.float32)
        except (OSError, ValueError, KeyError) as exc:
            raise BadInputError(f"cannot load MODEL {path} for --task {task}: {str(exc).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


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

    def loss(self, batch: dict) -> torch.Tensor:
        if self.task == "classification":
            return nn.functional.cross_entropy(self.head(self.embed(batch["enc"])), batch["y"])
        if self.task == "embedding":
            a = nn.functional.normalize(self.embed(batch["enc_a"]), dim=-1)
            b = nn.functional.normalize(self.embed(batch["enc_b"]), dim=-1)
            return nn.functional.mse_loss((a * b).sum(-1), batch["y"])
        out = self.backbone(input_ids=batch["enc"]["input_ids"], attention_mask=batch["enc"]["attention_mask"],
                            labels=batch["labels"])
        return out.loss

    def head_state(self) -> dict[str, torch.Tensor]:
        return {f"head.{k}": v for k, v in self.head.state_dict().items()} if self.head is not None else {}


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


@torch.no_grad()
def evaluate(model: TaskModel, batcher: Batcher, batch_size: int = 64) -> float:
    """The task's metric on every row of ``batcher`` (model in eval mode)."""
    was = model.training
    model.eval()
    n = len(batcher.rows)
    try:
        if model.task == "classification":
            correct = 0
            for s in range(0, n, batch_size):
                b, _ = batcher.batch(range(s, min(n, s + batch_size)))
                correct += int((model.head(model.embed(b["enc"])).argmax(-1) == b["y"]).sum())
            return correct / n
        if model.task == "embedding":
            from scipy.stats import spearmanr

            sims = []
            for s in range(0, n, batch_size):
                b, _ = batcher.batch(range(s, min(n, s + batch_size)))
                a = nn.functional.normalize(model.embed(b["enc_a"]), dim=-1)
                c = nn.functional.normalize(model.embed(b["enc_b"]), dim=-1)
                sims.append((a * c).sum(-1))
            rho = spearmanr(torch.cat(sims).numpy(), np.array(batcher.y)).statistic
            return float(rho) if math.isfinite(rho) else 0.0
        total, count = 0.0, 0
        for s in range(0, n, batch_size):
            b, _ = batcher.batch(range(s, min(n, s + batch_size)))
            k = int((b["labels"][:, 1:] != -100).sum())
            total += float(model.loss(b)) * k
            count += k
        return math.exp(total / max(count, 1))
    finally:
        model.train(was)
