"""What a plugin's resource estimate returns, for ``gpuforge plan PLUGIN VERB ...``.

A plugin registers ``EstimateSpec(plugin, verb, run="module:estimate")``;
``estimate(args: list[str]) -> Estimate`` parses the same arguments its command
takes and describes the work without running it. The planner turns that into,
per GPU profile: fits or not, roofline time, cost.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Estimate:
    what: str
    """One line: the work being estimated."""
    memory_bytes: float
    """Peak device memory the work needs."""
    flops: float = 0.0
    """Floating-point (or integer tensor) operations of the whole work."""
    bytes_moved: float = 0.0
    """Bytes read and written from device memory over the whole work."""
    dtype: str = "bf16"
    """The dtype whose peak rate bounds the compute: fp32|tf32|fp16|bf16|fp8|int8."""
    breakdown: dict[str, float] = field(default_factory=dict)
    """Memory by part (weights, gradients, optimizer, activations, ...), in bytes."""
    notes: list[str] = field(default_factory=list)
    """Advice: what would make it fit (offload, checkpointing, 4-bit base, ...)."""

    def to_dict(self) -> dict:
        return asdict(self)
