"""``gpuforge bench quantize``: our kernels against what a user would otherwise call, in
one process: bitsandbytes' CPU quantize_4bit / dequantize_4bit, a float32 torch matvec,
and the share of this machine's memory bandwidth measured in the same run."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import numpy as np

from gpuforge.core.bench import BenchContext, best_of, best_of_interleaved, row
from gpuforge.core.kernels import get_impl


@contextmanager
def _matvec_flags(**flags):
    """Force a numba-cpu matvec path (the module switches the tests use)."""
    from gpuforge.plugins.quantize import matvec

    old = {k: getattr(matvec, k) for k in flags}
    for k, v in flags.items():
        setattr(matvec, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(matvec, k, v)


def _forced(fn, **flags):
    def run():
        with _matvec_flags(**flags):
            return fn()
    return run


def run(ctx: BenchContext) -> list[dict]:
    import torch

    from gpuforge.hardware.cpu import measure_bandwidth
    from gpuforge.plugins.quantize import formats, gptq

    side = 1024 if ctx.quick else 4096
    n = side * side
    rng = np.random.default_rng(0)
    w = rng.standard_normal((side, side), dtype=np.float32)
    flat = w.reshape(-1)
    x = rng.standard_normal(side, dtype=np.float32)
    impl = {k: get_impl(f"quantize.{k}", "numba-cpu")
            for k in ("nf4_encode", "nf4_decode", "nf4_matvec", "gptq_dequantize", "gptq_matvec")}
    rep = ctx.repeat
    packed, absmax = impl["nf4_encode"](flat, 64)
    wt, xt = torch.from_numpy(w), torch.from_numpy(x)
    gq = formats.gptq_layer_tensors(gptq.rtn(wt, 4, 128))
    gargs = (gq["qweight"], gq["qzeros"], gq["scales"].astype(np.float32), gq["g_idx"], 4)
    # Bandwidth: STREAM copy/triad measured now, before and after the kernels (the shared
    # machine's load changes by the minute; a cached figure from another hour is not a
    # fair reference). Shares are of the better of the two.
    bw_before = measure_bandwidth(runs=3)
    t = {}
    try:
        from gpuforge.core.hub import import_bitsandbytes

        F = import_bitsandbytes().functional

        t["bnb_q"] = best_of(lambda: F.quantize_4bit(wt, blocksize=64, quant_type="nf4"), repeat=max(2, rep // 2))
        qb, st = F.quantize_4bit(wt, blocksize=64, quant_type="nf4")
        t["bnb_d"] = best_of(lambda: F.dequantize_4bit(qb, st), repeat=rep)
        base_q, base_d = "bitsandbytes quantize_4bit (CPU)", "bitsandbytes dequantize_4bit (CPU)"
    except ImportError:
        ref_e, ref_d = get_impl("quantize.nf4_encode", "reference"), get_impl("quantize.nf4_decode", "reference")
        t["bnb_q"] = best_of(lambda: ref_e(flat, 64), repeat=1)
        t["bnb_d"] = best_of(lambda: ref_d(packed, absmax, n, 64), repeat=2)
        base_q, base_d = "reference (numpy)", "reference (numpy)"
    t["q"] = best_of(lambda: impl["nf4_encode"](flat, 64), repeat=rep)
    t["d"] = best_of(lambda: impl["nf4_decode"](packed, absmax, n, 64), repeat=rep)
    # Decoding into a fresh 64 MiB array also pays its first-touch page faults (the rows
    # against bitsandbytes keep that cost: both sides pay it); the bandwidth rows decode
    # into a reused output, as STREAM writes into arrays it has touched.
    workspace = np.empty(n, np.float32)
    t["d_ws"] = best_of(lambda: impl["nf4_decode"](packed, absmax, n, 64, out=workspace), repeat=rep)
    t["gd"] = best_of(lambda: impl["gptq_dequantize"](*gargs), repeat=rep)
    t["gd_ws"] = best_of(lambda: impl["gptq_dequantize"](*gargs, out=workspace.reshape(side, side)), repeat=rep)
    # W4A16 decode path: y = W x, one token. torch's fp32 mv and every matvec kernel in
    # turns, so that each ratio compares times taken at the same moments.
    from gpuforge.plugins.quantize import matvec, simd

    path = matvec.nf4_matvec_path(side, 64)
    nf4_mv = lambda: impl["nf4_matvec"](packed, absmax, x, side, 64)   # noqa: E731
    mv = {"torch_mv": lambda: torch.mv(wt, xt), "nf4_mv": nf4_mv, "gptq_mv": lambda: impl["gptq_matvec"](*gargs, x)}
    # on AVX-512 CPUs also the AVX2 byte shuffles that CPUs without AVX-512 take (the
    # 16-byte build NEON runs is only tested here: SSSE3 on an x86 core says nothing
    # about an Arm one)
    others = {}
    if path == "avx512" and simd.BYTES_ISA:
        others[simd.BYTES_ISA] = {"USE_AVX512": False}
    for isa, flags in others.items():
        mv[f"nf4_mv_{isa}"] = _forced(nf4_mv, **flags)
    t.update(best_of_interleaved(mv, repeat=3 * rep))
    pack = get_impl("kernels.pack_int32", "numba-cpu")
    q = gptq.rtn(wt, 4, 128).q.numpy().T.copy()
    t["pack"] = best_of(lambda: pack(q, 4), repeat=rep)
    # LLM.int8(): vector-wise quantize of a batch of activations
    xa = rng.standard_normal((64, side), dtype=np.float32)
    vq_ref, vq = get_impl("quantize.int8_vectorwise_quant", "reference"), get_impl("quantize.int8_vectorwise_quant", "numba-cpu")
    t["vq_ref"] = best_of(lambda: vq_ref(xa, 6.0), repeat=max(2, rep // 2))
    t["vq"] = best_of(lambda: vq(xa, 6.0), repeat=rep)
    bw_after = measure_bandwidth(runs=3)

    peak = max(bw_before["copy_gbs"], bw_before["triad_gbs"], bw_after["copy_gbs"], bw_after["triad_gbs"])
    ctx = replace(ctx, cpu_peak={**ctx.cpu_peak, "bandwidth_gbs": peak})
    q_bytes = 4 * n + n / 2 + 4 * n / 64           # read fp32, write codes + absmax
    d_bytes = n / 2 + 4 * n / 64 + 4 * n           # read codes + absmax, write fp32
    g_bytes = n / 2 + 4 * n + 8 * n / 128          # read qweight + scales/zeros, write fp32
    mib = bw_before["array_mib"]
    rows = [
        row(f"memory bandwidth (best STREAM copy/triad of {mib} MiB arrays, before and after)",
            bw_before["bandwidth_method"], 2 * 8 * mib * 2**20 / (peak * 1e9), bytes_moved=2 * 8 * mib * 2**20,
            ctx=ctx, before=bw_before, after=bw_after),
        row(f"NF4 quantize {side}x{side} bs64", base_q, t["bnb_q"], bytes_moved=q_bytes, ctx=ctx),
        row(f"NF4 quantize {side}x{side} bs64", "numba-cpu", t["q"], baseline=base_q, baseline_seconds=t["bnb_q"],
            bytes_moved=q_bytes, ctx=ctx),
        row(f"NF4 dequantize {side}x{side} bs64", base_d, t["bnb_d"], bytes_moved=d_bytes, ctx=ctx),
        row(f"NF4 dequantize {side}x{side} bs64", "numba-cpu", t["d"], baseline=base_d, baseline_seconds=t["bnb_d"],
            bytes_moved=d_bytes, ctx=ctx),
        row(f"NF4 dequantize {side}x{side} bs64, reused output", "numba-cpu", t["d_ws"], bytes_moved=d_bytes, ctx=ctx),
        row(f"GPTQ 4-bit dequantize {side}x{side} g128", "numba-cpu", t["gd"], bytes_moved=g_bytes, ctx=ctx),
        row(f"GPTQ 4-bit dequantize {side}x{side} g128, reused output", "numba-cpu", t["gd_ws"], bytes_moved=g_bytes,
            ctx=ctx),
        row(f"matvec {side}x{side}", "torch float32 mv", t["torch_mv"], bytes_moved=4 * n, flops=2 * n, ctx=ctx),
        row(f"matvec {side}x{side}", f"numba-cpu NF4 W4A16 (fused, {matvec.PATH_NAMES[path]})",
            t["nf4_mv"], baseline="torch float32 mv",
            baseline_seconds=t["torch_mv"], bytes_moved=n / 2 + 4 * n / 64, flops=2 * n, ctx=ctx, path=path),
        *[row(f"matvec {side}x{side}", f"numba-cpu NF4 W4A16 (fused, {matvec.PATH_NAMES[isa]}, forced)",
              t[f"nf4_mv_{isa}"], baseline="torch float32 mv", baseline_seconds=t["torch_mv"],
              bytes_moved=n / 2 + 4 * n / 64, flops=2 * n, ctx=ctx, path=isa) for isa in others],
        row(f"matvec {side}x{side}", "numba-cpu GPTQ 4-bit g128 W4A16 (fused)", t["gptq_mv"],
            baseline="torch float32 mv", baseline_seconds=t["torch_mv"], bytes_moved=n / 2 + 8 * n / 128,
            flops=2 * n, ctx=ctx, path="gptq4 groups" if matvec.USE_GPTQ4_GROUPS else "gptq words"),
        row(f"GPTQ pack 4-bit {side}x{side}", "numba-cpu", t["pack"], bytes_moved=n + n / 2, ctx=ctx),
        row(f"int8 vector-wise quantize 64x{side}", "reference (numpy)", t["vq_ref"], ctx=ctx),
        row(f"int8 vector-wise quantize 64x{side}", "numba-cpu", t["vq"], baseline="reference (numpy)",
            baseline_seconds=t["vq_ref"], bytes_moved=5 * xa.size, ctx=ctx),
    ]
    return rows
