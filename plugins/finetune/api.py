"""The finetune plugin's Python API, for users' own code.

    from gpuforge.plugins.finetune.api import load_adapter, train_adapter

    ft = load_adapter("base-model/", "my-adapter/")          # base + LoRA + classification head
    ft.predict(["The hike was far from boring."])
    # -> [{"label": "positive", "scores": {"negative": 0.02, "positive": 0.98}}]
    ft.embed(["a sentence"])                                 # mean-pooled, L2-normalised (any encoder task)
    ft.model                                                 # the torch module (backbone with LoRA + head)

    train_adapter("base-model/", "train.jsonl", "my-adapter/", max_steps=100)   # = finetune lora

Models are Hugging Face folders with safetensors weights; adapters are the folders
``finetune lora`` writes (peft's layout plus ``head.safetensors`` and
``gpuforge_adapter.json``). An adapter made with ``--qlora`` loads onto an NF4 base, as it
was trained. Kernels run through the registry as in the CLI (numba-cpu outside a command).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gpuforge.core.errors import BadInputError
from gpuforge.plugins.finetune.tasks import TaskModel, model_device, to_device

__all__ = ["Finetuned", "load_adapter", "train_adapter"]


class Finetuned:
    """A base model with an adapter (and, for classification, its head)."""

    def __init__(self, model: TaskModel, tokenizer, meta: dict[str, Any], max_len: int = 128):
        self.model, self.tokenizer, self.meta, self.max_len = model, tokenizer, meta, max_len

    @property
    def task(self) -> str:
        return self.model.task

    @property
    def labels(self) -> list[str]:
        return list(self.model.labels)

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def _batches(self, texts: list[str], batch_size: int):
        if isinstance(texts, str):
            texts = [texts]
        for s in range(0, len(texts), batch_size):
            enc = dict(self.tokenizer(list(texts[s:s + batch_size]), padding=True, truncation=True,
                                      max_length=self.max_len, return_tensors="pt"))
            yield to_device(enc, self.device)

    @torch.no_grad()
    def embed(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """(len(texts), hidden) mean-pooled, L2-normalised embeddings, on the CPU."""
        if self.task == "causal-lm":
            raise BadInputError("embed needs an encoder adapter (classification or embedding), not causal-lm")
        out = [torch.nn.functional.normalize(self.model.embed(enc), dim=-1).cpu()
               for enc in self._batches(texts, batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.model.backbone.config.hidden_size)

    @torch.no_grad()
    def probabilities(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """(len(texts), len(labels)) softmax probabilities of the classification head, on the CPU."""
        if self.task != "classification" or self.model.head is None or not self.labels:
            raise BadInputError("this adapter has no classification head (head.safetensors and labels in "
                                "gpuforge_adapter.json); predict needs an adapter trained with --task classification")
        out = [torch.softmax(self.model.head(self.model.embed(enc)).float(), dim=-1).cpu()
               for enc in self._batches(texts, batch_size)]
        return torch.cat(out) if out else torch.zeros(0, len(self.labels))

    def predict(self, texts: list[str], batch_size: int = 64) -> list[dict[str, Any]]:
        """``[{"label": most probable label, "scores": {label: probability}}]``, one per text."""
        labels = self.labels
        return [{"label": labels[int(p.argmax())], "scores": {l: float(v) for l, v in zip(labels, p)}}
                for p in self.probabilities(texts, batch_size)]


def load_adapter(base: str | Path, adapter: str | Path, device: str | torch.device = "cpu",
                 task: str | None = None, max_len: int = 128) -> Finetuned:
    """``base`` (a model folder) with ``adapter`` (a ``finetune lora`` or peft LoRA folder)
    applied, in eval mode on ``device``; the classification head comes with it."""
    from gpuforge.plugins.finetune.evaluate import load_with_adapter

    model, tok, _task, meta = load_with_adapter(base, adapter, task, device)
    return Finetuned(model, tok, meta, max_len)


def train_adapter(model: str | Path, data: str | Path, out: str | Path, *, device: str = "cpu",
                  force: bool = False, **options: Any) -> dict[str, Any]:
    """``gpuforge finetune lora MODEL --data DATA --out OUT`` from Python: ``options`` are
    :class:`~gpuforge.plugins.finetune.train.TrainArgs` fields (``max_steps=100``,
    ``qlora=True``, ``eval_data=...``, ``seed=0`` ...). Returns the command's result; the
    output folder (with its manifest) appears only when training succeeded."""
    from gpuforge.core.run import Run, execute, resolve_device
    from gpuforge.plugins.finetune.train import TrainArgs, train

    args = TrainArgs(model=str(model), data=str(data), out=str(out),
                     **{k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()})
    run = Run("finetune lora", device=resolve_device(device), backend=None, seed=args.seed, json=False, force=force,
              threads=None, params={k: v for k, v in vars(args).items() if k != "extra"})
    result: dict[str, Any] = {}

    def body(r: Run) -> None:
        result.update(train(r, args))
        r.note("result", result)  # in the manifest; nothing is printed

    execute(run, body)
    return result
