"""``quantize advise`` and the ``plan quantize run`` estimate: which format for a model
size on a GPU, from the hardware profiles' roofline.

Formats (weights / activations) and what the profiles say about them:
- BF16 (W16A16): 2 bytes per weight, bf16 tensor rate.
- W8A8-FP8: 1 byte per weight, fp8 tensor rate; ONLY on profiles with ``fp8 = true``.
- W8A8-INT8 (SmoothQuant / LLM.int8()-style): 1 byte per weight, int8 tensor rate.
- W4A16 (GPTQ / NF4): 0.5 byte per weight (+ group scales), bf16 tensor rate after
  dequantization in the kernel.
Rule from "Give Me BF16 or Give Me Death" (Kurtic et al. 2024): W4A16 is the most
cost-efficient for synchronous, latency-bound serving (memory-bound decode: time ~
bytes of weights / bandwidth), W8A8 (FP8 where the hardware has it, else INT8) for
asynchronous, throughput-bound serving (compute-bound large batches); W8A8-FP8 is close
to lossless, INT8 and W4A16 are slightly lossier.
"""
from __future__ import annotations

import argparse
import re

from gpuforge.core.errors import UsageError

FORMATS = [
    # name, bytes per weight (incl. scales), tensor dtype for compute, needs
    ("BF16", 2.0, "bf16", None),
    ("W8A8-FP8", 1.0 + 4 / 4096, "fp8", "fp8"),
    ("W8A8-INT8", 1.0 + 4 / 4096, "int8", None),
    ("W4A16", 0.5 + 2 * 2 / 128, "bf16", None),
]


