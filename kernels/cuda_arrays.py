"""Moving a caller's data to a CUDA kernel and the results back, the same way it came.

The ``numba-cuda`` wrappers accept three kinds of input:

- host data (NumPy arrays, lists, CPU torch tensors): made C-contiguous, then copied
  to the device; results come back as NumPy arrays;
- Numba device arrays (or any ``__cuda_array_interface__`` object that is not torch):
  used in place; they must be C-contiguous; results are Numba device arrays;
- CUDA torch tensors: viewed without a copy through ``numba.cuda.as_cuda_array``
  (a non-contiguous tensor is made contiguous on the device first); results are torch
  tensors on the same device, and kernels run on torch's current stream.

torch is never imported here: a tensor is recognised by its type's module.
"""
from __future__ import annotations

import numpy as np
from numba import cuda

from gpuforge.kernels.arguments import KernelArgumentError


def _c_contiguous(a) -> np.ndarray:
    """Like np.ascontiguousarray, but a 0-d array stays 0-d."""
    a = np.asarray(a)
    return a if a.flags.c_contiguous else a.copy(order="C")


def _is_torch(a) -> bool:
    return type(a).__module__.startswith("torch")


class Placement:
    """Where the inputs of one call live; allocates outputs and returns them alike."""

    def __init__(self):
        self.kind = "host"  # "host" < "device" < "torch": the first device input wins
        self.torch_device = None
        self.stream = 0

    def put(self, a, name: str):
        """``a`` as an array a kernel can take: a host array (NumPy, C-contiguous) is
        returned as is; call :meth:`to_device` on it after validating its metadata."""
        if _is_torch(a) and a.is_cuda:
            import torch

            if self.kind != "torch":
                self.kind = "torch"
                self.torch_device = a.device
                self.stream = cuda.external_stream(
                    torch.cuda.current_stream(a.device).cuda_stream)
            return cuda.as_cuda_array(a.contiguous())
        if _is_torch(a):
            return _c_contiguous(a.detach().numpy())
        if hasattr(a, "copy_to_host") or hasattr(a, "__cuda_array_interface__"):
            # Numba device arrays (the simulator's have no __cuda_array_interface__)
            d = a if hasattr(a, "copy_to_host") else cuda.as_cuda_array(a)
            if not d.is_c_contiguous():
                raise KernelArgumentError(
                    f"{name} is a non-contiguous device array; pass a contiguous copy")
            if self.kind == "host":
                self.kind = "device"
            return d
        return _c_contiguous(a)

    def to_device(self, a):
        if isinstance(a, np.ndarray):
            return cuda.to_device(a, stream=self.stream)
        return a

    def empty(self, shape, dtype):
        """(device array the kernel writes, object handed back to the caller)."""
        shape = tuple(int(s) for s in shape)
        if self.kind == "torch":
            import torch

            t = torch.empty(shape, dtype=getattr(torch, np.dtype(dtype).name),
                            device=self.torch_device)
            return cuda.as_cuda_array(t), t
        d = cuda.device_array(shape, dtype=dtype, stream=self.stream)
        return d, d

    def result(self, handed):
        """What the caller gets: NumPy for host inputs, else the device object itself."""
        if self.kind == "host":
            return handed.copy_to_host(stream=self.stream)
        return handed

    def read_flag(self, flag) -> int:
        """Wait for the kernels and read a one-element int32 error flag."""
        return int(flag.copy_to_host(stream=self.stream)[0])

    def launch(self, kernel, blocks: int, threads: int, *args) -> None:
        if blocks > 0:
            kernel[blocks, threads, self.stream](*args)


def zeros_flag(place: Placement):
    return cuda.to_device(np.zeros(1, np.int32), stream=place.stream)
