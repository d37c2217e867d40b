"""Small helpers shared by this plugin's CUDA host wrappers (see gpuforge.kernels.cuda_arrays)."""
from __future__ import annotations

import numpy as np
from numba import cuda


def zeros(place, shape, dtype=np.float32):
    """A zero-filled output for ``place``: (device array the kernel writes, object handed back)."""
    shape = tuple(int(s) for s in shape)
    if place.kind == "torch":
        import torch

        t = torch.zeros(shape, dtype=getattr(torch, np.dtype(dtype).name), device=place.torch_device)
        return cuda.as_cuda_array(t), t
    d = cuda.to_device(np.zeros(shape, dtype), stream=place.stream)
    return d, d


def as_host(a, dtype) -> np.ndarray:
    """A small argument (scalars per level, a background colour) as a contiguous host array."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    elif hasattr(a, "copy_to_host"):
        a = a.copy_to_host()
    return np.ascontiguousarray(np.asarray(a, dtype))


def put_f32(place, a, name):
    """``place.put`` that converts host data to float32 (device data must already be float32)."""
    v = place.put(a, name)
    return v.astype(np.float32, copy=False) if isinstance(v, np.ndarray) else v


def put_i32(place, a, name):
    v = place.put(a, name)
    return v.astype(np.int32, copy=False) if isinstance(v, np.ndarray) else v
