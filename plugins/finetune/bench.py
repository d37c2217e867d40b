"""Benchmarks of the finetune plugin (``gpuforge bench finetune``).

Ratios against a baseline timed in the same process (DESIGN.md "Benchmarks"), on the
same flat fp32 parameters and gradients (50M parameters; 4M with ``--quick``): torch's
own ``AdamW(fused=True)`` CPU kernel is the anchor; beside it ``foreach=True``, our fused
fp32 step (``--optimizer adamw`` on the CPU, offloaded or not), our fused 8-bit-state step
(``--optimizer adamw-8bit``) and bitsandbytes' ``AdamW8bit`` on the CPU.
"""
from __future__ import annotations

from gpuforge.core.bench import BenchContext, best_of, best_of_interleaved, row


def adamw_vs_torch(n: int, repeat: int = 3, bnb: bool = True) -> dict:
    """Seconds per step of each optimizer on n fp32 parameters, timed in turns (after one
    warm-up step each, so the states exist and numba is compiled)."""
    import numpy as np
    import torch

    from gpuforge.plugins.finetune.adam import _CODES, adamw8bit_step_inplace_cpu, adamw_step_inplace_cpu

    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(n, dtype=np.float32)
    g = rng.standard_normal(n, dtype=np.float32)
    gt = torch.from_numpy(g)   # one gradient buffer for every optimizer (none writes it)

    def torch_opt(**kw):
        param = torch.nn.Parameter(torch.from_numpy(p0.copy()))
        param.grad = gt
        return torch.optim.AdamW([param], lr=1e-3, weight_decay=0.01, **kw)

    p, m, v = p0.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
    p8 = p0.copy()
    mq = np.full(n, np.flatnonzero(_CODES[True] == 0)[0], np.uint8)
    vq = np.full(n, np.flatnonzero(_CODES[False] == 0)[0], np.uint8)
    ma, va = np.zeros(-(-n // 256), np.float32), np.zeros(-(-n // 256), np.float32)
    steps = {"fp32": 0, "8bit": 0}

    def ours():
        steps["fp32"] += 1
        adamw_step_inplace_cpu(p, g, m, v, steps["fp32"], 1e-3, 0.9, 0.999, 1e-8, 0.01)

    def ours8():
        steps["8bit"] += 1
        adamw8bit_step_inplace_cpu(p8, g, mq, ma, vq, va, steps["8bit"], 1e-3, 0.9, 0.999, 1e-8, 0.01)

    fused, foreach = torch_opt(fused=True), torch_opt(foreach=True)
    t = best_of_interleaved({"torch_fused_s": fused.step, "torch_foreach_s": foreach.step, "fused_s": ours,
                             "fused8_s": ours8}, repeat=repeat)
    del fused, foreach
    out = {"n": n, **t, "ratio": t["torch_fused_s"] / t["fused_s"], "ratio8": t["torch_fused_s"] / t["fused8_s"]}
    if bnb:
        try:
            from gpuforge.core.hub import import_bitsandbytes

            bnb_mod = import_bitsandbytes()
            param = torch.nn.Parameter(torch.from_numpy(p0.copy()))
            param.grad = gt
            opt = bnb_mod.optim.AdamW8bit([param], lr=1e-3, weight_decay=0.01, min_8bit_size=0)
            # ~150 ns per parameter on CPU: one timed step after the warm-up
            out["bnb8_s"] = best_of(opt.step, repeat=1, warmup=1)
        except ImportError:
            pass
    return out


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
    r = adamw_vs_torch(n, repeat=ctx.repeat if ctx.quick else 5, bnb=not ctx.quick)
    fused = "torch.optim.AdamW(fused=True)"
    name = f"adamw_step n={n}"
    # Bytes of one pass: fp32 reads p, g, m, v and writes p, m, v; 8-bit states read and
    # write one byte per moment instead of four.
    rows = [row(name, fused, r["torch_fused_s"], bytes_moved=28 * n, ctx=ctx),
            row(name, "torch.optim.AdamW(foreach=True)", r["torch_foreach_s"], baseline=fused,
                baseline_seconds=r["torch_fused_s"], bytes_moved=28 * n, ctx=ctx),
            row(name, "numba-cpu fused fp32 (finetune.adamw_step; --optimizer adamw)", r["fused_s"],
                baseline=fused, baseline_seconds=r["torch_fused_s"], bytes_moved=28 * n, ctx=ctx),
            row(name, "numba-cpu fused, 8-bit states (--optimizer adamw-8bit)", r["fused8_s"], baseline=fused,
                baseline_seconds=r["torch_fused_s"], bytes_moved=16 * n, ctx=ctx)]
    if "bnb8_s" in r:
        rows.append(row(name, "numba-cpu fused, 8-bit states (--optimizer adamw-8bit)", r["fused8_s"],
                        baseline="bitsandbytes AdamW8bit (CPU)", baseline_seconds=r["bnb8_s"], bytes_moved=16 * n,
                        ctx=ctx))
    nq = 1_000_000 if ctx.quick else 8_000_000
    ours, ref = quant8_roundtrip(nq, repeat=ctx.repeat)
    rows.append(row(f"8-bit state quantize+dequantize n={nq}", "numba-cpu", ours, baseline="numpy reference",
                    baseline_seconds=ref, bytes_moved=(4 + 1 + 1 + 4) * nq, ctx=ctx))
    return rows
