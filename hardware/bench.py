"""``gpuforge hw bench``: measure this device with our own kernels and compare each
figure with the device's reference peak.

What is measured (every figure is the best of several runs):

- memory bandwidth, STREAM copy and triad (McCalpin): the ``hardware.copy`` and
  ``hardware.triad`` kernels (numba-cpu on the CPU, numba-cuda on a GPU) on float32
  arrays larger than the last-level cache; bytes = read + written (2 and 3 x 4 B per
  element);
- FP32 rate, FMA chains: the ``hardware.fma`` kernel (2 FLOPs per multiply-add; on the
  CPU 64 independent chains per task, data in cache, the marginal rate between two
  chain lengths so the parallel region's start-up cost cancels);
- FP32 matmul through torch (labelled as torch: oneDNN/MKL on the CPU, cuBLAS on a GPU;
  bf16 on a GPU with Tensor Cores);
- on a GPU only: kernel launch latency (an empty kernel: launch-to-completion of one
  launch, and the mean of 2,000 back-to-back launches) and shared-memory bandwidth (a
  conflict-free read loop; the theoretical figure is SMs x 32 banks x 4 B x boost clock).

Reference peaks: on the CPU, the CPU profile (``hardware/cpu.py``: torch copy/triad
and torch matmul, measured once and cached); on a GPU, the profile's datasheet figures.
Results (with the numerics fingerprint) are cached in
``$XDG_CACHE_HOME/gpuforge/hw-bench.json`` keyed by device; ``hw plan-serving`` scales
its roofline by a GPU's measured shares, and the CPU profile shows the last result.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

CACHE_VERSION = 1


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpuforge" / "hw-bench.json"


def read_cache() -> dict:
    try:
        data = json.loads(cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(data: dict) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hw-bench.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs the planner its measured shares


def cpu_key() -> str:
    from gpuforge.hardware.cpu import cpu_model, logical_cores

    return f"cpu:{cpu_model()}|{logical_cores()}"


def cached_cpu_result() -> dict | None:
    entry = read_cache().get(cpu_key())
    return entry if isinstance(entry, dict) and entry.get("version") == CACHE_VERSION else None


def measured_efficiencies() -> dict[str, dict[str, float]]:
    """GPU profile id -> {"bandwidth_efficiency", "compute_efficiency"} from cached GPU runs
    (shares of the datasheet: triad bandwidth, torch bf16 matmul rate)."""
    out: dict[str, dict[str, float]] = {}
    for key, entry in read_cache().items():
        if not (key.startswith("gpu:") and isinstance(entry, dict) and entry.get("version") == CACHE_VERSION):
            continue
        shares = {m["name"]: m.get("share") for m in entry.get("measures", []) if isinstance(m, dict)}
        eff = {}
        if shares.get("triad") and 0 < shares["triad"] <= 1:
            eff["bandwidth_efficiency"] = float(shares["triad"])
        if shares.get("matmul") and 0 < shares["matmul"] <= 1:
            eff["compute_efficiency"] = float(shares["matmul"])
        if eff:
            out[key[4:]] = eff
    return out


def _measure(name, value, unit, peak, peak_label, method) -> dict:
    return {"name": name, "value": value, "unit": unit, "peak": peak, "peak_source": peak_label,
            "share": (value / peak) if peak else None, "method": method}


def _array_elems(quick: bool) -> int:
    from gpuforge.hardware.cpu import _array_bytes

    return (32 * 2**20 if quick else _array_bytes()) // 4


def bench_cpu(quick: bool = False) -> dict:
    import numpy as np
    import numba

    from gpuforge.core.bench import best_of
    from gpuforge.hardware.cpu import cpu_profile
    from gpuforge.hardware.microkernels import CHAINS, _copy_cpu, _fma_cpu, _triad_cpu

    prof = cpu_profile()
    repeat = 3 if quick else 5
    n = _array_elems(quick)
    src = np.full(n, 1.0, np.float32)
    b = np.full(n, 2.0, np.float32)
    dst = np.zeros(n, np.float32)
    _copy_cpu(src[:16], dst[:16])  # compile (or load the numba cache) outside the timing
    copy_s = best_of(lambda: _copy_cpu(src, dst), repeat)
    s = np.float32(3.0)
    _triad_cpu(src[:16], b[:16], s, dst[:16])
    triad_s = best_of(lambda: _triad_cpu(src, b, s, dst), repeat)
    bw_peak = prof.get("memory_bandwidth_gbs")
    mib = round(4 * n / 2**20)
    measures = [
        _measure("copy", 2 * 4 * n / copy_s / 1e9, "GB/s", bw_peak, "CPU profile bandwidth (torch copy/triad)",
                 f"hardware.copy numba-cpu, float32, {mib} MiB per array, {numba.config.NUMBA_NUM_THREADS} threads"),
        _measure("triad", 3 * 4 * n / triad_s / 1e9, "GB/s", bw_peak, "CPU profile bandwidth (torch copy/triad)",
                 f"hardware.triad numba-cpu, float32, {mib} MiB per array"),
    ]
    del src, b, dst
    # Marginal rate between two chain lengths: the parallel region's fixed start-up cost
    # (several ms on a loaded machine) cancels out.
    fn = 1 << 16
    i1, i2 = (1024, 4096) if quick else (2048, 16384)
    x = np.random.default_rng(0).standard_normal(fn).astype(np.float32)
    out = np.empty_like(x)
    a32, c32 = np.float32(0.999), np.float32(0.001)
    _fma_cpu(x[:CHAINS], out[:CHAINS], 1, a32, c32)
    t1 = best_of(lambda: _fma_cpu(x, out, i1, a32, c32), repeat)
    t2 = best_of(lambda: _fma_cpu(x, out, i2, a32, c32), repeat)
    fma_gflops = 2 * fn * (i2 - i1) / (t2 - t1) / 1e9 if t2 > t1 else 2 * fn * i2 / t2 / 1e9
    fl_peak = prof.get("fp32_gflops")
    measures.append(_measure("fma", fma_gflops, "GFLOP/s", fl_peak, "CPU profile FP32 (torch matmul)",
                             f"hardware.fma numba-cpu, {fn} float32 chains, marginal rate between {i1} and {i2} "
                             f"multiply-adds each, {CHAINS} chains per task"))
    try:
        import torch

        mn = 1024 if quick else 2048
        xa, xb = torch.randn(mn, mn), torch.randn(mn, mn)
        mm_s = best_of(lambda: torch.mm(xa, xb), repeat)
        measures.append(_measure("matmul", 2 * mn**3 / mm_s / 1e9, "GFLOP/s", fl_peak, "CPU profile FP32 (torch matmul)",
                                 f"torch.mm {mn}x{mn} float32 (oneDNN/MKL, not our kernel), {torch.get_num_threads()} threads"))
    except ImportError:
        pass
    return {"device": "cpu", "device_name": prof.get("model"), "key": cpu_key(), "profile": {
        "memory_bandwidth_gbs": bw_peak, "fp32_gflops": fl_peak, "logical_cores": prof.get("logical_cores")},
        "measures": measures}


def bench_gpu(index: int = 0, quick: bool = False) -> dict:  # pragma: no cover - needs a GPU
    import numpy as np
    from numba import cuda

    from gpuforge.core.bench import best_of
    from gpuforge.core.errors import UnsupportedError
    from gpuforge.hardware.detect import detect_gpus
    from gpuforge.hardware.microkernels_cuda import (SMEM_WORDS, copy_kernel, fma_kernel, launch_empty,
                                                     smem_read_kernel, triad_kernel)

    det = detect_gpus()
    if det.cpu_only or index >= len(det.gpus):
        raise UnsupportedError(f"no CUDA GPU {index} here ({det.reason or 'not found'}); measure the CPU with `gpuforge --device cpu hw bench`")
    info = det.gpus[index].to_dict()
    from gpuforge.hardware.registry import all_profiles

    prof = all_profiles().get(info.get("profile_id") or "")
    cuda.select_device(index)
    sync = cuda.synchronize
    repeat = 5 if quick else 10
    n = (64 if quick else 256) * 2**20 // 4
    threads, blocks = 256, min((n + 255) // 256, 65535)
    src = cuda.to_device(np.full(n, 1.0, np.float32))
    b = cuda.to_device(np.full(n, 2.0, np.float32))
    dst = cuda.device_array(n, np.float32)
    copy_s = best_of(lambda: copy_kernel[blocks, threads](src, dst), repeat, sync=sync)
    triad_s = best_of(lambda: triad_kernel[blocks, threads](src, b, np.float32(3.0), dst), repeat, sync=sync)
    bw = prof.memory_bandwidth_gbs if prof else None
    label = f"datasheet {prof.id}" if prof else "no profile matched"
    measures = [
        _measure("copy", 2 * 4 * n / copy_s / 1e9, "GB/s", bw, label, f"hardware.copy numba-cuda, float32, {4 * n >> 20} MiB"),
        _measure("triad", 3 * 4 * n / triad_s / 1e9, "GB/s", bw, label, f"hardware.triad numba-cuda, float32, {4 * n >> 20} MiB"),
    ]
    sms = prof.sm_count if prof else info.get("sm_count") or 80
    fn, iters = sms * 2048 * 4, 1024 if quick else 4096
    x = cuda.to_device(np.random.default_rng(0).standard_normal(fn).astype(np.float32))
    y = cuda.device_array(fn, np.float32)
    fb = (fn + 255) // 256
    fma_s = best_of(lambda: fma_kernel[fb, 256](x, y, iters, np.float32(0.999), np.float32(0.001)), repeat, sync=sync)
    measures.append(_measure("fma", 2 * iters * fn / fma_s / 1e9, "GFLOP/s", prof.fp32_tflops * 1e3 if prof else None,
                             label, f"hardware.fma numba-cuda, {fn} chains x {iters} FMAs"))
    launch_empty()
    sync()
    singles = []
    for _ in range(200):
        t0 = time.perf_counter()
        launch_empty()
        sync()
        singles.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for _ in range(2000):
        launch_empty()
    sync()
    back = (time.perf_counter() - t0) / 2000
    measures.append(_measure("launch_latency", sorted(singles)[len(singles) // 2] * 1e6, "us", None, "-",
                             "empty numba-cuda kernel, launch + synchronize, median of 200"))
    measures.append(_measure("launch_throughput", back * 1e6, "us", None, "-",
                             "empty numba-cuda kernel, mean of 2000 back-to-back launches"))
    sblocks, reps = sms * 8, 4096 if quick else 16384
    sout = cuda.device_array(sblocks * 256, np.float32)
    smem_s = best_of(lambda: smem_read_kernel[sblocks, 256](sout, reps), repeat, sync=sync)
    smem_peak = sms * 32 * 4 * prof.boost_clock_mhz * 1e6 / 1e9 if prof else None
    measures.append(_measure("shared_memory", sblocks * 256 * reps * 4 / smem_s / 1e9, "GB/s", smem_peak,
                             "SMs x 32 banks x 4 B x boost clock", f"conflict-free reads of a {SMEM_WORDS * 4 >> 10} KiB "
                             f"shared array, {sblocks} blocks x 256 threads x {reps} reads"))
    try:
        import torch

        if torch.cuda.is_available():
            dt = torch.bfloat16 if (prof is None or prof.supports("bf16")) else torch.float16
            mn = 4096 if quick else 8192
            dev = torch.device("cuda", index)
            xa, xb = torch.randn(mn, mn, device=dev, dtype=dt), torch.randn(mn, mn, device=dev, dtype=dt)
            mm_s = best_of(lambda: torch.mm(xa, xb), repeat, sync=torch.cuda.synchronize)
            key = "bf16" if dt == torch.bfloat16 else "fp16"
            measures.append(_measure("matmul", 2 * mn**3 / mm_s / 1e9, "GFLOP/s",
                                     prof.peak_flops(key) / 1e9 if prof else None, label,
                                     f"torch.mm {mn}x{mn} {key} (cuBLAS, not our kernel)"))
    except ImportError:
        pass
    key = f"gpu:{prof.id}" if prof else f"gpu:{info.get('name')}"
    return {"device": f"cuda:{index}", "device_name": info.get("name"), "key": key,
            "profile": prof.id if prof else None, "measures": measures}


def run_bench(device: str = "auto", quick: bool = False, fingerprint: bool = True) -> dict:
    """Measure the device (``auto``: the first GPU if there is one, else the CPU), cache
    the result with the numerics fingerprint, and return it."""
    from gpuforge.core.errors import UsageError

    t0 = time.perf_counter()
    if device == "auto":
        from gpuforge.hardware.detect import detect_gpus

        device = "cpu" if detect_gpus().cpu_only else "cuda:0"
    if device == "cpu":
        result = bench_cpu(quick)
    elif device.startswith("cuda"):
        result = bench_gpu(int(device.partition(":")[2] or 0), quick)
    else:
        raise UsageError(f"unknown device {device!r}; use auto, cpu or cuda[:N]")
    if fingerprint:
        try:
            from gpuforge.hardware.fingerprint import fingerprint as fp

            result["fingerprint"] = fp(result["device"])
        except ImportError:
            result["fingerprint"] = None
    result.update({"quick": quick, "version": CACHE_VERSION, "seconds": round(time.perf_counter() - t0, 2),
                   "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    cache = read_cache()
    cache[result["key"]] = result
    _write_cache(cache)
    return result


def run_benchmarks(ctx) -> list[dict]:
    """``gpuforge bench hardware``: the hw bench kernels' numba-cpu backends against their
    NumPy references, in the same process (ratio > 1: numba-cpu is faster)."""
    import numpy as np

    from gpuforge.core.bench import best_of, row
    from gpuforge.hardware import microkernels as mk

    n = (16 if ctx.quick else 128) * 2**20 // 4
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    rows = []
    for name, ref, fast, args, nbytes, flops in (
        ("copy", mk.copy, mk.copy_cpu, (x,), 8 * n, None),
        ("triad", mk.triad, mk.triad_cpu, (x, y, 3.0), 12 * n, 2 * n),
        ("fma", mk.fma, mk.fma_cpu, (x[: n // 16], 64, 0.999, 0.001), 8 * (n // 16), 2 * 64 * (n // 16)),
    ):
        base = best_of(lambda: ref(*args), ctx.repeat)
        secs = best_of(lambda: fast(*args), ctx.repeat)
        rows.append(row(f"hardware.{name}", "numba-cpu", secs, baseline="reference (NumPy)", baseline_seconds=base,
                        bytes_moved=nbytes, flops=flops, ctx=ctx, elements=len(args[0])))
    return rows
