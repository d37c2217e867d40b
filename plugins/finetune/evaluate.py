"""``finetune eval``, ``finetune predict`` and ``finetune merge``.

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
from gpuforge.plugins.finetune import lora as L
from gpuforge.plugins.finetune.dataset import load_jsonl
from gpuforge.plugins.finetune.tasks import Batcher, TaskModel, evaluate, load_base, model_device, to_device

PROBE_C = 10.0


def load_with_adapter(model_path: str | Path, adapter: str | Path | None, task: str | None,
                      device: torch.device | str = "cpu"):
    """(TaskModel in eval mode on ``device``, tokenizer, task, adapter meta)."""
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
    model.to(device).eval()
    return model, tok, task, meta


@torch.no_grad()
def embeddings(model: TaskModel, batcher: Batcher, batch_size: int = 64) -> torch.Tensor:
    out, dev = [], model_device(model)
    for s in range(0, len(batcher.rows), batch_size):
        b, _ = batcher.batch(range(s, min(len(batcher.rows), s + batch_size)))
        out.append(torch.nn.functional.normalize(model.embed(to_device(b["enc"], dev)), dim=-1).cpu())
    return torch.cat(out)


def linear_probe(model: TaskModel, tok, train_ds, test_ds, labels: list[str]) -> float:
    from sklearn.linear_model import LogisticRegression

    xtr = embeddings(model, Batcher(tok, train_ds, "classification", labels)).numpy()
    bte = Batcher(tok, test_ds, "classification", labels)
    xte = embeddings(model, bte).numpy()
    ytr = [str(r["label"]) for r in train_ds.rows]
    clf = LogisticRegression(C=PROBE_C, max_iter=5000).fit(xtr, ytr)
    return float(clf.score(xte, [str(r["label"]) for r in test_ds.rows]))


def eval_model(model_path: str, data: str, adapter: str | None, task: str | None, probe_data: str | None,
               device: torch.device | str = "cpu") -> dict[str, Any]:
    model, tok, task, meta = load_with_adapter(model_path, adapter, task, device)
    ds = load_jsonl(data, task, "--data")
    task = task or ds.task
    if model.task != task:
        model = TaskModel(model.backbone, task, meta.get("labels")).to(device)
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


# ------------------------------------------------------------------ predict

def read_texts(path: Path) -> tuple[list[str], list[str] | None]:
    """Texts (and labels when every row has one) of a JSONL file of ``{"text"}`` rows."""
    import json

    texts, labels = [], []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise BadInputError(f"--data {path} is not UTF-8 text ({exc}); save it as UTF-8 JSONL") from None
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{path} line {no}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or not obj["text"].strip():
            raise BadInputError(f"{path} line {no}: expected an object with a non-empty \"text\" string")
        texts.append(obj["text"])
        labels.append(obj.get("label"))
    if not texts:
        raise BadInputError(f"--data {path} holds no texts")
    return texts, ([str(l) for l in labels] if all(l is not None for l in labels) else None)


# ------------------------------------------------------------------ merge

def merge_into(folder: Path, base: str, adapter: str) -> dict[str, Any]:
    """Write the merged model (+ tokenizer, + head) into ``folder``."""
    cfg, meta, _, head = L.read_adapter(adapter)
    task = meta.get("task") or ("causal-lm" if cfg.get("task_type") == "CAUSAL_LM" else "embedding")
    backbone, tok = load_base(base, task, qlora=bool(meta.get("qlora")))
    L.apply_adapter(backbone, adapter, dropout=0.0)
    n = len(L.lora_layers(backbone))
    L.merge(backbone)
    if meta.get("qlora"):
        from gpuforge.plugins.finetune.qlora import dequantize_model

        dequantize_model(backbone)
    backbone.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    if (Path(adapter) / L.HEAD_WEIGHTS).is_file():
        shutil.copy(Path(adapter) / L.HEAD_WEIGHTS, folder / L.HEAD_WEIGHTS)
        shutil.copy(Path(adapter) / L.OUR_META, folder / L.OUR_META)
    return {"merged_layers": n, "task": task, "qlora_base_dequantized": bool(meta.get("qlora"))}
