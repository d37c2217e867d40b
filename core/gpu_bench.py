"""GPU benchmarks of the hot CUDA kernels, for ``make gpu-check``: achieved bandwidth or
FLOP rate as a share of the GPU profile's peak, and ratios against what a user would
otherwise run on the same GPU in the same process (torch CUDA ops, bitsandbytes' CUDA
kernels when its wheel travelled).

    python -P -m gpuforge.core.gpu_bench --out rows.json [--only NAME,...] [--simulate]

Memory-bound kernels report ``gbs`` and ``pct_hbm_peak`` (the profile's datasheet
bandwidth) and ``pct_copy`` (a device-to-device copy measured first, bytes read plus
written); compute-bound ones report ``gflops`` and ``pct_fp32_peak``. ``ratio`` is
baseline time / our time (> 1: ours is faster). Bytes count each input read once and
each output written once (the fewest a kernel can move); FLOP counts are stated per
benchmark. Times are CUDA-event medians after warm-up, on inputs larger than L2.

Each benchmark runs in a ``try``: a failure becomes a row with ``error`` and the next one
runs. Rows are rewritten to ``--out`` after every benchmark, so a time limit keeps what
finished. ``--simulate`` (under ``NUMBA_ENABLE_CUDASIM=1``) runs every benchmark on tiny
host inputs without torch CUDA: it checks the plumbing, its times mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gpuforge.core.lazy import resolve


class Env:
    """Where the benchmarks run: a CUDA GPU through torch tensors, or the simulator."""

    def __init__(self, simulate: bool):
        self.simulate = simulate
        self.profile = None
        self.copy_gbs: float | None = None
        if not simulate:
            import torch

            self.torch = torch
            self.dev = torch.device("cuda")
            from gpuforge.hardware.profiles import load_profiles, match_device_name

            self.gpu_name = torch.cuda.get_device_name(0)
            self.profile = match_device_name(self.gpu_name, load_profiles())
        else:
            self.torch = None
            self.gpu_name = "simulator"

    def size(self, gpu: int, sim: int) -> int:
        return sim if self.simulate else gpu

    def put(self, a: np.ndarray):
        """Host array -> what the CUDA wrappers take here (a CUDA tensor, or the array)."""
        return a if self.simulate else self.torch.from_numpy(np.ascontiguousarray(a)).to(self.dev)

    def time(self, fn: Callable[[], Any], reps: int = 20, warmup: int = 3) -> float:
        """Median seconds of ``fn()`` (CUDA events around each call)."""
        if self.simulate:
            fn()
            t0 = time.perf_counter()
            fn()
            return time.perf_counter() - t0
        torch = self.torch
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return float(np.median(times))

    def row(self, name: str, impl: str, seconds: float, *, bytes_moved: float | None = None,
            flops: float | None = None, baseline: str | None = None, baseline_seconds: float | None = None,
            **extra: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"name": name, "impl": impl, "seconds": seconds}
        if bytes_moved is not None and seconds > 0:
            out["gbs"] = bytes_moved / seconds / 1e9
            if self.profile is not None:
                out["pct_hbm_peak"] = 100 * out["gbs"] / self.profile.memory_bandwidth_gbs
            if self.copy_gbs:
                out["pct_copy"] = 100 * out["gbs"] / self.copy_gbs
        if flops is not None and seconds > 0:
            out["gflops"] = flops / seconds / 1e9
            if self.profile is not None:
                out["pct_fp32_peak"] = 100 * out["gflops"] / (self.profile.fp32_tflops * 1e3)
        if baseline is not None and baseline_seconds:
            out.update(baseline=baseline, baseline_seconds=baseline_seconds, ratio=baseline_seconds / seconds)
        if self.simulate:
            out["simulated"] = True
        out.update(extra)
        return out


def _cuda(target: str) -> Callable:
    """A kernel's numba-cuda backend, by registered name."""
    from gpuforge.core.kernels import get_spec

    return resolve(get_spec(target).backends["numba-cuda"])


