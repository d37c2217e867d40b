"""Training data: JSONL files, validated whole before any training starts.

One JSON object per line, in one of four shapes (all lines of a file alike):

- ``{"text": ...}``                              causal-lm (loss on every token)
- ``{"prompt": ..., "response": ...}``           causal-lm (loss on the response only)
- ``{"text": ..., "label": ...}``                classification (label: string or int)
- ``{"sentence1": ..., "sentence2": ..., "score": x}``   embedding (similarity in [0, 1];
  ``text_a``/``text_b`` are accepted too)

Errors name the file and line: ``data.jsonl line 7: ...``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from gpuforge.core.errors import BadInputError

SHAPES = {
    "pair": ("sentence1", "sentence2", "score"),
    "pair_ab": ("text_a", "text_b", "score"),
    "prompt": ("prompt", "response"),
    "labelled": ("text", "label"),
    "text": ("text",),
}
TASK_OF_SHAPE = {"pair": "embedding", "pair_ab": "embedding", "prompt": "causal-lm", "labelled": "classification",
                 "text": "causal-lm"}


@dataclass
class Dataset:
    path: Path
    shape: str
    rows: list[dict] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    """Sorted distinct labels (classification)."""

    @property
    def task(self) -> str:
        return TASK_OF_SHAPE[self.shape]

    def __len__(self) -> int:
        return len(self.rows)


def _shape_of(obj: dict) -> str | None:
    for name, keys in SHAPES.items():
        if all(k in obj for k in keys):
            return name
    return None


def load_jsonl(path: str | Path, task: str | None = None, what: str = "--data") -> Dataset:
    """Read and check every line; raise BadInputError naming the first bad line."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{what} file not found: {path}")
    rows, shape = [], None
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{what} {path} is not UTF-8 text ({exc}); save it as UTF-8 JSONL") from None
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path} line {no}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise BadInputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); each line must be one "
                                f"JSON object") from None
        if not isinstance(obj, dict):
            raise BadInputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        s = _shape_of(obj)
        if s is None:
            raise BadInputError(f"{where}: no known fields (have {sorted(obj)}); use text, text+label, prompt+response "
                                f"or sentence1+sentence2+score")
        s = "pair" if s == "pair_ab" else s
        if s == "pair" and "text_a" in obj:
            obj = {"sentence1": obj["text_a"], "sentence2": obj["text_b"], "score": obj["score"]}
        if shape is None:
            shape = s
        elif s != shape:
            raise BadInputError(f"{where}: fields {sorted(obj)} differ from the file's first example ({shape}); "
                                f"use one shape per file")
        for key in ("text", "prompt", "response", "sentence1", "sentence2"):
            if key in obj and (not isinstance(obj[key], str) or not obj[key].strip()):
                raise BadInputError(f"{where}: {key!r} must be a non-empty string")
        if s == "labelled" and (not isinstance(obj["label"], (str, int)) or isinstance(obj["label"], bool)):
            raise BadInputError(f"{where}: 'label' must be a string or an integer")
        if s == "pair":
            sc = obj["score"]
            if isinstance(sc, bool) or not isinstance(sc, (int, float)) or not 0.0 <= float(sc) <= 1.0:
                raise BadInputError(f"{where}: 'score' must be a number in [0, 1], got {sc!r}")
        rows.append(obj)
    if not rows:
        raise BadInputError(f"{what} {path} holds no examples")
    ds = Dataset(path, shape, rows)
    if task is not None and task != ds.task and not (task == "causal-lm" and shape in ("labelled", "text")):
        raise BadInputError(f"{what} {path} holds {shape} examples (fields {list(SHAPES[shape])}), which do not fit "
                            f"--task {task}; {TASK_OF_SHAPE[shape]} data needs --task {TASK_OF_SHAPE[shape]}")
    if ds.task == "classification" and (task in (None, "classification")):
        ds.labels = sorted({str(r["label"]) for r in rows})
        if len(ds.labels) < 2:
            raise BadInputError(f"{what} {path}: classification needs at least two distinct labels, found {ds.labels}")
    return ds
