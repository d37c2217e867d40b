"""Nested state (dicts, lists, tensors, arrays, scalars) as one safetensors file, nothing pickled.

Resume files, optimizer state and model configs that other tools would pickle are
written here as safetensors tensors plus a JSON skeleton in the file's metadata;
reading executes nothing (safetensors + ``json.loads``).

    write_state_file(path, {"model": sd, "opt": opt.state_dict(), "step": 5}, fmt="myplugin.resume/1")
    state = read_state_file(path, fmt="myplugin.resume/1", what="--resume")
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpuforge.core.errors import BadInputError

META_KEY = "gpuforge_state"


def flatten(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """(tensors, skeleton): every tensor or array of ``obj`` becomes a named safetensors
    tensor; the skeleton is JSON with ``{"$t": name}`` (torch) / ``{"$a": name}`` (NumPy)
    in their place and ``{"$items": [[key, value], ...]}`` for dicts whose keys are not
    all strings (torch optimizers key their state by parameter index)."""
    tensors: dict[str, torch.Tensor] = {}

    def enc(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x.detach().cpu().contiguous()
            return {"$t": path}
        if isinstance(x, np.ndarray):
            tensors[path] = torch.from_numpy(np.ascontiguousarray(x)).clone()
            return {"$a": path}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {k: enc(v, f"{path}.{k}") for k, v in x.items()}
            return {"$items": [[k, enc(v, f"{path}.{k}")] for k, v in x.items()]}
        if isinstance(x, (list, tuple)):
            return [enc(v, f"{path}.{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot store a {type(x).__name__} in a resume file ({path})")

    return tensors, enc(obj, "s")


def unflatten(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    def dec(x: Any) -> Any:
        if isinstance(x, dict):
            if set(x) == {"$t"}:
                return tensors[x["$t"]]
            if set(x) == {"$a"}:
                return tensors[x["$a"]].numpy()
            if set(x) == {"$items"}:
                return {k: dec(v) for k, v in x["$items"]}
            return {k: dec(v) for k, v in x.items()}
        if isinstance(x, list):
            return [dec(v) for v in x]
        return x

    return dec(skeleton)



def write_state_file(path: str | Path, state: Any, fmt: str) -> None:
    """``state`` to ``path`` (the caller makes the write atomic, e.g. Run.write_state)."""
    from safetensors.torch import save_file

    tensors, skeleton = flatten(state)
    save_file(tensors, str(path), metadata={"format": fmt, META_KEY: json.dumps(skeleton)})


def read_state_file(path: str | Path, fmt: str, what: str = "state file", kind: str | None = None) -> Any:
    """The state written by :func:`write_state_file` with format ``fmt``; one line (exit 3)
    for anything else (``kind`` names the expected file in it, e.g. "finetune resume file")."""
    kind = kind or f"{fmt} file"
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != fmt or META_KEY not in meta:
                raise BadInputError(f"{what} {path} is a safetensors file but not a {kind} "
                                    f"(format {meta.get('format')!r}, expected {fmt})")
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
            skeleton = json.loads(meta[META_KEY])
    except BadInputError:
        raise
    except Exception as exc:  # safetensors raises several types for a damaged file
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(f"{what} {path}: cannot read it ({why}); it is damaged or not a {kind}") from None
    try:
        return unflatten(tensors, skeleton)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"{what} {path}: its state is incomplete ({exc!r})") from None
