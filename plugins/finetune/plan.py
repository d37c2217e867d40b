"""Memory planning for fine-tuning: ``gpuforge finetune plan`` and the estimate behind
``gpuforge plan finetune lora ...``.

Model shape from the parameter count: a LLaMA-like decoder (7 linear layers per block,
FFN width 2.6875 d, about d/100 layers), so N ~ 12 * L * d^2 gives
d = (N * 100 / 12)^(1/3) (65e9 -> d ~ 8200, L ~ 80; LLaMA-65B has 8192 and 80).

Bytes per parameter (mixed precision with Adam, as in ZeRO, Rajbhandari et al. 2020):
- full: 16-bit weights (2) + 16-bit gradients (2) + fp32 master (4) + Adam m, v (8) = 16;
- lora: 16-bit frozen base (2); adapters as full training (16 per adapter parameter);
- qlora: NF4 base with double-quantized scales, 4.127 bits (QLoRA sec. 3) = 0.516, plus
  the adapters as above and one dequantized 16-bit weight as a workspace.
Activations per transformer block in 16-bit (Korthikanti et al. 2022, eq. 1):
s*b*h*(34 + 5*a*s/h) bytes; with gradient checkpointing only each block's input
(2*s*b*h bytes) is kept, plus one block's activations during recomputation.
CPU optimizer offload (ZeRO-Offload) moves the fp32 master weights and Adam moments of
every trained parameter to host memory. 1 GiB is added for the CUDA context and allocator.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from gpuforge.core.errors import BadInputError, UsageError

GIB = 2**30
CONTEXT_BYTES = 1 * GIB
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)


@dataclass
class Shape:
    params: float
    d: int
    layers: int
    ff: int
    heads: int
    vocab: int = 32000


def shape_for(params: float) -> Shape:
    d = int(round((params * 100 / 12) ** (1 / 3) / 128)) * 128
    d = max(d, 128)
    layers = max(1, int(round(params / (12 * d * d))))
    return Shape(params, d, layers, int(2.6875 * d), max(1, d // 128))


def parse_params(text: str) -> float:
    t = str(text).strip().upper().replace("_", "")
    mult = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
    try:
        value = float(t[:-1]) * mult[t[-1]] if t and t[-1] in mult else float(t)
    except ValueError:
        raise BadInputError(f"--params {text!r} is not a number (examples: 65e9, 7B, 350M)") from None
    if not value > 0 or not math.isfinite(value):
        raise BadInputError(f"--params must be positive, got {text!r}")
    return value


def breakdown(params: float, method: str, r: int = 16, seq_len: int = 512, batch: int = 1,
              checkpointing: bool = True, offload: bool = False) -> dict[str, float]:
    """GPU memory by part, in bytes."""
    if method not in ("full", "lora", "qlora"):
        raise UsageError(f"--method {method!r} is not one of full, lora, qlora")
    s = shape_for(params)
    per_block_act = seq_len * batch * s.d * (34 + 5 * s.heads * seq_len / s.d)
    if checkpointing:
        activations = s.layers * 2 * seq_len * batch * s.d + per_block_act
    else:
        activations = s.layers * per_block_act
    logits = 4 * seq_len * batch * s.vocab  # fp32 logits for the loss
    if method == "full":
        trained = params
        weights = 2 * params
    else:
        trained = s.layers * r * (4 * 2 * s.d + 3 * (s.d + s.ff))  # q,k,v,o + gate,up,down
        weights = 2 * params if method == "lora" else params * NF4_BITS / 8
    out = {
        "weights": weights,
        "adapters": 2 * trained if method != "full" else 0.0,
        "gradients": 2 * trained,
        "optimizer": 0.0 if offload else 12 * trained,  # fp32 master + Adam m, v
        "activations": activations + logits,
        "workspace": (2 * s.d * s.ff if method == "qlora" else 0.0) + CONTEXT_BYTES,
    }
    return out


def lora_flops(params: float, method: str, seq_len: int, batch: int, checkpointing: bool) -> float:
    """Per optimizer step: forward 2N, backward 4N (full) or 2N (frozen base: only
    activation gradients), recomputation 2N with checkpointing, per token."""
    per_token = 2 * params + (4 * params if method == "full" else 2 * params) + (2 * params if checkpointing else 0)
    return per_token * seq_len * batch


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gpuforge plan finetune lora", add_help=False)
    p.add_argument("--params", required=True)
    p.add_argument("--method", default=None, choices=["full", "lora", "qlora"])
    p.add_argument("--qlora", action="store_true")
    p.add_argument("--r", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--gradient-checkpointing", dest="ckpt", action="store_true", default=True)
    p.add_argument("--no-gradient-checkpointing", dest="ckpt", action="store_false")
    p.add_argument("--offload-optimizer", default="none", choices=["none", "cpu"])
    p.add_argument("--gpu", default=None)
    return p


def estimate(args: list[str]):
    """Estimate for ``gpuforge plan finetune lora --params N [--qlora | --method M] ...``."""
    try:
        ns, unknown = _parser().parse_known_args(list(args))
    except SystemExit:
        raise UsageError("usage: --params N [--method full|lora|qlora | --qlora] [--r R] [--seq-len L] [--batch B] "
                         "[--no-gradient-checkpointing] [--offload-optimizer cpu]") from None
    if unknown:
        raise UsageError(f"unknown option(s) for the finetune estimate: {' '.join(unknown)}")
    method = "qlora" if ns.qlora else (ns.method or "lora")
    return make_estimate(parse_params(ns.params), method, ns.r, ns.seq_len, ns.batch, ns.ckpt, ns.offload_optimizer == "cpu")


def make_estimate(params: float, method: str, r: int, seq_len: int, batch: int, ckpt: bool, offload: bool):
    from gpuforge.hardware.estimates import Estimate

    if min(r, seq_len, batch) < 1:
        raise UsageError("--r, --seq-len and --batch must be >= 1")
    parts = breakdown(params, method, r, seq_len, batch, ckpt, offload)
    total = sum(parts.values())
    s = shape_for(params)
    notes = [f"assumed shape: d_model {s.d}, {s.layers} layers, FFN {s.ff} (LLaMA-like)",
             "gradient checkpointing on" if ckpt else "gradient checkpointing off"]
    if offload:
        notes.append("optimizer state (fp32 master + Adam moments) offloaded to CPU memory")
    flops = lora_flops(params, method, seq_len, batch, ckpt)
    bytes_moved = parts["weights"] * (3 if ckpt else 2) + 2 * parts["activations"]
    what = f"{method} fine-tuning step of a {params / 1e9:.3g}B-parameter model (r={r}, seq {seq_len}, batch {batch})"
    return Estimate(what=what, memory_bytes=total, flops=flops, bytes_moved=bytes_moved, dtype="bf16",
                    breakdown=parts, notes=notes + advice(params, method, r, seq_len, batch, ckpt, offload))


def advice(params, method, r, seq_len, batch, ckpt, offload) -> list[str]:
    """What would make it fit the largest profiled GPU, when it does not."""
    from gpuforge.hardware.registry import all_profiles

    largest = max(all_profiles().values(), key=lambda p: p.memory_bytes)
    cap = largest.memory_bytes
    if sum(breakdown(params, method, r, seq_len, batch, ckpt, offload).values()) <= cap:
        return []
    tries = [("gradient checkpointing", method, True, offload), ("CPU optimizer offload", method, ckpt, True),
             ("checkpointing + CPU optimizer offload", method, True, True)]
    if method == "full":
        tries += [("LoRA instead of full fine-tuning", "lora", True, False), ("QLoRA (4-bit base)", "qlora", True, False)]
    elif method == "lora":
        tries += [("QLoRA (4-bit base)", "qlora", True, False)]
    for label, m, c, o in tries:
        need = sum(breakdown(params, m, r, seq_len, batch, c, o).values())
        if need <= cap:
            return [f"does not fit one {largest.name} ({largest.memory_gib} GiB); {label} would need "
                    f"{need / GIB:.1f} GiB"]
    weights = breakdown(params, method, r, seq_len, batch, True, True)["weights"]
    return [f"does not fit one {largest.name} ({largest.memory_gib} GiB) even with checkpointing and optimizer "
            f"offload (the {method} weights alone take {weights / GIB:.0f} GiB): shard across "
            f"{math.ceil(weights / (0.8 * cap))}+ GPUs (ZeRO-3/FSDP) or use QLoRA"]
