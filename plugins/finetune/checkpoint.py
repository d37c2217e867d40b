"""Resume state of ``finetune lora``: one safetensors file per checkpoint, nothing pickled.

A checkpoint ``<OUT>.checkpoints/step-000050.safetensors`` holds every tensor of the
state (LoRA and head weights, optimizer buffers, torch's RNG states) as safetensors
tensors, and everything else (step, settings, history, SlimFit scores, optimizer
scalars) as JSON in the file's metadata (``gpuforge_resume``). One file is written
atomically, so a kill mid-write keeps the previous checkpoint; reading it executes
nothing (safetensors + ``json.loads``).

Checkpoints of gpuforge versions before this format (``step-N/state.pt``, a pickle
file) are recognised by name and refused with one line; they are never opened.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpuforge.core.errors import BadInputError

FORMAT = "gpuforge.finetune.resume/2"
META_KEY = "gpuforge_resume"
STEP_FILE = re.compile(r"^step-(\d+)\.safetensors$")
LEGACY = "state.pt"


def step_file(folder: Path, step: int) -> Path:
    return Path(folder) / f"step-{step:06d}.safetensors"


# ------------------------------------------------------------------ nested state <-> tensors + JSON

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


# ------------------------------------------------------------------ files

def save(path: Path, state: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    tensors, skeleton = flatten(state)
    save_file(tensors, str(path), metadata={"format": FORMAT, META_KEY: json.dumps(skeleton)})


def load(path: Path) -> dict[str, Any]:
    """The state saved by :func:`save`; one line (exit 3) for anything else."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != FORMAT or META_KEY not in meta:
                raise BadInputError(f"--resume {path} is a safetensors file but not a finetune resume file "
                                    f"(format {meta.get('format')!r}, expected {FORMAT})")
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
            skeleton = json.loads(meta[META_KEY])
    except BadInputError:
        raise
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise BadInputError(f"--resume {path}: cannot read it ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                            "it is damaged or not a resume file") from None
    try:
        return unflatten(tensors, skeleton)
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"--resume {path}: its state is incomplete ({exc!r})") from None


def _legacy(path: Path) -> BadInputError:
    return BadInputError(f"--resume {path}: a checkpoint of an earlier gpuforge version ({LEGACY}, a pickle file); "
                         "pickle files are not read. Start the run again without --resume")


def steps_in(folder: Path) -> list[Path]:
    """Checkpoint files of ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := STEP_FILE.match(p.name)) and p.is_file()]
    return [p for _, p in sorted(found)]


def find(path: str | Path) -> Path:
    """``--resume`` takes a checkpoint file, a checkpoints folder (``<OUT>.checkpoints``) or
    a finished output folder (its ``checkpoints/``): the newest checkpoint there."""
    path = Path(path)
    if path.is_file():
        if path.name == LEGACY or path.suffix in (".pt", ".pth", ".bin", ".pkl", ".ckpt"):
            raise _legacy(path) if path.name == LEGACY else BadInputError(
                f"--resume {path}: pickle files are not read; convert to safetensors")
        return path
    for base in (path, path / "checkpoints"):
        steps = steps_in(base)
        if steps:
            return steps[-1]
    for base in (path, path / "checkpoints"):
        if (base / LEGACY).is_file() or (base.is_dir() and any(base.glob(f"step-*/{LEGACY}"))):
            raise _legacy(base)
    raise BadInputError(f"--resume {path}: no checkpoint found (expected step-*.safetensors inside); the "
                        "checkpoints of a running or interrupted job are in <OUT>.checkpoints")
