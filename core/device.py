"""Turn ``--device auto|cpu|cuda[:N]`` into a torch device, once, the same way for
every command: ``auto`` is the first CUDA GPU when torch sees one, else the CPU;
asking for CUDA where there is none is an error (exit 4), never a silent CPU run."""
from __future__ import annotations

from gpuforge.core.context import get_context
from gpuforge.core.errors import UnsupportedError


def torch_device(requested: str | None = None):
    """The ``torch.device`` for ``requested`` (default: the global ``--device``)."""
    import torch

    requested = requested or get_context().device
    if requested == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UnsupportedError(
            f"--device {requested}: torch sees no CUDA GPU here (CPU-only torch build or no driver); use --device cpu"
        )
    dev = torch.device(requested)
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UnsupportedError(f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s) present")
    return dev


def seed_everything(seed: int | None = None) -> int | None:
    """Seed Python, NumPy and torch from ``--seed`` (or ``seed``); returns the seed used."""
    seed = get_context().seed if seed is None else seed
    if seed is None:
        return None
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return seed
