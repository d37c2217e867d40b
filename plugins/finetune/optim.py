"""The optimizers ``finetune lora`` can use, behind one small interface.

- ``adamw``: fp32 master weights and both Adam moments in one flat buffer on the run's
  device; each step gathers the gradients into one flat buffer and runs the fused
  ``finetune.adamw_step`` kernel through the registry (numba-cpu on a CPU run,
  numba-cuda on a GPU or simulated-GPU run).
- ``adamw`` + ``--offload-optimizer cpu``: ZeRO-Offload's layout (Ren et al. 2021): the
  same buffers in host memory; each step copies the gradients to the host, runs the
  numba-cpu kernel and copies the updated weights back to the device tensors.
- ``torch-adamw``: ``torch.optim.AdamW(fused=True)`` on the trainable tensors (the
  baseline: torch's own fused kernel, ``foreach=False`` on a device it has none for).
- ``adamw-8bit``: both moments stored as blockwise 8-bit codes with the dynamic map
  (Dettmers et al. 2022): signed code for m, unsigned for v, blocks of 256 that never
  straddle two tensors. Each step dequantizes, runs the fused fp32 update and
  requantizes: the registered ``finetune.*_blockwise_8bit`` kernels around
  ``finetune.adamw_step``, or, for host buffers on numba-cpu, one fused pass per block
  that gives the same bits without full-size fp32 moments
  (``adam.adamw8bit_step_inplace_cpu``).

On numba-cpu with host buffers the steps run in place (the registered kernels return
new arrays: three copies of every buffer per step); the manifest still records the
registered kernels whose results they are.

``finetune lora --optimizer auto`` (the default) picks ``torch-adamw`` unless offload or
``--nproc`` needs our flat buffers (``train.resolve_optimizer``).

All three expose ``step(lr)``, ``describe()`` (for the manifest), ``zero_grad()``,
``state_dict()`` / ``load_state_dict()``, ``state_bytes()`` (optimizer state held) and
``restrict(params)`` (drop frozen tensors, keeping the others' state; SlimFit uses it).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

BLOCK = 256


class TorchAdamW:
    def __init__(self, params: list[torch.nn.Parameter], lr: float, weight_decay: float, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(params)
        self.fused = True
        try:
            self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps,
                                         fused=True)
        except (RuntimeError, ValueError):   # a device or dtype torch has no fused kernel for
            self.fused = False
            self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps,
                                         foreach=False)

    def describe(self) -> dict[str, Any]:
        """For the manifest: which step ran (torch's, so no registry kernel records it)."""
        return {"kind": "torch-adamw", "step": f"torch.optim.AdamW({'fused=True' if self.fused else 'foreach=False'})"}

    def step(self, lr: float) -> None:
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.step()

    def zero_grad(self) -> None:
        self.opt.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return self.opt.state_dict()

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.opt.load_state_dict(sd)

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for s in self.opt.state.values() for t in s.values()
                   if torch.is_tensor(t) and t.dim() > 0)

    def restrict(self, keep: list[torch.nn.Parameter]) -> "TorchAdamW":
        g = self.opt.param_groups[0]
        new = TorchAdamW(keep, g["lr"], g["weight_decay"], g["betas"], g["eps"])
        for p in keep:
            if p in self.opt.state:
                new.opt.state[p] = self.opt.state[p]
        return new


