"""``gpuforge hw ...``: GPU profiles and detection."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from gpuforge.core.output import print_table
from gpuforge.core.run import Run, command

app = typer.Typer(help="GPU profiles, detection, roofline, planning and device benchmarks.", no_args_is_help=True)


@command(app, "list", device=False)
def list_(run: Run) -> None:
    """Every GPU profile: id, compute capability, memory, bandwidth, dense peak rates."""
    from gpuforge.hardware.registry import all_profiles

    profiles = sorted(all_profiles().values(), key=lambda p: p.id)
    rows = [
        {
            "id": p.id,
            "name": p.name,
            "cc": p.compute_capability,
            "SMs": p.sm_count,
            "memory GiB": p.memory_gib,
            "bandwidth GB/s": p.memory_bandwidth_gbs,
            "FP32 TFLOPS": p.fp32_tflops,
            "BF16 TFLOPS": p.bf16_tensor_tflops or "-",
            "FP8 TFLOPS": p.fp8_tensor_tflops or "-",
            "TDP W": p.tdp_w,
        }
        for p in profiles
    ]
    run.result([p.to_dict() for p in profiles], lambda: print_table(rows, title="GPU profiles (dense tensor rates)"))


@command(app, "show", device=False)
def show(run: Run, gpu_id: str = typer.Argument(..., metavar="ID", help="Profile id (see `gpuforge hw list`).")) -> None:
    """Every figure of one profile, with its source."""
    from gpuforge.hardware.profiles import get_profile
    from gpuforge.hardware.registry import all_profiles

    prof = get_profile(gpu_id, all_profiles())
    data = prof.to_dict()

    def human() -> None:
        sources = data.get("sources", {})
        rows = [{"field": k, "value": v, "source": sources.get(k, "")} for k, v in data.items() if k != "sources"]
        print_table(rows, title=prof.name)

    run.result(data, human)


@command(app, "check", device=False)
def check_cmd(
    run: Run,
    paths: Optional[List[Path]] = typer.Argument(
        None, metavar="[PATH]...", help="Profile files or folders (default: the built-in ones and every loaded plugin's)."),
) -> None:
    """Check GPU profiles against the schema and list every problem.

    Keys and types, plausible ranges, CUDA's limits for the compute capability, the FP32
    rate implied by SMs x clock, a source for every figure, unique ids. Exit 3 when a
    profile has a problem."""
    from gpuforge.core.errors import BadInputError
    from gpuforge.core.plugins import get_registry
    from gpuforge.hardware.profiles import BUILTIN_DIR, check_profiles

    if not paths:
        paths = [BUILTIN_DIR, *(Path(spec.path) for _p, spec in get_registry().profile_dirs)]
    count, problems = check_profiles(paths)
    run.result({"profiles": count, "paths": [str(p) for p in paths], "problems": problems},
               "\n".join(problems) if problems else f"{count} GPU profile(s) pass the schema check")
    if problems:
        run.fail_after(BadInputError(f"{len(problems)} problem(s) in {count} GPU profile(s), listed above"))


@command(app, "detect", device=False)
def detect(run: Run) -> None:
    """Find NVIDIA GPUs through the CUDA driver API and match each to a profile.
    Without a driver this says "CPU only" (exit 0)."""
    from gpuforge.hardware.detect import detect_gpus

    result = detect_gpus()
    data = result.to_dict()
    if result.cpu_only:
        human = f"CPU only: {result.reason}" if not result.reason.lower().startswith("cpu only") else result.reason
    else:
        lines = []
        for g in result.gpus:
            d = g.to_dict()
            lines.append(f"GPU {d['index']}: {d['name']} (cc {d['compute_capability']}, {d.get('sm_count')} SMs) "
                         f"profile: {d.get('profile_id') or 'none matched'}")
        human = "\n".join(lines)
    run.result(data, human)


@command(app, "roofline", device=False)
def roofline_cmd(
    run: Run,
    flops: str = typer.Option(..., "--flops", help="Operations of the work, e.g. 1.1e12 or 2*8192**3."),
    bytes_: str = typer.Option(..., "--bytes", help="Bytes moved to/from device memory, e.g. 4.0e8."),
    dtype: str = typer.Option("bf16", "--dtype", help="fp32|tf32|fp16|bf16|fp8|int8: whose peak rate bounds the compute."),
    gpu: str = typer.Option("all", "--gpu", help="A GPU id, a comma-separated list, or all."),
) -> None:
    """Roofline time, bound and arithmetic intensity of a workload, per GPU.

    time = max(FLOPs / peak, bytes / bandwidth) at the profile's dense datasheet peak. Exit 2 for text that is not a number or an unknown dtype, 3 for a
    negative value or an unknown GPU id."""
    from gpuforge.hardware.profiles import select
    from gpuforge.hardware.registry import all_profiles
    from gpuforge.hardware.roofline import check_dtype, format_seconds, parse_number, roofline

    f = parse_number(flops, "--flops")
    b = parse_number(bytes_, "--bytes")
    dt = check_dtype(dtype)
    results = [roofline(p, f, b, dt) for p in select(gpu, all_profiles())]

    def human() -> None:
        ai = f"{f / b:.4g} FLOP/byte" if b > 0 else "inf (no bytes)"
        print(f"{f:.4g} FLOPs, {b:.4g} bytes, {dt}: arithmetic intensity {ai}")
        print_table([{
            "gpu": r.gpu, "time": format_seconds(r.time_s), "seconds": f"{r.time_s:.4g}", "bound": r.bound,
            "compute s": f"{r.compute_s:.4g}", "memory s": f"{r.memory_s:.4g}",
            "peak TFLOPS": f"{r.peak_flops / 1e12:.4g}", "ridge FLOP/B": f"{r.ridge:.4g}", "note": r.note,
        } for r in results], title="roofline (datasheet peaks: lower bounds)")

    run.result({"flops": f, "bytes": b, "dtype": dt, "gpus": [r.to_dict() for r in results]}, human)


@command(app, "llm", device=False)
def llm_cmd(
    run: Run,
    params: str = typer.Option(..., "--params", help="Parameters, e.g. 34e9."),
    layers: int = typer.Option(..., "--layers", help="Transformer layers."),
    kv_heads: int = typer.Option(..., "--kv-heads", help="Key/value heads (GQA groups)."),
    head_dim: int = typer.Option(..., "--head-dim", help="Dimension of one head."),
    context: int = typer.Option(..., "--context", help="Tokens of context per user (prompt + generated)."),
    batch: int = typer.Option(1, "--batch", help="Concurrent users decoded together."),
    weight_bits: int = typer.Option(16, "--weight-bits", help="16, 8 or 4."),
    kv_bits: int = typer.Option(16, "--kv-bits", help="16, 8, 4, 3 or 2."),
    dtype: str = typer.Option("bf16", "--dtype", help="Compute dtype for the matmuls."),
    gpu: str = typer.Option("all", "--gpu", help="A GPU id, a comma-separated list, or all."),
) -> None:
    """KV cache, prefill and decode times, most concurrent users of an LLM, per GPU.

    Yao Fu's long-context analysis, roofline at datasheet peaks. Exit 3 for a non-positive size or an unknown
    GPU id, 2 for bits outside the listed choices."""
    from gpuforge.hardware.llm import LlmShape, analyze, summary
    from gpuforge.hardware.profiles import select
    from gpuforge.hardware.registry import all_profiles
    from gpuforge.hardware.roofline import format_seconds, parse_number

    shape = LlmShape(params=parse_number(params, "--params", allow_zero=False), layers=layers, kv_heads=kv_heads,
                     head_dim=head_dim, context=context, batch=batch, weight_bits=weight_bits, kv_bits=kv_bits,
                     dtype=dtype.lower())
    results = [analyze(shape, p) for p in select(gpu, all_profiles())]
    info = summary(shape)

    def human() -> None:
        print(f"KV cache {info['kv_bytes_per_token']:.0f} B = {info['kv_mib_per_token']:.3f} MiB per token, "
              f"{info['kv_gib_per_user']:.2f} GiB per user at {context} tokens; weights {info['weights_gib']:.2f} GiB "
              f"({weight_bits}-bit), batch {batch}")
        print_table([{
            "gpu": r.gpu, "fits": "yes" if r.fits else "no", "usable GiB": f"{r.usable_gib:.1f}",
            "KV GiB": f"{r.kv_gib:.2f}", "max users": r.max_users,
            "prefill": format_seconds(r.prefill_s), "decode/token": format_seconds(r.decode_s_per_token),
            "tokens/s": f"{r.decode_tokens_per_s:.4g}", "note": r.note,
        } for r in results], title="long-context serving (roofline at datasheet peaks)")

    run.result({**info, "gpus": [r.to_dict() for r in results]}, human)


@command(app, "plan-serving", device=False)
def plan_serving_cmd(
    run: Run,
    workload: str = typer.Argument(..., metavar="WORKLOAD.toml", help="Buckets, rates, model, GPUs (see hardware/README.md)."),
    slo_ms: float = typer.Option(None, "--slo-ms", help="Mean time-per-output-token SLO in ms (overrides the file's slo_ms)."),
) -> None:
    """Mélange: the cheapest GPU mix that serves a workload within a latency SLO.

    An integer program (scipy milp), compared with the best single GPU type. Exit 3 for a bad
    workload (missing file, unknown GPU id, negative sizes, shares not summing to 1) or
    an SLO no GPU can meet."""
    from gpuforge.hardware.bench import measured_efficiencies
    from gpuforge.hardware.serving import load_workload, plan_serving

    problem, info = load_workload(workload, slo_ms, measured=measured_efficiencies())
    result = {**info, **plan_serving(problem)}

    def human() -> None:
        mix = ", ".join(f"{n} x {g}" for g, n in sorted(result["mix"].items())) or "nothing"
        print(f"workload {info['name']}: {info['rate_rps']:g} requests/s, {len(problem.rates)} buckets, "
              f"SLO {info['slo_ms']:g} ms per output token")
        print(f"cheapest mix: {mix} = ${result['cost_per_hour']:.4g}/hour ({result['status']}, "
              f"solved in {result['solve_seconds']:.3g} s)")
        if result["best_single"]:
            print(f"best single type: {result['best_single']} at ${result['best_single_cost_per_hour']:.4g}/hour; "
                  f"saving {result['saving']:.1%}")
        else:
            print("no single GPU type meets the SLO on every bucket; only a mix can serve this workload")
        rows = []
        for b, bk in enumerate(problem.buckets):
            rows.append({"bucket": b + 1, "in": bk.input_tokens, "out": bk.output_tokens, "share": f"{bk.share:g}",
                         "assigned (slices)": ", ".join(f"{g}:{s}" for g, s in result["assignment"][b].items())})
        print_table(rows, title=f"assignment ({problem.slices} slices per bucket)")
        singles = [{"gpu": g, "$/h each": f"{problem.prices[i]:g}",
                    "alone $/h": "misses SLO" if result["single_type_cost_per_hour"][g] is None
                    else f"{result['single_type_cost_per_hour'][g]:.4g}",
                    "throughput from": info["throughput_source"][g]} for i, g in enumerate(problem.gpus)]
        print_table(singles, title="GPU types")

    run.result(result, human)


@command(app, "bench")
def bench_cmd(
    run: Run,
    quick: bool = typer.Option(False, "--quick", help="Smaller arrays, fewer repeats (seconds, less exact)."),
    no_fingerprint: bool = typer.Option(False, "--no-fingerprint", help="Skip the numerics fingerprint."),
) -> None:
    """Measure this device's bandwidth and FLOP/s with our own kernels.

    Memory bandwidth (copy, triad), FP32
    rate (FMA chains; torch matmul labelled as such), on a GPU also launch latency and
    shared-memory bandwidth; each as a share of the CPU profile (CPU) or the datasheet
    (GPU). The device follows --device (auto: the first GPU, else the CPU). The result is
    cached (with the numerics fingerprint) for the planner."""
    from gpuforge.hardware.bench import cache_path, run_bench

    dev = run.device
    if dev.kind == "cuda-sim":
        from gpuforge.core.errors import UnsupportedError

        raise UnsupportedError("hw bench measures real hardware, and Numba's simulator is not a GPU: unset "
                               "NUMBA_ENABLE_CUDASIM, or measure the CPU with `gpuforge --device cpu hw bench`")
    result = run_bench("cpu" if dev.kind == "cpu" else f"cuda:{dev.index}", quick=quick,
                       fingerprint=not no_fingerprint)

    def human() -> None:
        print(f"{result['device']}: {result['device_name']} (measured in {result['seconds']} s)")
        print_table([{
            "measure": m["name"], "value": f"{m['value']:.4g} {m['unit']}",
            "peak": "-" if m["peak"] is None else f"{m['peak']:.4g}",
            "share": "-" if m["share"] is None else f"{m['share']:.0%}",
            "against": m["peak_source"], "method": m["method"],
        } for m in result["measures"]], title="hw bench")
        if result.get("fingerprint"):
            print(f"numerics fingerprint: {result['fingerprint']['short']} (torch {result['fingerprint']['torch']})")
        print(f"cached in {cache_path()}")

    run.result(result, human)


@command(app, "fingerprint")
def fingerprint_cmd(run: Run) -> None:
    """A numerics fingerprint of this hardware/software stack.

    SHA-256 of the bit patterns of a fixed suite of fp32/fp16/bf16 matrix products and
    reductions through torch on seeded inputs: tells hardware/software stacks apart."""
    from gpuforge.core.errors import UnsupportedError

    try:
        from gpuforge.hardware.fingerprint import fingerprint
    except ImportError as exc:  # pragma: no cover
        raise UnsupportedError(f"the fingerprint needs torch ({exc}); install torch") from None
    dev = run.device  # torch stays on the CPU under the simulator: fingerprint what runs
    result = fingerprint(f"cuda:{dev.index}" if dev.kind == "cuda" else "cpu")
    run.result(result, f"{result['sha256']}  ({result['device_name']}, torch {result['torch']}, "
                       f"{result['torch_threads']} threads, suite v{result['suite_version']})")
