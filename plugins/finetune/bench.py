"""Benchmarks of the finetune plugin (``gpuforge bench finetune``).

Ratios against a baseline timed in the same process (DESIGN.md "Benchmarks"):
the fused numba-cpu AdamW step against ``torch.optim.AdamW(foreach=True)`` on the
same flat fp32 parameter buffer (50M parameters; 4M with ``--quick``).
"""
from __future__ import annotations

from gpuforge.core.bench import BenchContext, best_of, row


def adamw_vs_torch(n: int, repeat: int = 3) -> dict:
    """Seconds per step of torch.optim.AdamW(foreach=True) and of our fused kernel on n
    fp32 parameters (after one warm-up step each, so the states exist and numba is compiled)."""
    import numpy as np
    import torch

    from gpuforge.plugins.finetune.adam import adamw_step_inplace_cpu

    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    param = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    param.grad = torch.from_numpy(g.copy())
    opt = torch.optim.AdamW([param], lr=1e-3, weight_decay=0.01, foreach=True)
    t_torch = best_of(opt.step, repeat=repeat, warmup=1)

    p, m, v = p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
    state = {"step": 0}

    def ours():
        state["step"] += 1
        adamw_step_inplace_cpu(p, g, m, v, state["step"], 1e-3, 0.9, 0.999, 1e-8, 0.01)

    t_ours = best_of(ours, repeat=repeat, warmup=1)
    return {"n": n, "torch_foreach_s": t_torch, "fused_s": t_ours, "ratio": t_torch / t_ours}


def quant8_roundtrip(n: int, repeat: int = 3) -> tuple[float, float]:
    import numpy as np

    from gpuforge.plugins.finetune.adam import (dequantize_blockwise_8bit, dequantize_blockwise_8bit_cpu,
                                                quantize_blockwise_8bit, quantize_blockwise_8bit_cpu)

    x = np.random.default_rng(1).standard_normal(n, dtype=np.float32)
    ours = best_of(lambda: dequantize_blockwise_8bit_cpu(*quantize_blockwise_8bit_cpu(x)), repeat=repeat)
    ref = best_of(lambda: dequantize_blockwise_8bit(*quantize_blockwise_8bit(x)), repeat=1)
    return ours, ref


def run_adamw(ctx: BenchContext) -> list[dict]:
    n = 4_000_000 if ctx.quick else 50_000_000
    r = adamw_vs_torch(n, repeat=ctx.repeat if ctx.quick else 3)
    # Bytes of one fused pass: read p, g, m, v; write p, m, v (fp32).
    rows = [row(f"adamw_step n={n}", "numba-cpu fused", r["fused_s"], baseline="torch.optim.AdamW(foreach=True)",
                baseline_seconds=r["torch_foreach_s"], bytes_moved=7 * 4 * n, ctx=ctx)]
    nq = 1_000_000 if ctx.quick else 8_000_000
    ours, ref = quant8_roundtrip(nq, repeat=ctx.repeat)
    rows.append(row(f"8-bit state quantize+dequantize n={nq}", "numba-cpu", ours, baseline="numpy reference",
                    baseline_seconds=ref, bytes_moved=(4 + 1 + 1 + 4) * nq, ctx=ctx))
    return rows
