"""Long-context LLM serving on one GPU: KV cache, prefill, decode, concurrency.

Follows Yao Fu, "Challenges in Deploying Long-Context Transformers: A Theoretical Peak
Performance Analysis" (arXiv:2405.08944, 2024):

- KV cache bytes per token = 2 (K and V) x layers x kv_heads x head_dim x kv_bits / 8.
  Yi-34B (60 layers, 8 KV heads, head dim 128, bf16): 245,760 B = 0.234 MiB per token,
  22.9 GiB for 100,000 tokens (the paper rounds to "0.23 MB", "22.8 GB").
- Prefill is compute-bound: 2 x params x tokens FLOPs at the peak tensor rate.
- Decode is memory-bound: every step reads the weights once plus each user's KV cache.
- Concurrency is memory-bound: (usable memory - weights) / KV cache per user.

Every time is the roofline (max of the compute and the memory time) at datasheet
peaks, so a lower bound. Not modelled: the attention score FLOPs (quadratic in the
context; they add 4 x layers x context x q_heads x head_dim per token), activations,
paged-KV block waste, tensor parallelism across GPUs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.hardware.planner import GIB, usable_memory_bytes
from gpuforge.hardware.profiles import GpuProfile
from gpuforge.hardware.roofline import check_dtype, roofline

WEIGHT_BITS = (16, 8, 4)
KV_BITS = (16, 8, 4, 3, 2)


@dataclass(frozen=True)
class LlmShape:
    params: float
    layers: int
    kv_heads: int
    head_dim: int
    context: int
    batch: int = 1
    weight_bits: int = 16
    kv_bits: int = 16
    dtype: str = "bf16"
    """Compute dtype (weights in 8/4 bits are dequantized to it for the matmuls)."""

    def __post_init__(self):
        for name in ("params", "layers", "kv_heads", "head_dim", "context", "batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise BadInputError(f"--{name.replace('_', '-')} must be a positive number, got {v!r}")
            if name != "params" and int(v) != v:
                raise BadInputError(f"--{name.replace('_', '-')} must be a whole number, got {v!r}")
        if self.weight_bits not in WEIGHT_BITS:
            raise UsageError(f"--weight-bits must be one of {', '.join(map(str, WEIGHT_BITS))}, got {self.weight_bits}")
        if self.kv_bits not in KV_BITS:
            raise UsageError(f"--kv-bits must be one of {', '.join(map(str, KV_BITS))}, got {self.kv_bits}")
        check_dtype(self.dtype)

    @property
    def kv_bytes_per_token(self) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.kv_bits / 8

    @property
    def kv_bytes_per_user(self) -> float:
        return self.kv_bytes_per_token * self.context

    @property
    def weight_bytes(self) -> float:
        return self.params * self.weight_bits / 8


@dataclass
class LlmGpuResult:
    gpu: str
    name: str
    usable_gib: float
    weights_gib: float
    kv_gib: float
    """KV cache of the whole batch at full context."""
    fits: bool
    max_users: int
    """Concurrent users at full context that fit next to the weights."""
    prefill_s: float
    prefill_bound: str
    decode_s_per_token: float
    """One decode step for the whole batch at full context (each user gets one token)."""
    decode_bound: str
    decode_tokens_per_s: float
    """batch / step time: tokens per second across the batch."""
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def analyze(shape: LlmShape, profile: GpuProfile) -> LlmGpuResult:
    usable = usable_memory_bytes(profile)
    weights = shape.weight_bytes
    kv_batch = shape.batch * shape.kv_bytes_per_user
    free = usable - weights
    max_users = max(0, math.floor(free / shape.kv_bytes_per_user)) if free > 0 else 0
    # Prefill: every prompt token through every weight (2 FLOPs per weight); reads the
    # weights once and writes the batch's KV cache.
    pre = roofline(profile, 2 * shape.params * shape.context * shape.batch, weights + kv_batch, shape.dtype)
    # Decode at full context: one token per user; reads the weights and the whole KV cache.
    dec = roofline(profile, 2 * shape.params * shape.batch, weights + kv_batch, shape.dtype)
    notes = [n for n in (pre.note,) if n]
    if weights > usable:
        notes.append("the weights alone do not fit")
    elif weights + kv_batch > usable:
        notes.append(f"batch {shape.batch} at {shape.context} tokens does not fit; at most {max_users} users")
    return LlmGpuResult(
        gpu=profile.id, name=profile.name, usable_gib=usable / GIB, weights_gib=weights / GIB,
        kv_gib=kv_batch / GIB, fits=weights + kv_batch <= usable, max_users=max_users,
        prefill_s=pre.time_s, prefill_bound=pre.bound, decode_s_per_token=dec.time_s,
        decode_bound=dec.bound, decode_tokens_per_s=shape.batch / dec.time_s, note="; ".join(notes),
    )


def summary(shape: LlmShape) -> dict:
    return {
        **asdict(shape),
        "kv_bytes_per_token": shape.kv_bytes_per_token,
        "kv_mib_per_token": shape.kv_bytes_per_token / 2**20,
        "kv_gib_per_user": shape.kv_bytes_per_user / GIB,
        "weights_gib": shape.weight_bytes / GIB,
    }
