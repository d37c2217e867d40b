"""Torch tensors to and from the radiance kernels, on whatever device the run uses.

Every kernel goes through :func:`gpuforge.core.kernels.call`, which picks the backend
from the data and the running command: CUDA tensors reach numba-cuda as they are (no
copy, through ``__cuda_array_interface__``) and come back as CUDA tensors; CPU tensors
go as NumPy views (to numba-cpu, or to numba-cuda in Numba's simulator on a simulated
CUDA run, which copies them to its device and back) and come back as NumPy arrays.
"""
from __future__ import annotations

import numpy as np
import torch


def arg(t):
    """What a kernel takes for ``t``: a contiguous CUDA tensor, or a NumPy view of a CPU one."""
    if isinstance(t, torch.Tensor):
        t = t.detach().contiguous()
        return t if t.is_cuda else t.numpy()
    return t


def tensor(a, device: torch.device | None = None) -> torch.Tensor:
    """A kernel's result as a torch tensor on ``device`` (no copy when it is already there)."""
    if not isinstance(a, torch.Tensor):
        if hasattr(a, "copy_to_host"):  # a Numba device array (only from direct kernel calls)
            a = a.copy_to_host()
        a = torch.from_numpy(np.ascontiguousarray(a))
    return a if device is None else a.to(device)