def _bnb():
    """bitsandbytes' functional module when it imports with CUDA here, else None."""
    try:
        import bitsandbytes
        import bitsandbytes.functional as F
    except Exception:
        return None, None
    return bitsandbytes, F


def _baseline(env: Env, rows: list, name: str, impl: str, ours: float, fn: Callable[[], Any], **kw) -> None:
    """Time a baseline and add its row; a failing baseline becomes an error row."""
    if env.simulate:
        return
    try:
        t = env.time(fn)
        rows.append(env.row(name, impl, t, **kw))
        rows[-1]["ours_vs_this"] = t / ours
    except Exception as exc:  # a baseline library may lack a CUDA path on this machine
        rows.append({"name": name, "impl": impl, "error": f"{type(exc).__name__}: {exc}"[:500]})


# ----------------------------------------------------------------------------- benchmarks
def bench_copy(env: Env) -> list[dict]:
    """The measured ceiling: a device-to-device copy (bytes read + written)."""
    if env.simulate:
        return []
    torch = env.torch
    n = 1 << 28  # 1 GiB of float32
    a = torch.empty(n, dtype=torch.float32, device=env.dev).uniform_()
    b = torch.empty_like(a)
    t = env.time(lambda: b.copy_(a))
    env.copy_gbs = 2 * 4 * n / t / 1e9
    return [env.row("copy_ceiling", "torch copy_", t, bytes_moved=8 * n)]


def _nf4_inputs(env: Env, n: int):
    rng = np.random.default_rng(0)
    w = env.put(rng.standard_normal(n, dtype=np.float32))
    packed, absmax = _cuda("quantize.nf4_encode")(w, 64)
    return w, packed, absmax


def bench_nf4_decode(env: Env) -> list[dict]:
    """NF4 dequantize, fp32 out: n/2 + n/64*4 bytes read, 4n written."""
    n = env.size(1 << 26, 1024)
    w, packed, absmax = _nf4_inputs(env, n)
    decode = _cuda("quantize.nf4_decode")
    t = env.time(lambda: decode(packed, absmax, n, 64))
    nbytes = n / 2 + n / 64 * 4 + 4 * n
    rows = [env.row("nf4_decode", "gpuforge numba-cuda", t, bytes_moved=nbytes, n=n)]
    bnb, F = _bnb()
    if bnb is not None and not env.simulate:
        q, state = F.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=False)
        _baseline(env, rows, "nf4_decode", "bitsandbytes dequantize_4bit (fp32)", t,
                  lambda: F.dequantize_4bit(q, state), bytes_moved=nbytes)
    return rows


def bench_nf4_matvec(env: Env) -> list[dict]:
    """W4A16-style matvec y = W x, W (out x in) NF4 in blocks of 64: n/2 + n/16 bytes of
    weights, x and y in float32; the fp16 baselines read 2 bytes per weight."""
    out_f, in_f = env.size(16384, 32), env.size(4096, 64)
    n = out_f * in_f
    w, packed, absmax = _nf4_inputs(env, n)
    rng = np.random.default_rng(1)
    x = env.put(rng.standard_normal(in_f, dtype=np.float32))
    mv = _cuda("quantize.nf4_matvec")
    t = env.time(lambda: mv(packed, absmax, x, out_f, 64))
    nbytes = n / 2 + n / 64 * 4 + 4 * (in_f + out_f)
    rows = [env.row("w4a16_matvec", "gpuforge nf4_matvec numba-cuda", t, bytes_moved=nbytes, shape=[out_f, in_f])]
    if env.simulate:
        return rows
    torch = env.torch
    w16, x16 = w.view(out_f, in_f).half(), x.half()
    _baseline(env, rows, "w4a16_matvec", "torch fp16 mv (dense weights)", t, lambda: torch.mv(w16, x16),
              bytes_moved=2 * n + 2 * (in_f + out_f))
    decode = _cuda("quantize.nf4_decode")
    _baseline(env, rows, "w4a16_matvec", "gpuforge nf4_decode then torch fp32 mv", t,
              lambda: torch.mv(decode(packed, absmax, n, 64).view(out_f, in_f), x), bytes_moved=nbytes)
    bnb, F = _bnb()
    if bnb is not None:
        q, state = F.quantize_4bit(w16.view(out_f, in_f), blocksize=64, quant_type="nf4", compress_statistics=False)
        a = x16.view(1, in_f)
        _baseline(env, rows, "w4a16_matvec", "bitsandbytes matmul_4bit (gemv_4bit, fp16)", t,
                  lambda: bnb.matmul_4bit(a, q.t(), quant_state=state), bytes_moved=nbytes)
    return rows


