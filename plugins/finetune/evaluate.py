"""``finetune eval`` and ``finetune merge``.

The untuned baseline for classification is a linear probe: logistic regression
(scikit-learn, C=10, max_iter=5000) on frozen mean-pooled, L2-normalised embeddings of
``--probe-data``, scored on ``--data``.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.core.files import Manifest, atomic_dir, check_output
from gpuforge.plugins.finetune import lora as L
from gpuforge.plugins.finetune.dataset import load_jsonl
from gpuforge.plugins.finetune.tasks import Batcher, TaskModel, evaluate, load_base

PROBE_C = 10.0


def load_with_adapter(model_path: str, adapter: str | None, task: str | None):
    """(TaskModel in eval mode, tokenizer, task, adapter meta)."""
    meta: dict = {}
    if adapter:
        _, meta, _, _ = L.read_adapter(adapter)
    task = task or meta.get("task")
    backbone, tok = load_base(model_path, task or "classification", qlora=bool(meta.get("qlora")))
    head = None
    if adapter:
        _, meta, head = L.apply_adapter(backbone, adapter, dropout=0.0)
    model = TaskModel(backbone, task or "classification", meta.get("labels"))
    if head is not None and model.head is not None:
        try:
            model.head.load_state_dict({k.removeprefix("head."): v for k, v in head.items()})
        except RuntimeError as exc:
            raise BadInputError(f"adapter {adapter}: its head does not fit this model ({str(exc).splitlines()[0]})") from None
    model.eval()
    return model, tok, task, meta


@torch.no_grad()
def embeddings(model: TaskModel, batcher: Batcher, batch_size: int = 64) -> torch.Tensor:
    out = []
    for s in range(0, len(batcher.rows), batch_size):
        b, _ = batcher.batch(range(s, min(len(batcher.rows), s + batch_size)))
        out.append(torch.nn.functional.normalize(model.embed(b["enc"]), dim=-1))
    return torch.cat(out)


def linear_probe(model: TaskModel, tok, train_ds, test_ds, labels: list[str]) -> float:
    from sklearn.linear_model import LogisticRegression

    xtr = embeddings(model, Batcher(tok, train_ds, "classification", labels)).numpy()
    bte = Batcher(tok, test_ds, "classification", labels)
    xte = embeddings(model, bte).numpy()
    ytr = [str(r["label"]) for r in train_ds.rows]
    clf = LogisticRegression(C=PROBE_C, max_iter=5000).fit(xtr, ytr)
    return float(clf.score(xte, [str(r["label"]) for r in test_ds.rows]))


def eval_model(model_path: str, data: str, adapter: str | None, task: str | None, probe_data: str | None) -> dict[str, Any]:
    model, tok, task, meta = load_with_adapter(model_path, adapter, task)
    ds = load_jsonl(data, task, "--data")
    task = task or ds.task
    if model.task != task:
        model = TaskModel(model.backbone, task, meta.get("labels"))
        model.eval()
    if task == "classification" and (probe_data or model.head is None or not meta.get("labels")):
        if not probe_data:
            raise UsageError("classification without an adapter head needs --probe-data TRAIN.jsonl (a linear probe "
                             "on frozen embeddings is fitted on it)")
        train_ds = load_jsonl(probe_data, "classification", "--probe-data")
        value = linear_probe(model, tok, train_ds, ds, train_ds.labels)
        how = f"logistic-regression probe (C={PROBE_C}) on frozen embeddings of {probe_data}"
    else:
        value = evaluate(model, Batcher(tok, ds, task, meta.get("labels")))
        how = "adapter head" if task == "classification" else "base model" if not adapter else "with adapter"
    return {"metric": model.metric, "value": value, "examples": len(ds), "task": task, "adapter": adapter, "how": how}


def merge_to_folder(base: str, adapter: str, out: str, force: bool) -> dict[str, Any]:
    check_output(out, force)
    manifest = Manifest("finetune merge", {"base": base, "adapter": adapter})
    cfg, meta, _, head = L.read_adapter(adapter)
    task = meta.get("task") or ("causal-lm" if cfg.get("task_type") == "CAUSAL_LM" else "embedding")
    backbone, tok = load_base(base, task, qlora=bool(meta.get("qlora")))
    L.apply_adapter(backbone, adapter, dropout=0.0)
    n = len(L.lora_layers(backbone))
    L.merge(backbone)
    if meta.get("qlora"):
        from gpuforge.plugins.finetune.qlora import dequantize_model

        dequantize_model(backbone)
    with atomic_dir(out, force=force) as tmp:
        backbone.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        if (Path(adapter) / L.HEAD_WEIGHTS).is_file():
            shutil.copy(Path(adapter) / L.HEAD_WEIGHTS, tmp / L.HEAD_WEIGHTS)
            shutil.copy(Path(adapter) / L.OUR_META, tmp / L.OUR_META)
        manifest.add_input(adapter)
        manifest.set("result", {"merged_layers": n, "qlora_base_dequantized": bool(meta.get("qlora"))})
        manifest.write(tmp)
    return {"out": out, "merged_layers": n, "task": task, "qlora_base_dequantized": bool(meta.get("qlora"))}
