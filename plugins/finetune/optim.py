"""The three optimizers ``finetune lora`` can use, behind one small interface.

- ``adamw``: ``torch.optim.AdamW`` on the trainable tensors.
- ``adamw`` + ``--offload-optimizer cpu``: ZeRO-Offload's layout (Ren et al. 2021): fp32
  master weights and both Adam moments in one flat host buffer; each step copies the
  gradients to the host, runs the fused numba-cpu AdamW (``finetune.adamw_step``'s
  in-place core) and copies the updated weights back to the device tensors.
- ``adamw-8bit``: both moments stored as blockwise 8-bit codes with the dynamic map
  (Dettmers et al. 2022): signed code for m, unsigned for v, blocks of 256 that never
  straddle two tensors. Each step dequantizes, runs the fused fp32 update and
  requantizes, through the registered ``finetune.*_blockwise_8bit`` kernels.

All three expose ``step(lr)``, ``zero_grad()``, ``state_dict()`` / ``load_state_dict()``,
``state_bytes()`` (optimizer state held) and ``restrict(params)`` (drop frozen tensors,
keeping the others' state; SlimFit uses it).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

BLOCK = 256


class TorchAdamW:
    def __init__(self, params: list[torch.nn.Parameter], lr: float, weight_decay: float, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(params)
        self.opt = torch.optim.AdamW(self.params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, foreach=False)

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
    """Flat host buffers for master weights and moments (ZeRO-Offload CPU optimizer),
    optionally with 8-bit moments."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float, weight_decay: float, betas=(0.9, 0.999),
                 eps=1e-8, eight_bit: bool = False, offload: bool = True):
        self.params = list(params)
        self.lr, self.wd, self.betas, self.eps = lr, weight_decay, betas, eps
        self.eight_bit, self.offload = eight_bit, offload
        # Segments start on a block boundary so no 8-bit block mixes two tensors' scales.
        self.offsets, off = [], 0
        for p in self.params:
            self.offsets.append(off)
            off += -(-p.numel() // BLOCK) * BLOCK
        self.n = off
        self.master = np.zeros(self.n, np.float32)
        for p, o in zip(self.params, self.offsets):
            self.master[o:o + p.numel()] = p.detach().float().cpu().numpy().reshape(-1)
        self.grad = np.zeros(self.n, np.float32)
        self.t = 0
        if eight_bit:
            nb = self.n // BLOCK
            self.m_codes, self.v_codes = np.zeros(self.n, np.uint8), np.zeros(self.n, np.uint8)
            self.m_absmax, self.v_absmax = np.zeros(nb, np.float32), np.zeros(nb, np.float32)
            # code index of 0.0 (the dynamic maps hold an exact zero)
            from gpuforge.plugins.finetune.adam import _CODES

            self.m_codes[:] = int(np.flatnonzero(_CODES[True] == 0)[0])
            self.v_codes[:] = int(np.flatnonzero(_CODES[False] == 0)[0])
        else:
            self.m, self.v = np.zeros(self.n, np.float32), np.zeros(self.n, np.float32)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self, lr: float) -> None:
        from gpuforge.core.kernels import call
        from gpuforge.plugins.finetune.adam import adamw_step_inplace_cpu

        self.t += 1
        self.grad[:] = 0
        for p, o in zip(self.params, self.offsets):
            if p.grad is not None:
                self.grad[o:o + p.numel()] = p.grad.detach().float().cpu().numpy().reshape(-1)
        b1, b2 = self.betas
        if self.eight_bit:
            m = call("finetune.dequantize_blockwise_8bit", self.m_codes, self.m_absmax, BLOCK, True)
            v = call("finetune.dequantize_blockwise_8bit", self.v_codes, self.v_absmax, BLOCK, False)
        else:
            m, v = self.m, self.v
        adamw_step_inplace_cpu(self.master, self.grad, m, v, self.t, lr, b1, b2, self.eps, self.wd)
        if self.eight_bit:
            self.m_codes, self.m_absmax = call("finetune.quantize_blockwise_8bit", m, BLOCK, True)
            self.v_codes, self.v_absmax = call("finetune.quantize_blockwise_8bit", v, BLOCK, False)
        with torch.no_grad():
            for p, o in zip(self.params, self.offsets):
                p.copy_(torch.from_numpy(self.master[o:o + p.numel()]).view_as(p).to(p.device, p.dtype))

    def _arrays(self) -> dict[str, np.ndarray]:
        if self.eight_bit:
            return {"m_codes": self.m_codes, "v_codes": self.v_codes, "m_absmax": self.m_absmax, "v_absmax": self.v_absmax}
        return {"m": self.m, "v": self.v}

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "master": self.master.copy(), **{k: a.copy() for k, a in self._arrays().items()}}

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.t = int(sd["t"])
        self.master[:] = sd["master"]
        for k in self._arrays():
            setattr(self, k, np.array(sd[k]))

    def state_bytes(self) -> int:
        """Moments (and fp32 master copy) held by the optimizer, in bytes."""
        total = sum(a.nbytes for a in self._arrays().values())
        return total + (self.master.nbytes if self.offload else 0)

    def restrict(self, keep: list[torch.nn.Parameter]) -> "FlatAdamW":
        new = FlatAdamW(keep, self.lr, self.wd, self.betas, self.eps, self.eight_bit, self.offload)
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


def make_optimizer(params, kind: str, offload: str, lr: float, weight_decay: float):
    if kind == "adamw-8bit":
        return FlatAdamW(params, lr, weight_decay, eight_bit=True, offload=offload == "cpu")
    if offload == "cpu":
        return FlatAdamW(params, lr, weight_decay, eight_bit=False, offload=True)
    return TorchAdamW(params, lr, weight_decay)
