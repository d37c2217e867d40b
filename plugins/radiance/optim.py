"""Adam over named tensors, as the radiance trainers need it.

The arithmetic is ``torch.optim.Adam``'s (no amsgrad; L2 weight decay added to the
gradient): ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
``p -= lr / (1-b1^t) * m / (sqrt(v) / sqrt(1-b2^t) + eps)``. The moments are plain
tensors keyed by name, so Gaussian densification can index, concatenate and reset
them row by row, and nothing imports ``torch._dynamo`` (torch.optim's first step does,
~1.3 CPU-seconds per process).
"""
from __future__ import annotations

import math

import torch


class Adam:
    def __init__(self, params: dict[str, torch.Tensor], lrs: dict[str, float] | float, betas=(0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        self.params = dict(params)
        self.lr = dict(lrs) if isinstance(lrs, dict) else {k: float(lrs) for k in self.params}
        self.b1, self.b2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.m = {k: torch.zeros_like(p) for k, p in self.params.items()}
        self.v = {k: torch.zeros_like(p) for k, p in self.params.items()}
        self.t = {k: 0 for k in self.params}

    def zero_grad(self) -> None:
        for p in self.params.values():
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        for k, p in self.params.items():
            g = p.grad
            if g is None:
                continue
            if self.weight_decay:
                g = g.add(p, alpha=self.weight_decay)
            self.t[k] += 1
            m, v = self.m[k], self.v[k]
            m.mul_(self.b1).add_(g, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(g, g, value=1 - self.b2)
            bc1, bc2 = 1 - self.b1 ** self.t[k], 1 - self.b2 ** self.t[k]
            p.addcdiv_(m, (v.sqrt() / math.sqrt(bc2)).add_(self.eps), value=-self.lr[k] / bc1)

    def replace(self, name: str, param: torch.Tensor, m: torch.Tensor, v: torch.Tensor) -> None:
        """Swap in a new tensor for ``name`` with its moments (densification, pruning, resets)."""
        self.params[name], self.m[name], self.v[name] = param, m, v
