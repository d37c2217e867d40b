"""SlimFit-style freezing from training dynamics (Ardakani et al. 2023, "SlimFit:
Memory-Efficient Fine-Tuning of Transformer-based Models Using Training Dynamics").

SlimFit's inter-layer scheduler freezes the layers whose weights move least: it
accumulates each layer's update magnitude (the distance its weights travel between
iterations) and keeps training only the layers that are still changing, so their
gradients and optimizer states are the only ones held. What we implement (one-shot
variant, on LoRA layers):

1. warm-up: every LoRA layer trains for ``warmup`` optimizer steps while we accumulate
   ``score_l = sum_t ||theta_l(t) - theta_l(t-1)||_2 / sqrt(numel_l)`` over its A and B;
2. then the layers are ranked by score and the highest-scoring ones are kept until they
   hold ``keep`` of the LoRA parameters; the rest are frozen (their learned update stays
   in the model; their gradients and Adam states are released).

Not implemented from the paper: re-selection every epoch, and its activation
quantization / pruning. The classification head always trains.
"""
from __future__ import annotations

import torch


class SlimFit:
    def __init__(self, layers: dict, warmup: int, keep: float = 0.4):
        self.layers, self.warmup, self.keep = layers, max(1, warmup), keep
        self.score = {n: 0.0 for n in layers}
        self._prev = {n: self._flat(l) for n, l in layers.items()}
        self.frozen: list[str] = []
        self.done = False

    @staticmethod
    def _flat(layer) -> torch.Tensor:
        return torch.cat([layer.lora_A.weight.detach().reshape(-1), layer.lora_B.weight.detach().reshape(-1)]).clone()

    def observe(self) -> None:
        """Call after each optimizer step of the warm-up."""
        for n, layer in self.layers.items():
            cur = self._flat(layer)
            self.score[n] += float((cur - self._prev[n]).norm()) / cur.numel() ** 0.5
            self._prev[n] = cur

    def decide(self) -> list[str]:
        """Names of the LoRA layers to freeze."""
        sizes = {n: l.lora_A.weight.numel() + l.lora_B.weight.numel() for n, l in self.layers.items()}
        total, kept = sum(sizes.values()), 0
        order = sorted(self.layers, key=lambda n: -self.score[n])
        keep = []
        for n in order:
            if kept + sizes[n] > self.keep * total and keep:
                continue
            keep.append(n)
            kept += sizes[n]
        self.frozen = [n for n in self.layers if n not in keep]
        self.done = True
        self._prev = {}
        return self.frozen

    def state(self) -> dict:
        return {"score": self.score, "frozen": self.frozen, "done": self.done}

    def load(self, state: dict) -> None:
        self.score, self.frozen, self.done = dict(state["score"]), list(state["frozen"]), bool(state["done"])
        self._prev = {} if self.done else {n: self._flat(l) for n, l in self.layers.items()}


def freeze(layers: dict, names: list[str]) -> None:
    for n in names:
        for p in (layers[n].lora_A.weight, layers[n].lora_B.weight):
            p.requires_grad_(False)
            p.grad = None