def bench_w4a16_matmul(env: Env) -> list[dict]:
    """A 16-token batch: dequantize NF4 to fp16 once, then cuBLAS, against dense fp16 mm."""
    if env.simulate:
        return []
    torch = env.torch
    out_f, in_f, batch = 16384, 4096, 16
    n = out_f * in_f
    w, packed, absmax = _nf4_inputs(env, n)
    a = torch.randn(batch, in_f, device=env.dev, dtype=torch.float16)
    decode = _cuda("quantize.nf4_decode")
    t = env.time(lambda: a @ decode(packed, absmax, n, 64).view(out_f, in_f).half().t())
    flops = 2 * batch * n
    rows = [env.row("w4a16_matmul_b16", "gpuforge nf4_decode then torch fp16 mm", t, flops=flops)]
    w16 = w.view(out_f, in_f).half()
    _baseline(env, rows, "w4a16_matmul_b16", "torch fp16 mm (dense weights)", t, lambda: a @ w16.t(), flops=flops)
    bnb, F = _bnb()
    if bnb is not None:
        q, state = F.quantize_4bit(w16, blocksize=64, quant_type="nf4", compress_statistics=False)
        _baseline(env, rows, "w4a16_matmul_b16", "bitsandbytes matmul_4bit (fp16)", t,
                  lambda: bnb.matmul_4bit(a, q.t(), quant_state=state), flops=flops)
    return rows