class FlatAdamW:
    """Flat buffers for master weights and moments, optionally with 8-bit moments: NumPy
    arrays in host memory (offloaded, or a CPU run), torch tensors on a CUDA ``device``."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float, weight_decay: float, betas=(0.9, 0.999),
                 eps=1e-8, eight_bit: bool = False, offload: bool = True, device: torch.device | None = None):
        self.params = list(params)
        self.lr, self.wd, self.betas, self.eps = lr, weight_decay, betas, eps
        self.eight_bit, self.offload = eight_bit, offload
        self.device = device if device is not None and device.type == "cuda" and not offload else None
        # Segments start on a block boundary so no 8-bit block mixes two tensors' scales.
        self.offsets, off = [], 0
        for p in self.params:
            self.offsets.append(off)
            off += -(-p.numel() // BLOCK) * BLOCK
        self.n = off
        self.master = self._zeros(self.n, np.float32)
        for p, o in zip(self.params, self.offsets):
            self.master[o:o + p.numel()] = self._buffer(p.detach().float().reshape(-1))
        self.grad = self._zeros(self.n, np.float32)
        self.t = 0
        if eight_bit:
            nb = self.n // BLOCK
            self.m_codes, self.v_codes = self._zeros(self.n, np.uint8), self._zeros(self.n, np.uint8)
            self.m_absmax, self.v_absmax = self._zeros(nb, np.float32), self._zeros(nb, np.float32)
            # code index of 0.0 (the dynamic maps hold an exact zero)
            from gpuforge.plugins.finetune.adam import _CODES

            self.m_codes[:] = int(np.flatnonzero(_CODES[True] == 0)[0])
            self.v_codes[:] = int(np.flatnonzero(_CODES[False] == 0)[0])
        else:
            self.m, self.v = self._zeros(self.n, np.float32), self._zeros(self.n, np.float32)

    def _zeros(self, n: int, dtype):
        if self.device is None:
            return np.zeros(n, dtype)
        return torch.zeros(n, dtype=getattr(torch, np.dtype(dtype).name), device=self.device)

    def describe(self) -> dict[str, Any]:
        """For the manifest: which step ran and where its state lives (the registry records
        the kernels and their backends)."""
        return {"kind": "adamw-8bit" if self.eight_bit else "adamw",
                "step": "finetune.adamw_step on flat buffers" + (", 8-bit blockwise moments" if self.eight_bit else ""),
                "state": "host memory (offloaded)" if self.offload else "beside the parameters"}

    def _buffer(self, x):
        """``x`` (tensor or array) where this optimizer keeps its buffers."""
        if self.device is None:
            return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        return torch.as_tensor(x).to(self.device)

    def _backend(self) -> str | None:
        """Offloaded state is updated by the CPU kernel whatever the run's device (unless
        --backend says otherwise); else the registry picks from the run's device."""
        from gpuforge.core.run import active_run

        run = active_run()
        return "numba-cpu" if self.offload and self.device is None and not (run and run.backend) else None

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def gather_grads(self):
        """The gradients in one flat buffer (zeros where a tensor has none); data-parallel
        training all-reduces this buffer before :meth:`step`."""
        self.grad[:] = 0
        for p, o in zip(self.params, self.offsets):
            if p.grad is not None:
                self.grad[o:o + p.numel()] = self._buffer(p.grad.detach().float().reshape(-1))
        return self.grad

    def step(self, lr: float, gathered: bool = False) -> None:
        self.t += 1
        if not gathered:
            self.gather_grads()
        be = self._backend()
        if self._in_place(be):
            self._step_in_place(lr)
        else:
            self._step_registry(lr, be)
        with torch.no_grad():
            for p, o in zip(self.params, self.offsets):
                p.copy_(torch.as_tensor(self.master[o:o + p.numel()]).view_as(p).to(p.device, p.dtype))

    def _in_place(self, be: str | None) -> bool:
        """Host buffers whose kernels would run on numba-cpu: update them in place."""
        from gpuforge.core.kernels import choose_backend, get_spec

        return self.device is None and choose_backend(get_spec("finetune.adamw_step"), self.master,
                                                      backend=be) == "numba-cpu"

    def _step_in_place(self, lr: float) -> None:
        from gpuforge.core.run import active_run
        from gpuforge.plugins.finetune.adam import adamw8bit_step_inplace_cpu, adamw_step_inplace_cpu

        b1, b2 = self.betas
        names = ["finetune.adamw_step"]
        if self.eight_bit:
            names += ["finetune.dequantize_blockwise_8bit", "finetune.quantize_blockwise_8bit"]
            adamw8bit_step_inplace_cpu(self.master, self.grad, self.m_codes, self.m_absmax, self.v_codes,
                                       self.v_absmax, self.t, lr, b1, b2, self.eps, self.wd, BLOCK)
        else:
            adamw_step_inplace_cpu(self.master, self.grad, self.m, self.v, self.t, lr, b1, b2, self.eps, self.wd)
        run = active_run()
        if run is not None:
            for name in names:
                run.record_kernel(name, "numba-cpu")

    def _step_registry(self, lr: float, be: str | None) -> None:
        from gpuforge.core.kernels import call

        b1, b2 = self.betas
        if self.eight_bit:
            m = call("finetune.dequantize_blockwise_8bit", self.m_codes, self.m_absmax, BLOCK, True, backend=be)
            v = call("finetune.dequantize_blockwise_8bit", self.v_codes, self.v_absmax, BLOCK, False, backend=be)
        else:
            m, v = self.m, self.v
        self.master, m, v = call("finetune.adamw_step", self.master, self.grad, m, v, self.t, lr, b1, b2, self.eps,
                                 self.wd, backend=be)
        if self.eight_bit:
            self.m_codes, self.m_absmax = call("finetune.quantize_blockwise_8bit", m, BLOCK, True, backend=be)
            self.v_codes, self.v_absmax = call("finetune.quantize_blockwise_8bit", v, BLOCK, False, backend=be)
        else:
            self.m, self.v = m, v

    def _arrays(self) -> dict[str, np.ndarray]:
        if self.eight_bit:
            return {"m_codes": self.m_codes, "v_codes": self.v_codes, "m_absmax": self.m_absmax, "v_absmax": self.v_absmax}
        return {"m": self.m, "v": self.v}

    def state_dict(self) -> dict[str, Any]:
        def copy(a):
            return a.clone() if isinstance(a, torch.Tensor) else a.copy()

        return {"t": self.t, "master": copy(self.master), **{k: copy(a) for k, a in self._arrays().items()}}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.t = int(sd["t"])
        self.master = self._buffer(sd["master"]).clone() if self.device is not None else np.array(sd["master"])
        for k in self._arrays():
            setattr(self, k, self._buffer(sd[k]).clone() if self.device is not None else np.array(sd[k]))

    def state_bytes(self) -> int:
        """Moments and the fp32 master copy held by the optimizer, in bytes (the master copy
        exists on the device too when not offloaded)."""
        def nbytes(a):
            return a.numel() * a.element_size() if isinstance(a, torch.Tensor) else a.nbytes

        total = sum(nbytes(a) for a in self._arrays().values())
        return total + nbytes(self.master)

    def restrict(self, keep: list[torch.nn.Parameter]) -> "FlatAdamW":
        new = FlatAdamW(keep, self.lr, self.wd, self.betas, self.eps, self.eight_bit, self.offload, self.device)
        new.t = self.t
        index = {id(p): i for i, p in enumerate(self.params)}
        for p, o_new in zip(keep, new.offsets):
            o_old, k = self.offsets[index[id(p)]], -(-p.numel() // BLOCK) * BLOCK
            new.master[o_new:o_new + k] = self.master[o_old:o_old + k]
            for name, arr in self._arrays().items():
                dst = getattr(new, name)
                if name.endswith("absmax"):
                    dst[o_new // BLOCK:(o_new + k) // BLOCK] = arr[o_old // BLOCK:(o_old + k) // BLOCK]
                else:
                    dst[o_new:o_new + k] = arr[o_old:o_old + k]
        return new


def make_optimizer(params, kind: str, offload: str, lr: float, weight_decay: float, device: torch.device | None = None):
    """``device``: where the trained tensors live (the optimizer's buffers follow them
    unless ``offload`` is ``cpu``)."""
    if kind == "torch-adamw":
        return TorchAdamW(params, lr, weight_decay)
    return FlatAdamW(params, lr, weight_decay, eight_bit=kind == "adamw-8bit", offload=offload == "cpu", device=device)