def parse_params(text: str | float | int) -> float:
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmbt]?)\s*", str(text).lower())
    if not m:
        raise UsageError(f"--params {text!r}: write a count such as 7e9, 7B, 1.5B or 125M")
    mult = {"": 1, "k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}[m.group(2)]
    n = float(m.group(1)) * mult
    if n <= 0:
        raise UsageError("--params must be positive")
    return n


def _kv_bytes_per_token(params: float) -> float:
    """Rough KV-cache bytes per token in bf16 for a dense decoder of this size
    (hidden ~ sqrt(params / (12 * layers)), layers ~ params^0.25 scaled as LLaMA-like)."""
    layers = max(12, round(32 * (params / 7e9) ** 0.25))
    hidden = (params / (12 * layers)) ** 0.5
    return 2 * layers * hidden * 2


def advise(params: str, gpu: str, batch: str = "sync", context: int = 4096) -> dict:
    from gpuforge.hardware.profiles import get_profile
    from gpuforge.hardware.registry import all_profiles

    if batch not in ("sync", "async"):
        raise UsageError(f"--batch {batch!r}: choose sync (latency) or async (throughput)")
    n = parse_params(params)
    prof = get_profile(gpu, all_profiles())
    mem = prof.memory_gib * 2**30
    bw = prof.memory_bandwidth_gbs * 1e9
    tokens = 1 if batch == "sync" else 64
    kv = _kv_bytes_per_token(n) * context * tokens
    rows = []
    for name, bpw, dtype, need in FORMATS:
        if need == "fp8" and not prof.fp8:
            continue
        rate = {"bf16": prof.bf16_tensor_tflops, "fp8": prof.fp8_tensor_tflops,
                "int8": prof.int8_tensor_tops}[dtype] * 1e12
        if not rate:
            continue
        weights = n * bpw
        fits = weights + kv <= 0.9 * mem
        # one decode step for `tokens` sequences: read all weights once, 2 flops per weight per token
        t = max(weights / bw, 2 * n * tokens / rate)
        rows.append({"format": name, "weights_gib": round(weights / 2**30, 2), "kv_gib": round(kv / 2**30, 2),
                     "fits": fits, "step_ms": round(t * 1e3, 3), "tokens_per_s": round(tokens / t, 1),
                     "bound": "memory" if weights / bw >= 2 * n * tokens / rate else "compute"})
    by_format = methods_by_format()
    for r in rows:
        r["methods"] = ", ".join(by_format.get(r["format"], [])) or "-"
    fitting = [r for r in rows if r["fits"]]
    if not fitting:
        advice, why = "none", (f"even W4A16 needs more than 90% of {prof.memory_gib} GiB; use more GPUs or a "
                               "larger one (`gpuforge plan`)")
    elif batch == "sync":
        best = min(fitting, key=lambda r: r["step_ms"])
        advice, why = best["format"], ("synchronous decode is memory-bound: fewer bytes per weight is faster "
                                        "(W4A16 is the most cost-efficient there, Kurtic et al. 2024)")
    else:
        pref = [r for r in fitting if r["format"] in ("W8A8-FP8", "W8A8-INT8")]
        best = pref[0] if pref else max(fitting, key=lambda r: r["tokens_per_s"])
        advice = best["format"]
        why = ("large batches are compute-bound: 8-bit activations use the fast tensor path"
               + (" and this GPU has FP8" if prof.fp8 else "; this GPU has no FP8, so INT8"))
    return {"params": n, "params_b": n / 1e9, "gpu": prof.id, "batch": batch, "context": context,
            "fp8_supported": bool(prof.fp8), "options": rows, "advice": advice, "why": why,
            "advice_methods": by_format.get(advice, [])}


def methods_by_format() -> dict[str, list[str]]:
    """Serving format -> the ``quantize run`` methods (``name`` or ``name --bits B``) that write it."""
    from gpuforge.plugins.quantize.methods import all_methods

    out: dict[str, list[str]] = {}
    for m in all_methods().values():
        for b in m.bits:
            label = m.name if b == m.bits[0] else f"{m.name} --bits {b}"
            out.setdefault(m.serving_format(b), []).append(label)
    return out


def estimate(args: list[str]):
    """``gpuforge plan quantize run --params N [--method gptq|rtn|nf4|fp4|int8] [--bits 4]
    [--nsamples 128] [--seqlen 2048] [--hidden H]``: GPTQ's memory is the fp16 model plus
    one layer's Hessian (hidden^2 fp32 x 2) and calibration activations; its work is the
    calibration forward (2 flops/param/token) plus per-layer Cholesky and column updates
    (~ hidden^3 + rows * cols^2 / 64 flops per layer)."""
    from gpuforge.hardware.estimates import Estimate

    p = argparse.ArgumentParser(prog="gpuforge plan quantize run", add_help=False)
    p.add_argument("--params", default="7e9")
    from gpuforge.plugins.quantize.methods import get_method, method_names

    p.add_argument("--method", default="gptq", choices=method_names())
    p.add_argument("--bits", type=int, default=4, choices=[2, 3, 4, 8])
    p.add_argument("--nsamples", type=int, default=128)
    p.add_argument("--seqlen", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=None)
    ns, extra = p.parse_known_args(args)
    if extra:
        raise UsageError(f"plan quantize run: unknown arguments {' '.join(extra)}; use --params N [--method M] "
                         "[--bits B] [--nsamples N] [--seqlen N] [--hidden H]")
    n = parse_params(ns.params)
    layers = max(12, round(32 * (n / 7e9) ** 0.25))
    hidden = ns.hidden or int((n / (12 * layers)) ** 0.5)
    tokens = ns.nsamples * ns.seqlen
    weights16 = 2 * n
    spec = get_method(ns.method)
    bits = ns.bits if ns.bits in spec.bits else spec.bits[0]
    out_bytes = n * spec.nominal_bits(bits) / 8
    if spec.calibration == "always":
        hess = 2 * (4 * hidden) ** 2 * 4                 # the widest layer (MLP down-proj, 4h inputs)
        acts = tokens * hidden * 2 * 2                     # layer inputs kept for the next layer, fp16
        flops = 2 * n * tokens * 2 + layers * 7 * ((4 * hidden) ** 3 + 4 * hidden * hidden * 4 * hidden / 64)
        memory = weights16 + hess + acts + out_bytes
        notes = [f"{ns.nsamples} x {ns.seqlen} calibration tokens; the model can stay on the CPU and move to "
                 "the GPU one layer at a time (memory then ~ one layer + activations)"]
    else:
        hess = acts = 0
        flops = 10 * n
        memory = weights16 + out_bytes
        notes = ["no calibration: a memory-bound pass over the weights"]
    return Estimate(
        what=f"quantize run --method {ns.method} of a {n / 1e9:.2f}B-parameter model",
        memory_bytes=float(memory), flops=float(flops), bytes_moved=float(weights16 * 2 + out_bytes),
        dtype="fp32" if spec.calibration == "always" else "fp16",
        breakdown={"weights_fp16": float(weights16), "hessian": float(hess), "activations": float(acts),
                   "output": float(out_bytes)},
        notes=notes)
