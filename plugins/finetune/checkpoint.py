"""Resume state of ``finetune lora``: one safetensors file per checkpoint, nothing pickled.

A checkpoint ``<OUT>.checkpoints/step-000050.safetensors`` holds every tensor of the
state (LoRA and head weights, optimizer buffers, torch's RNG states) as safetensors
tensors, and everything else (step, settings, history, SlimFit scores, optimizer
scalars) as JSON in the file's metadata (``gpuforge_state``; see gpuforge.core.statefile). One file is written
atomically, so a kill mid-write keeps the previous checkpoint; reading it executes
nothing (safetensors + ``json.loads``).

Checkpoints of gpuforge versions before this format (``step-N/state.pt``, a pickle
file) are recognised by name and refused with one line; they are never opened.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gpuforge.core.errors import BadInputError
from gpuforge.core.statefile import read_state_file, write_state_file

FORMAT = "gpuforge.finetune.resume/2"
STEP_FILE = re.compile(r"^step-(\d+)\.safetensors$")
LEGACY = "state.pt"


def step_file(folder: Path, step: int) -> Path:
    return Path(folder) / f"step-{step:06d}.safetensors"


# ------------------------------------------------------------------ files

def save(path: Path, state: dict[str, Any]) -> None:
    write_state_file(path, state, FORMAT)


def load(path: Path) -> dict[str, Any]:
    """The state saved by :func:`save`; one line (exit 3) for anything else."""
    return read_state_file(path, FORMAT, "--resume", "finetune resume file")


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