def bench_gptq_matvec(env: Env) -> list[dict]:
    """GPTQ 4-bit matvec (group 128): in*out/2 bytes of codes, scales and zeros per group."""
    in_f, out_f, bits, group = env.size(4096, 128), env.size(16384, 32), 4, 128
    rng = np.random.default_rng(2)
    groups = -(-in_f // group)
    qweight = env.put(rng.integers(-2**31, 2**31 - 1, (in_f * bits // 32, out_f), dtype=np.int64).astype(np.int32))
    qzeros = env.put(rng.integers(-2**31, 2**31 - 1, (groups, out_f * bits // 32), dtype=np.int64).astype(np.int32))
    scales = env.put(rng.uniform(0.001, 0.01, (groups, out_f)).astype(np.float32))
    g_idx = env.put((np.arange(in_f) // group).astype(np.int32))
    x = env.put(rng.standard_normal(in_f, dtype=np.float32))
    mv = _cuda("quantize.gptq_matvec")
    t = env.time(lambda: mv(qweight, qzeros, scales, g_idx, bits, x))
    nbytes = in_f * out_f * bits / 8 + groups * out_f * (4 + bits / 8) + 4 * in_f + 4 * (in_f + out_f)
    rows = [env.row("gptq_matvec", "gpuforge numba-cuda", t, bytes_moved=nbytes, shape=[in_f, out_f])]
    if env.simulate:
        return rows
    torch = env.torch
    w16 = torch.randn(out_f, in_f, device=env.dev, dtype=torch.float16)
    x16 = x.half()
    _baseline(env, rows, "gptq_matvec", "torch fp16 mv (dense weights)", t, lambda: torch.mv(w16, x16),
              bytes_moved=2 * in_f * out_f)
    deq = _cuda("quantize.gptq_dequantize")
    _baseline(env, rows, "gptq_matvec", "gpuforge gptq_dequantize then torch fp32 mv", t,
              lambda: x @ deq(qweight, qzeros, scales, g_idx, bits), bytes_moved=nbytes)
    return rows


def bench_int8_matmul(env: Env) -> list[dict]:
    """LLM.int8()'s int8 x int8 -> int32 product on CUDA cores (Numba has no tensor-core
    path), against cuBLAS fp16 and int8 tensor cores: 2*m*n*k ops."""
    m = n = k = env.size(4096, 16)
    rng = np.random.default_rng(3)
    a = env.put(rng.integers(-127, 128, (m, k), dtype=np.int8))
    b = env.put(rng.integers(-127, 128, (k, n), dtype=np.int8))
    mm = _cuda("quantize.int8_matmul")
    t = env.time(lambda: mm(a, b), reps=5, warmup=1)
    rows = [env.row("int8_matmul", "gpuforge numba-cuda", t, flops=2 * m * n * k, shape=[m, n, k])]
    if env.simulate:
        return rows
    torch = env.torch
    a16, b16 = a.half(), b.half()
    _baseline(env, rows, "int8_matmul", "torch fp16 mm", t, lambda: a16 @ b16, flops=2 * m * n * k)
    if hasattr(torch, "_int_mm"):
        _baseline(env, rows, "int8_matmul", "torch._int_mm (int8 tensor cores)", t, lambda: torch._int_mm(a, b),
                  flops=2 * m * n * k)
    return rows


def bench_adamw(env: Env) -> list[dict]:
    """One fused AdamW step, fp32 state: reads p, g, m, v and writes p, m, v (28 B/param)."""
    n = env.size(1 << 26, 1024)
    rng = np.random.default_rng(4)
    p, g = env.put(rng.standard_normal(n, dtype=np.float32)), env.put(rng.standard_normal(n, dtype=np.float32))
    m, v = env.put(np.zeros(n, np.float32)), env.put(np.zeros(n, np.float32))
    if env.simulate:  # host arrays: the copying wrapper
        t = env.time(lambda: _cuda("finetune.adamw_step")(p, g, m, v, 1, 1e-3))
    else:             # what training calls: in place on the device buffers
        from gpuforge.plugins.finetune.adam_cuda import adamw_step_inplace_cuda

        t = env.time(lambda: adamw_step_inplace_cuda(p, g, m, v, 1, 1e-3))
    rows = [env.row("adamw_step", "gpuforge numba-cuda", t, bytes_moved=28 * n, n=n)]
    if env.simulate:
        return rows
    torch = env.torch
    param = torch.nn.Parameter(p.clone())
    param.grad = g.clone()
    opt = torch.optim.AdamW([param], lr=1e-3, weight_decay=0.01, fused=True)
    _baseline(env, rows, "adamw_step", "torch.optim.AdamW(fused=True)", t, opt.step, bytes_moved=28 * n)
    bnb, _ = _bnb()
    if bnb is not None:
        p8 = torch.nn.Parameter(p.clone())
        p8.grad = g.clone()
        opt8 = bnb.optim.AdamW8bit([p8], lr=1e-3, weight_decay=0.01)
        # 8-bit state: p and g in fp32 (16 B) + m, v as codes (4 B) per param, roughly.
        _baseline(env, rows, "adamw_step", "bitsandbytes AdamW8bit", t, opt8.step, bytes_moved=20 * n)
    return rows


# Arithmetic per walked (pixel, Gaussian) entry of 3DGS's blend (rasterize.blend_pixel):
# offset 2, conic quadratic 9, exp + opacity 2, clamp/test 2, transmittance 2, colour 6.
RASTER_FLOPS_PER_ENTRY = 23


def bench_rasterize(env: Env) -> list[dict]:
    """3DGS tile rasterizer, forward and backward: FP32 rate from the entries each pixel
    walked (the forward pass's n_contrib) x 23 FLOP (backward: counted the same, lower bound)."""
    from gpuforge.plugins.radiance.kernel_cases import camera, random_gaussians

    n, w, h = env.size(200_000, 30), env.size(1024, 16), env.size(1024, 16)
    means, scales, quats, colors, opac = random_gaussians(n, 0)
    view, K = camera(w, h)
    project, bin_tiles = _cuda("radiance.gs_project"), _cuda("radiance.gs_bin_tiles")
    fwd, bwd = _cuda("radiance.gs_rasterize_fwd"), _cuda("radiance.gs_rasterize_bwd")
    m2d, con, depth, radii = project(env.put(means), env.put(scales), env.put(quats), view, K, w, h)
    ranges, ids = bin_tiles(m2d, radii, depth, w, h)
    bg = np.array([1.0, 1.0, 1.0], np.float32)
    args = (m2d, con, env.put(colors), env.put(opac), ranges, ids, w, h, bg)
    image, final_T, n_contrib = fwd(*args)
    entries = float(n_contrib.sum())
    t = env.time(lambda: fwd(*args), reps=10)
    rows = [env.row("gs_rasterize_fwd", "gpuforge numba-cuda", t, flops=entries * RASTER_FLOPS_PER_ENTRY,
                    gaussians=n, image=[w, h], entries=entries, ids=int(ids.shape[0]))]
    grad = env.put(np.random.default_rng(5).standard_normal((h, w, 3)).astype(np.float32))
    tb = env.time(lambda: bwd(*args, final_T, n_contrib, grad), reps=10)
    rows.append(env.row("gs_rasterize_bwd", "gpuforge numba-cuda", tb, flops=entries * RASTER_FLOPS_PER_ENTRY,
                        gaussians=n, image=[w, h]))
    return rows


# Per point and level: position 9 (scale, offset, floor, fraction), 8 trilinear weights
# 16, 8 corners x F=2 features fma 32; the hash itself is integer work, not counted.
HASH_FLOPS_PER_POINT_LEVEL = 57


def bench_hash_encode(env: Env) -> list[dict]:
    """Instant-NGP hash encoding, 16 levels x 2^19 entries x 2 features (64 MiB table):
    FP32 rate (57 FLOP per point-level) and gathered bytes (8 corners x 2 x 4 B per
    point-level, from L2 or HBM), against the plain torch reference on the same GPU."""
    from gpuforge.plugins.radiance.hashgrid import hash_encode_torch, level_params, per_level_scale_for

    n = env.size(1 << 20, 32)
    levels, log2_t, feats = 16, env.size(19, 10), 2
    scales, res = level_params(levels, 16, per_level_scale_for(levels, 16, 2048))
    rng = np.random.default_rng(6)
    x = env.put(rng.uniform(0, 1, (n, 3)).astype(np.float32))
    table = env.put(rng.uniform(-1e-4, 1e-4, (levels, 1 << log2_t, feats)).astype(np.float32))
    enc, enc_bwd = _cuda("radiance.hash_encode"), _cuda("radiance.hash_encode_bwd")
    t = env.time(lambda: enc(x, table, scales, res), reps=10)
    gathered = n * levels * (8 * feats * 4) + n * 12 + n * levels * feats * 4
    rows = [env.row("hash_encode", "gpuforge numba-cuda", t, flops=n * levels * HASH_FLOPS_PER_POINT_LEVEL,
                    bytes_moved=gathered, points=n, levels=levels, table=1 << log2_t)]
    grad = env.put(rng.standard_normal((n, levels * feats)).astype(np.float32))
    tb = env.time(lambda: enc_bwd(x, grad, scales, res, 1 << log2_t), reps=10)
    rows.append(env.row("hash_encode_bwd", "gpuforge numba-cuda", tb, flops=n * levels * HASH_FLOPS_PER_POINT_LEVEL,
                        bytes_moved=gathered, points=n))
    if not env.simulate:
        torch = env.torch

        def reference():
            with torch.no_grad():
                return hash_encode_torch(x, table, scales, res)

        _baseline(env, rows, "hash_encode", "plain torch reference (hash_encode_torch)", t, reference,
                  flops=n * levels * HASH_FLOPS_PER_POINT_LEVEL)
    return rows


def bench_shuffle(env: Env) -> list[dict]:
    """ESPCN's output stage, fused: (9, 360, 640) luma sub-pixels + full-size CbCr -> 1080p
    uint8 RGB, against torch's pixel_shuffle alone and the whole stage in torch ops."""
    from gpuforge.plugins.superres.kernels import CB_B, CB_G, CR_G, CR_R

    r, h, w = 3, env.size(360, 8), env.size(640, 8)
    rng = np.random.default_rng(7)
    feats = env.put(rng.uniform(0, 1, (r * r, h, w)).astype(np.float32))
    cbcr = env.put(rng.uniform(0, 1, (h * r, w * r, 2)).astype(np.float32))
    shuffle = _cuda("superres.shuffle_ycbcr_rgb")
    t = env.time(lambda: shuffle(feats, cbcr))
    hr = h * r * w * r
    nbytes = 4 * r * r * h * w + 8 * hr + 3 * hr
    rows = [env.row("shuffle_ycbcr_rgb", "gpuforge numba-cuda (fused)", t, bytes_moved=nbytes, image=[w * r, h * r])]
    if env.simulate:
        return rows
    torch = env.torch
    _baseline(env, rows, "shuffle_ycbcr_rgb", "torch pixel_shuffle alone", t,
              lambda: torch.nn.functional.pixel_shuffle(feats[None], r), bytes_moved=8 * r * r * h * w)

    def torch_stage():
        y = torch.nn.functional.pixel_shuffle(feats[None], r)[0, 0].clamp(0, 1)
        cb, cr = cbcr[..., 0] - 0.5, cbcr[..., 1] - 0.5
        rgb = torch.stack([y + CR_R * cr, y - CB_G * cb - CR_G * cr, y + CB_B * cb], dim=-1)
        return torch.floor(rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8)

    _baseline(env, rows, "shuffle_ycbcr_rgb", "torch pixel_shuffle + colour + uint8 (unfused)", t, torch_stage,
              bytes_moved=nbytes)
    return rows


BENCHES: dict[str, Callable[[Env], list[dict]]] = {
    "copy": bench_copy, "nf4_decode": bench_nf4_decode, "nf4_matvec": bench_nf4_matvec,
    "w4a16_matmul": bench_w4a16_matmul, "gptq_matvec": bench_gptq_matvec, "adamw": bench_adamw,
    "rasterize": bench_rasterize, "hash_encode": bench_hash_encode, "shuffle": bench_shuffle,
    "int8_matmul": bench_int8_matmul,
}
"""In the order they run: the measured copy ceiling first, the slowest (int8) last."""


def _write(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    os.replace(tmp, path)


def run(out: Path, only: list[str] | None = None, simulate: bool = False) -> dict:
    env = Env(simulate)
    doc: dict[str, Any] = {"gpu": env.gpu_name, "profile": env.profile.id if env.profile else None,
                           "simulated": simulate, "rows": [], "errors": []}
    if env.profile is not None:
        doc["peaks"] = {"hbm_gbs": env.profile.memory_bandwidth_gbs, "fp32_tflops": env.profile.fp32_tflops}
    for name, fn in BENCHES.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        try:
            rows = fn(env)
            for r in rows:
                r.setdefault("bench", name)
            doc["rows"] += rows
        except Exception as exc:
            doc["errors"].append({"bench": name, "error": f"{type(exc).__name__}: {exc}"[:1000],
                                  "traceback": traceback.format_exc()[-3000:]})
        doc.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 2)
        if env.copy_gbs:
            doc["copy_gbs"] = env.copy_gbs
        _write(out, doc)
        sys.stderr.write(f"[gpu-bench] {name}: {doc['seconds'][name]} s\n")
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpuforge.core.gpu_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file, rewritten after each benchmark")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHES)}")
    parser.add_argument("--simulate", action="store_true", help="tiny inputs in Numba's simulator (plumbing only)")
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s] or None
    unknown = set(only or ()) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(BENCHES)}")
    if args.simulate and os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
        parser.error("--simulate needs NUMBA_ENABLE_CUDASIM=1 set before Python starts")
    doc = run(Path(args.out), only, args.simulate)
    return 1 if doc["errors"] or any("error" in r for r in doc["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
