"""The CPU as a device: its model, cores, and measured memory bandwidth and FP32 rate.

No datasheet describes "this VM's share of an EPYC", so the figures are measured once
(a few seconds) and cached in ``$XDG_CACHE_HOME/gpuforge/cpu-profile.json``, keyed by
CPU model and usable core count so a home folder shared between machines keeps one
entry per machine type. Benchmarks report their speed as a share of these figures.
torch/numpy/numba are imported inside functions only.
"""
from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

CACHE_VERSION = 1  # bump when the measurement changes, so old entries are re-measured
MATMUL_N = 2048
_memo: dict[str, dict] = {}


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpuforge" / "cpu-profile.json"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                # x86 says "model name"; some Arm kernels only give "Hardware" or "Processor".
                if key.strip() in ("model name", "Hardware", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


# The vector extensions our kernels or torch's pick paths by (x86 "flags", Arm "Features"
# in /proc/cpuinfo; LLVM's names where /proc/cpuinfo is missing).
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
              "avx512_bf16", "avx_vnni", "amx_tile", "asimd", "asimddp", "asimdhp", "sve", "sve2", "bf16", "i8mm")
_LLVM_NAMES = {"sse4.2": "sse4_2", "avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16", "avxvnni": "avx_vnni",
               "amx-tile": "amx_tile", "neon": "asimd", "dotprod": "asimddp", "fullfp16": "asimdhp"}


def simd_features() -> list[str]:
    """This CPU's SIMD extensions among :data:`SIMD_FLAGS`, in that order."""
    have: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    have = set(value.split())
                    break
    except OSError:
        pass
    if not have:
        try:  # macOS, Windows: ask LLVM (llvmlite ships with numba)
            import llvmlite.binding as llvm

            have = {_LLVM_NAMES.get(k, k) for k, on in llvm.get_host_cpu_features().items() if on}
        except Exception:
            pass
    return [f for f in SIMD_FLAGS if f in have]


def bench_machine() -> dict:
    """What a benchmark row ran on: CPU model, SIMD extensions, usable cores, and the
    1-minute load average when it started (other jobs on a shared machine move timings)."""
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        load = None
    return {"cpu": cpu_model(), "simd": " ".join(simd_features()), "cores": logical_cores(), "load_1m": load}


def logical_cores() -> int:
    """Cores this process may run on (respects taskset and container cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _l3_bytes() -> int:
    """Total last-level cache across the machine, from sysfs (0 when unknown)."""
    total, seen = 0, set()
    for index in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cache/index3"):
        try:
            shared = (index / "shared_cpu_list").read_text().strip()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if shared in seen:
            continue
        seen.add(shared)
        units = {"K": 1024, "M": 1024**2, "G": 1024**3}
        total += int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
    return total


def mem_available_bytes() -> int | None:
    """Bytes the kernel reports as available (MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _array_bytes() -> int:
    # Each array 4x the LLC so caches cannot hold the working set, within 128 MiB..1 GiB
    # and at most 1/8 of free memory (three arrays are live at once).
    size = min(max(4 * _l3_bytes(), 128 * 2**20), 2**30)
    avail = mem_available_bytes()
    if avail:
        size = min(size, avail // 8)
    return max(size, 16 * 2**20)


def _best(fn, runs: int) -> float:
    fn()  # warm-up: page faults, thread pool start
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_bandwidth(runs: int = 5) -> dict:
    """STREAM-style copy and triad, in GB/s (1e9 bytes), counting bytes read + written."""
    n = _array_bytes() // 8
    try:
        import torch  # multithreaded like the numba kernels whose share of peak we report

        a = torch.zeros(n, dtype=torch.float64)
        b = torch.full((n,), 1.0, dtype=torch.float64)
        c = torch.full((n,), 2.0, dtype=torch.float64)
        copy_s = _best(lambda: a.copy_(b), runs)
        triad_s = _best(lambda: torch.add(b, c, alpha=3.0, out=a), runs)
        method, triad_bytes = "torch copy_ / add(alpha) float64", 3 * 8 * n
    except ImportError:
        import numpy as np

        a, b, c = np.zeros(n), np.full(n, 1.0), np.full(n, 2.0)
        copy_s = _best(lambda: np.copyto(a, b), runs)

        def triad():  # numpy needs two passes: a = 3c; a += b (5 streams in all)
            np.multiply(c, 3.0, out=a)
            np.add(a, b, out=a)

        triad_s = _best(triad, runs)
        method, triad_bytes = "numpy copyto / multiply+add float64 (single-threaded)", 5 * 8 * n
    return {
        "copy_gbs": round(2 * 8 * n / copy_s / 1e9, 2),
        "triad_gbs": round(triad_bytes / triad_s / 1e9, 2),
        "array_mib": round(8 * n / 2**20),
        "bandwidth_method": method,
    }


def _measure_flops(runs: int = 3) -> dict:
    n = MATMUL_N
    try:
        import torch

        x = torch.randn(n, n, dtype=torch.float32)
        y = torch.randn(n, n, dtype=torch.float32)
        seconds = _best(lambda: torch.mm(x, y), runs)
        method = f"torch.mm {n}x{n} float32"
    except ImportError:
        import numpy as np

        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, n), dtype=np.float32)
        y = rng.standard_normal((n, n), dtype=np.float32)
        seconds = _best(lambda: x @ y, runs)
        method = f"numpy matmul {n}x{n} float32"
    flops = 2.0 * n**3 / seconds
    return {"fp32_flops": flops, "fp32_gflops": round(flops / 1e9, 1), "flops_method": method}


