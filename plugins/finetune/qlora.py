"""QLoRA's frozen base (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized
LLMs"): NF4 weights (blocks of 64) with double quantization of the block scales
(QLoRA sec. 3): 4 + 8/64 + 32/(64*256) = 4.127 bits per weight, plus one fp32 offset per
tensor. The layers are the quantize plugin's (:mod:`gpuforge.plugins.quantize.api`):
``NF4Linear`` / ``NF4Embedding`` keep the bitsandbytes layout in memory and dequantize per
forward.

Quantized here: every linear weight and the word/position embeddings (the bulk of a
small encoder's parameters; the QLoRA paper keeps embeddings in 16-bit, but for
MiniLM they are half of the base). Biases and LayerNorms stay fp32 and are counted
in the bits-per-parameter figure.
"""
from __future__ import annotations

import torch
from torch import nn

from gpuforge.plugins.quantize.api import NF4Embedding, NF4Linear, load_streamed, require

NF4_BLOCK = 64

__all__ = ["NF4Embedding", "NF4Linear", "dequantize_model", "load_nf4_base", "quantize_model", "require_kernels",
           "storage_report"]


def require_kernels() -> None:
    require("--qlora")


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _eligible(mod: nn.Module) -> bool:
    if isinstance(mod, nn.Linear):
        return mod.weight.numel() % NF4_BLOCK == 0 and mod.in_features % 2 == 0
    return isinstance(mod, nn.Embedding) and mod.embedding_dim % NF4_BLOCK == 0 and mod.num_embeddings > 2


def load_nf4_base(path, causal: bool) -> nn.Module:
    """The frozen NF4 base quantized while it loads: each linear / embedding weight is read
    on its own from the safetensors and stored in NF4 at once, every other parameter read
    as its module fills, so the full-precision model never exists in memory."""
    require_kernels()

    def convert(name, mod, sk):
        if not _eligible(mod):
            return None
        w = sk.read_param(f"{name}.weight")
        if isinstance(mod, nn.Linear):
            bias = sk.read_param(f"{name}.bias") if mod.bias is not None else None
            return NF4Linear.from_weight(w, bias, NF4_BLOCK)
        return NF4Embedding.from_weight(w, mod.padding_idx, NF4_BLOCK)

    model = load_streamed(path, convert, causal=causal)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def quantize_model(model: nn.Module) -> dict:
    """Replace linear layers and embeddings (rows a multiple of 64 wide) by NF4 versions;
    return the storage report (bits per parameter of the whole frozen base)."""
    require_kernels()
    for p in model.parameters():
        p.requires_grad_(False)
    n_quant = 0
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Linear) and _eligible(mod):
            _replace(model, name, NF4Linear.from_linear(mod, NF4_BLOCK))
            n_quant += mod.weight.numel()
        elif isinstance(mod, nn.Embedding) and _eligible(mod):
            _replace(model, name, NF4Embedding.from_embedding(mod, NF4_BLOCK))
            n_quant += mod.weight.numel()
    return storage_report(model)


def storage_report(model: nn.Module) -> dict:
    q_bytes = q_params = 0
    for mod in model.modules():
        if isinstance(mod, (NF4Linear, NF4Embedding)):
            q_bytes += mod.nbytes
            q_params += mod.numel
    from gpuforge.plugins.finetune.lora import LoRALinear

    lora_ids = {id(p) for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_A.weight, m.lora_B.weight)}
    other = [p for p in model.parameters() if id(p) not in lora_ids]
    o_params = sum(p.numel() for p in other)
    o_bytes = sum(p.numel() * p.element_size() for p in other)
    return {
        "quantized_params": q_params, "quantized_bits_per_param": 8 * q_bytes / max(q_params, 1),
        "other_params_fp32": o_params,
        "base_bits_per_param": 8 * (q_bytes + o_bytes) / max(q_params + o_params, 1),
        "base_bytes": q_bytes + o_bytes,
    }


def dequantize_model(model: nn.Module) -> nn.Module:
    for name, mod in list(model.named_modules()):
        if isinstance(mod, NF4Linear):
            _replace(model, name, mod.to_linear())
        elif isinstance(mod, NF4Embedding):
            _replace(model, name, mod.to_embedding())
    return model
