"""``gpuforge bench kernels``: the shared primitives, numba-cpu against the NumPy
reference in the same process, with the share of this machine's measured bandwidth."""
from __future__ import annotations

import numpy as np

from gpuforge.core.bench import BenchContext, best_of, row
from gpuforge.core.kernels import get_impl


def _pair(ctx: BenchContext, label: str, kernel: str, args: tuple, bytes_moved: float | None, repeat: int,
          flops: float | None = None) -> list[dict]:
    """Memory-bound kernels report bandwidth (bytes read + written), compute-bound ones FLOP/s."""
    ref, cpu = get_impl(kernel, "reference"), get_impl(kernel, "numba-cpu")
    t_ref = best_of(lambda: ref(*args), repeat=max(1, repeat // 2))
    t_cpu = best_of(lambda: cpu(*args), repeat=repeat)
    return [
        row(label, "reference (numpy)", t_ref, bytes_moved=bytes_moved, flops=flops, ctx=ctx),
        row(label, "numba-cpu", t_cpu, baseline="reference (numpy)", baseline_seconds=t_ref, bytes_moved=bytes_moved,
            flops=flops, ctx=ctx),
    ]


def run(ctx: BenchContext) -> list[dict]:
    rng = np.random.default_rng(0)
    n = (1 << 20) if ctx.quick else (1 << 24)
    x = rng.standard_normal(n, dtype=np.float32)
    rows = []
    rows += _pair(ctx, f"blockwise_absmax {n} fp32, block 64", "kernels.blockwise_absmax", (x, 64), x.nbytes + 4 * n / 64, ctx.repeat)
    rows += _pair(ctx, f"blockwise int8 quantize {n}, block 64", "kernels.blockwise_quantize_absmax_int8", (x, 64),
                  x.nbytes + n + 4 * n / 64, ctx.repeat)
    vals = rng.integers(0, 16, size=n, dtype=np.uint8)
    rows += _pair(ctx, f"pack_bits 4-bit {n}", "kernels.pack_bits", (vals, 4), n + n / 2, ctx.repeat)
    side = 1024 if ctx.quick else 4096
    q = rng.integers(0, 16, size=(side, side), dtype=np.uint8)
    rows += _pair(ctx, f"GPTQ pack_int32 4-bit {side}x{side}", "kernels.pack_int32", (q, 4), q.nbytes + q.size / 2, ctx.repeat)
    m = 2000 if ctx.quick else 20000
    pts = rng.standard_normal((m, 16), dtype=np.float32)
    # m*m distances of 16 dims: a subtract, a multiply and an add per dimension.
    rows += _pair(ctx, f"pairwise_topk {m}x16, k=16", "kernels.pairwise_topk", (pts, pts, 16), None,
                  1 if not ctx.quick else 2, flops=3.0 * m * m * 16)
    return rows
