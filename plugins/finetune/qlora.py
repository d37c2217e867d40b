"""QLoRA's frozen base (Dettmers et al. 2023, "QLoRA: Efficient Finetuning of Quantized
LLMs"): NF4 weights (blocks of 64) with double quantization of the block scales.

The NF4 encode/decode kernels belong to the quantization plugin and are reached only
through the kernel registry (``quantize.nf4_encode`` / ``quantize.nf4_decode``).
Double quantization (QLoRA sec. 3) stores the fp32 absmax of every 64-weight block as
8-bit codes with the dynamic map, after subtracting their mean, in blocks of 256
(our ``finetune.quantize_blockwise_8bit``): 4 + 8/64 + 32/(64*256) = 4.127 bits per
weight, plus one fp32 offset per tensor.

Quantized here: every linear weight and the word/position embeddings (the bulk of a
small encoder's parameters; the QLoRA paper keeps embeddings in 16-bit, but for
MiniLM they are half of the base). Biases and LayerNorms stay fp32 and are counted
in the bits-per-parameter figure.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gpuforge.core.errors import UnsupportedError

NF4_BLOCK = 64
DQ_BLOCK = 256
NEEDED = ("quantize.nf4_encode", "quantize.nf4_decode")


def require_kernels() -> None:
    from gpuforge.core.kernels import kernel_specs

    have = kernel_specs()
    missing = [k for k in NEEDED if k not in have]
    if missing:
        raise UnsupportedError(f"--qlora needs the quantize plugin's {', '.join(missing)} kernel(s), which are not "
                               f"registered; enable the quantize plugin (`gpuforge plugins list`)")


class NF4Tensor:
    """A flat float tensor in NF4 with double-quantized scales."""

    def __init__(self, x: torch.Tensor):
        from gpuforge.core.kernels import call

        flat = x.detach().float().cpu().reshape(-1).numpy()
        self.shape, self.n = tuple(x.shape), flat.size
        packed, absmax = call("quantize.nf4_encode", np.ascontiguousarray(flat), NF4_BLOCK)
        self.packed = np.asarray(packed)
        absmax = np.asarray(absmax, np.float32)
        self.offset = np.float32(absmax.mean()) if absmax.size else np.float32(0)
        self.codes, self.scale2 = call("finetune.quantize_blockwise_8bit", absmax - self.offset, DQ_BLOCK, True)
        self.nblocks = absmax.size

    def absmax(self) -> np.ndarray:
        from gpuforge.core.kernels import call

        return call("finetune.dequantize_blockwise_8bit", self.codes, self.scale2, DQ_BLOCK, True) + self.offset

    def dequantize(self) -> torch.Tensor:
        from gpuforge.core.kernels import call

        out = call("quantize.nf4_decode", self.packed, self.absmax(), self.n, NF4_BLOCK)
        return torch.from_numpy(np.asarray(out, np.float32)).reshape(self.shape)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Dequantize only the rows ``ids`` of a 2-D tensor whose row length is a multiple
        of 64 (both nibbles of a byte then belong to one row)."""
        from gpuforge.core.kernels import call

        d = self.shape[1]
        flat_ids = ids.reshape(-1).cpu().numpy()
        packed = self.packed.reshape(self.shape[0], d // 2)[flat_ids].reshape(-1)
        absmax = self.absmax().reshape(self.shape[0], d // NF4_BLOCK)[flat_ids].reshape(-1)
        out = call("quantize.nf4_decode", np.ascontiguousarray(packed), np.ascontiguousarray(absmax),
                   flat_ids.size * d, NF4_BLOCK)
        return torch.as_tensor(np.asarray(out, np.float32)).reshape(*ids.shape, d).to(ids.device)

    @property
    def nbytes(self) -> int:
        return self.packed.nbytes + self.codes.nbytes + self.scale2.nbytes + 4


class NF4Linear(nn.Module):
    """A frozen linear layer whose weight is stored in NF4 and dequantized per forward."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.qweight = NF4Tensor(linear.weight)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.qweight.dequantize().to(x.device, x.dtype), self.bias)

    def to_linear(self) -> nn.Linear:
        lin = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(self.qweight.dequantize())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin


class NF4Embedding(nn.Module):
    def __init__(self, emb: nn.Embedding):
        super().__init__()
        self.num_embeddings, self.embedding_dim = emb.num_embeddings, emb.embedding_dim
        self.padding_idx = emb.padding_idx
        self.qweight = NF4Tensor(emb.weight)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.qweight.rows(ids)

    @property
    def weight(self) -> torch.Tensor:  # transformers reads .weight (e.g. for dtype/device)
        return self.qweight.dequantize()

    def to_embedding(self) -> nn.Embedding:
        emb = nn.Embedding(self.num_embeddings, self.embedding_dim, padding_idx=self.padding_idx)
        with torch.no_grad():
            emb.weight.copy_(self.qweight.dequantize())
        return emb


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def quantize_model(model: nn.Module) -> dict:
    """Replace linear layers and embeddings (rows a multiple of 64 wide) by NF4 versions;
    return the storage report (bits per parameter of the whole frozen base)."""
    require_kernels()
    for p in model.parameters():
        p.requires_grad_(False)
    n_quant = 0
    for name, mod in list(model.named_modules()):
        if isinstance(mod, nn.Linear) and mod.weight.numel() % NF4_BLOCK == 0 and mod.in_features % 2 == 0:
            _replace(model, name, NF4Linear(mod))
            n_quant += mod.weight.numel()
        elif isinstance(mod, nn.Embedding) and mod.embedding_dim % NF4_BLOCK == 0 and mod.num_embeddings > 2:
            _replace(model, name, NF4Embedding(mod))
            n_quant += mod.weight.numel()
    return storage_report(model)


def storage_report(model: nn.Module) -> dict:
    q_bytes = q_params = 0
    for mod in model.modules():
        if isinstance(mod, (NF4Linear, NF4Embedding)):
            q_bytes += mod.qweight.nbytes
            q_params += mod.qweight.n
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
