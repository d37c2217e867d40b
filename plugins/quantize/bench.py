"""``gpuforge bench quantize``: our kernels against what a user would otherwise call, in
one process: bitsandbytes' CPU quantize_4bit / dequantize_4bit, a float32 torch matvec,
and the share of this machine's measured memory bandwidth."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from gpuforge.core.bench import BenchContext, best_of, row
from gpuforge.core.kernels import get_impl


def run(ctx: BenchContext) -> list[dict]:
    import torch

    side = 1024 if ctx.quick else 4096
    n = side * side
    rng = np.random.default_rng(0)
    w = rng.standard_normal((side, side), dtype=np.float32)
    flat = w.reshape(-1)
    enc, dec = get_impl("quantize.nf4_encode", "numba-cpu"), get_impl("quantize.nf4_decode", "numba-cpu")
    mv = get_impl("quantize.nf4_matvec", "numba-cpu")
    rep = ctx.repeat
    rows = []
    packed, absmax = enc(flat, 64)
    wt = torch.from_numpy(w)
    try:
        import bitsandbytes.functional as F

        t_bnb_q = best_of(lambda: F.quantize_4bit(wt, blocksize=64, quant_type="nf4"), repeat=max(2, rep // 2))
        qb, st = F.quantize_4bit(wt, blocksize=64, quant_type="nf4")
        t_bnb_d = best_of(lambda: F.dequantize_4bit(qb, st), repeat=rep)
        base_q, base_d = "bitsandbytes quantize_4bit (CPU)", "bitsandbytes dequantize_4bit (CPU)"
    except ImportError:
        ref_e, ref_d = get_impl("quantize.nf4_encode", "reference"), get_impl("quantize.nf4_decode", "reference")
        t_bnb_q = best_of(lambda: ref_e(flat, 64), repeat=1)
        t_bnb_d = best_of(lambda: ref_d(packed, absmax, n, 64), repeat=2)
        base_q, base_d = "reference (numpy)", "reference (numpy)"
    t_q = best_of(lambda: enc(flat, 64), repeat=rep)
    t_d = best_of(lambda: dec(packed, absmax, n, 64), repeat=rep)
    # Share of bandwidth: the machine's copy/triad bandwidth measured in this run, right
    # beside the kernels (the shared machine's load changes by the minute), against
    # decodes into a reused output, as STREAM writes into arrays it already touched.
    # Decoding into a fresh 64 MiB array also pays its first-touch page faults (the rows
    # against bitsandbytes above keep that cost, as both sides pay it).
    from gpuforge.hardware.cpu import measure_bandwidth

    workspace = np.empty(n, np.float32)
    bw = measure_bandwidth(runs=3)
    t_d_ws = best_of(lambda: dec(packed, absmax, n, 64, out=workspace), repeat=rep)
    q_bytes = 4 * n + n / 2 + 4 * n / 64           # read fp32, write codes + absmax
    d_bytes = n / 2 + 4 * n / 64 + 4 * n           # read codes + absmax, write fp32
    rows.append(row(f"NF4 quantize {side}x{side} bs64", base_q, t_bnb_q, bytes_moved=q_bytes, ctx=ctx))
    rows.append(row(f"NF4 quantize {side}x{side} bs64", "numba-cpu", t_q, baseline=base_q, baseline_seconds=t_bnb_q,
                    bytes_moved=q_bytes, ctx=ctx))
    rows.append(row(f"NF4 dequantize {side}x{side} bs64", base_d, t_bnb_d, bytes_moved=d_bytes, ctx=ctx))
    rows.append(row(f"NF4 dequantize {side}x{side} bs64", "numba-cpu", t_d, baseline=base_d, baseline_seconds=t_bnb_d,
                    bytes_moved=d_bytes, ctx=ctx))
    # W4A16 decode path: y = W x, one token
    x = rng.standard_normal(side, dtype=np.float32)
    xt = torch.from_numpy(x)
    t_torch = best_of(lambda: torch.mv(wt, xt), repeat=rep)
    t_mv = best_of(lambda: mv(packed, absmax, x, side, 64), repeat=rep)
    rows.append(row(f"matvec {side}x{side}", "torch float32 mv", t_torch, bytes_moved=4 * n, flops=2 * n, ctx=ctx))
    rows.append(row(f"matvec {side}x{side}", "numba-cpu NF4 W4A16 (fused)", t_mv, baseline="torch float32 mv",
                    baseline_seconds=t_torch, bytes_moved=n / 2 + 4 * n / 64, flops=2 * n, ctx=ctx))
    # GPTQ: dequantize + pack
    from gpuforge.plugins.quantize import formats, gptq

    gq = gptq.rtn(wt, 4, 128)
    t = formats.gptq_layer_tensors(gq)
    deq = get_impl("quantize.gptq_dequantize", "numba-cpu")
    scales = t["scales"].astype(np.float32)
    t_gd = best_of(lambda: deq(t["qweight"], t["qzeros"], scales, t["g_idx"], 4), repeat=rep)
    g_bytes = n / 2 + 4 * n + 8 * n / 128
    rows.append(row(f"GPTQ 4-bit dequantize {side}x{side} g128", "numba-cpu", t_gd, bytes_moved=g_bytes, ctx=ctx))
    gws = workspace.reshape(side, side)
    t_gd_ws = best_of(lambda: deq(t["qweight"], t["qzeros"], scales, t["g_idx"], 4, out=gws), repeat=rep)
    bw2 = measure_bandwidth(runs=3)
    peak = max(bw["copy_gbs"], bw["triad_gbs"], bw2["copy_gbs"], bw2["triad_gbs"])
    in_run = replace(ctx, cpu_peak={**ctx.cpu_peak, "bandwidth_gbs": peak})
    rows.append(row(f"memory bandwidth in this run (best STREAM copy/triad, {bw['array_mib']} MiB arrays)", bw["bandwidth_method"],
                    2 * 8 * bw["array_mib"] * 2**20 / (peak * 1e9), bytes_moved=2 * 8 * bw["array_mib"] * 2**20,
                    ctx=in_run, measured_gbs=peak))
    rows.append(row(f"NF4 dequantize {side}x{side} bs64, reused output", "numba-cpu", t_d_ws, bytes_moved=d_bytes,
                    ctx=in_run))
    rows.append(row(f"GPTQ 4-bit dequantize {side}x{side} g128, reused output", "numba-cpu", t_gd_ws,
                    bytes_moved=g_bytes, ctx=in_run))
    gmv = get_impl("quantize.gptq_matvec", "numba-cpu")
    t_gmv = best_of(lambda: gmv(t["qweight"], t["qzeros"], scales, t["g_idx"], 4, x), repeat=rep)
    rows.append(row(f"matvec {side}x{side}", "numba-cpu GPTQ W4A16 (fused)", t_gmv, baseline="torch float32 mv",
                    baseline_seconds=t_torch, bytes_moved=n / 2, flops=2 * n, ctx=ctx))
    pack = get_impl("kernels.pack_int32", "numba-cpu")
    q = gq.q.numpy().T.copy()
    t_pack = best_of(lambda: pack(q, 4), repeat=rep)
    rows.append(row(f"GPTQ pack 4-bit {side}x{side}", "numba-cpu", t_pack, bytes_moved=n + n / 2, ctx=ctx))
    # LLM.int8(): vector-wise quantize of a batch of activations
    xa = rng.standard_normal((64, side), dtype=np.float32)
    vq_ref, vq = get_impl("quantize.int8_vectorwise_quant", "reference"), get_impl("quantize.int8_vectorwise_quant", "numba-cpu")
    t_vr = best_of(lambda: vq_ref(xa, 6.0), repeat=max(2, rep // 2))
    t_v = best_of(lambda: vq(xa, 6.0), repeat=rep)
    rows.append(row(f"int8 vector-wise quantize 64x{side}", "reference (numpy)", t_vr, ctx=ctx))
    rows.append(row(f"int8 vector-wise quantize 64x{side}", "numba-cpu", t_v, baseline="reference (numpy)",
                    baseline_seconds=t_vr, bytes_moved=5 * xa.size, ctx=ctx))
    return rows