def _thread_counts() -> dict:
    counts: dict[str, int | None] = {"torch_threads": None, "numba_threads": None}
    try:
        import torch

        counts["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        import numba

        counts["numba_threads"] = int(numba.config.NUMBA_NUM_THREADS)
    except ImportError:
        pass
    return counts


def measure_cpu() -> dict:
    """Measure now (a few seconds); :func:`cpu_profile` caches the result."""
    t0 = time.perf_counter()
    bw = measure_bandwidth()
    fl = _measure_flops()
    profile = {
        "model": cpu_model(),
        "logical_cores": logical_cores(),
        # The better of copy and triad: the most this machine showed it can stream.
        "memory_bandwidth_gbs": max(bw["copy_gbs"], bw["triad_gbs"]),
        **bw,
        **fl,
        "l3_cache_mib": round(_l3_bytes() / 2**20, 1),
        **_thread_counts(),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "measure_seconds": round(time.perf_counter() - t0, 2),
        "version": CACHE_VERSION,
    }
    return profile


def _cache_key() -> str:
    return f"{cpu_model()}|{logical_cores()}"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}  # missing or corrupt: measure again rather than fail


def _write_cache(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".cpu-profile.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file
    except OSError:
        pass  # a read-only cache folder costs a re-measure next run, nothing worse


def cpu_profile(refresh: bool = False) -> dict:
    """This machine's CPU profile, measured on first use and then read from the cache."""
    key, path = _cache_key(), cache_path()
    memo_key = f"{path}|{key}"
    if not refresh and memo_key in _memo:
        return dict(_memo[memo_key])
    cache = _read_cache(path)
    entry = cache.get(key)
    if refresh or not isinstance(entry, dict) or entry.get("version") != CACHE_VERSION:
        entry = measure_cpu()
        cache[key] = entry
        _write_cache(path, cache)
    _memo[memo_key] = entry
    result = dict(entry)
    # What `gpuforge hw bench` measured with our own kernels, when it has run here: the
    # profile keeps its own (torch) figures as the reference, and carries these beside them.
    from gpuforge.hardware.bench import cached_cpu_result

    bench = cached_cpu_result()
    if bench:
        result["hw_bench"] = {m["name"]: {"value": m["value"], "unit": m["unit"], "share": m.get("share")}
                              for m in bench.get("measures", []) if isinstance(m, dict) and "name" in m}
    return result
