"""``gpuforge bench scale`` rows of the quantize plugin: peak RSS and wall time of
``quantize run`` on Llama-shaped models with random bf16 weights (:mod:`.synthetic`),
generated into the bench cache folder and deleted after their rows.

Series: ``quantize nf4`` / ``quantize int8`` over 1.1B, 3B and 7B parameters;
``quantize nf4 by depth`` / ``quantize gptq by depth`` over the 1.1B shape with 11 and 22
layers (GPTQ on a small calibration set: 16 sentences of at most 64 tokens). Each row is
one ``gpuforge quantize run`` process measured by :func:`gpuforge.core.bench.measure_command`.
``--quick``: tiny shapes, for tests.
"""
from __future__ import annotations

import os
import shutil

from gpuforge.core.bench import BenchContext, measure_command

GPTQ_CALIB = ["--nsamples", "16", "--seqlen", "64"]


def _plan(ctx: BenchContext) -> list[tuple[str, str, object, list[str]]]:
    """(series, size label, shape, extra args) in the order they run; models are shared
    between consecutive rows of the same size label and shape."""
    from gpuforge.plugins.quantize.synthetic import SHAPES

    if ctx.quick:
        small = SHAPES["tiny"]
        return [("quantize nf4", "tiny-2", small, []), ("quantize int8", "tiny-2", small, []),
                ("quantize nf4", "tiny-6", small.with_layers(6), []),
                ("quantize int8", "tiny-6", small.with_layers(6), []),
                ("quantize gptq by depth", "tiny-2", small, ["--method", "gptq", "--nsamples", "2", "--seqlen", "16"]),
                ("quantize gptq by depth", "tiny-6", small.with_layers(6),
                 ["--method", "gptq", "--nsamples", "2", "--seqlen", "16"])]
    b11 = SHAPES["1.1B"]
    plan = [("quantize nf4 by depth", "1.1B-11L", b11.with_layers(11), []),
            ("quantize gptq by depth", "1.1B-11L", b11.with_layers(11), ["--method", "gptq", *GPTQ_CALIB]),
            ("quantize nf4", "1.1B", b11, []), ("quantize int8", "1.1B", b11, []),
            ("quantize nf4 by depth", "1.1B", b11, []),
            ("quantize gptq by depth", "1.1B", b11, ["--method", "gptq", *GPTQ_CALIB])]
    for label in ("3B", "7B"):
        plan += [("quantize nf4", label, SHAPES[label], []), ("quantize int8", label, SHAPES[label], [])]
    if ctx.sizes:
        plan = [p for p in plan if p[1].split("-")[0] in ctx.sizes]
    return plan


def run(ctx: BenchContext) -> list[dict]:
    from gpuforge.core.safepath import python_argv
    from gpuforge.plugins.quantize.synthetic import make_llama

    rows: list[dict] = []
    plan = _plan(ctx)
    model = None
    current = None
    env = dict(os.environ)
    try:
        for i, (series, label, shape, extra) in enumerate(plan):
            if current != (label, shape):
                if model is not None and not ctx.keep_inputs:
                    shutil.rmtree(model, ignore_errors=True)
                model = ctx.cache(f"quantize/llama-{label}")
                if not (model / "config.json").is_file():
                    make_llama(model, shape)
                current = (label, shape)
            out = ctx.cache(f"quantize/out-{label}-{i}")
            shutil.rmtree(out, ignore_errors=True)
            method = ["--method", series.split()[1]] if "--method" not in extra else []
            load0 = os.getloadavg()[0]
            r = measure_command([*python_argv(), "-m", "gpuforge.cli", "quantize", "run", str(model), *method, *extra,
                                 "--out", str(out)], env=env)
            if r["returncode"] != 0:
                raise RuntimeError(f"quantize run on {label} failed: {r['stderr_tail'][-500:]}")
            out_bytes = sum(p.stat().st_size for p in out.glob("*.safetensors"))
            rows.append({"name": series, "impl": "streamed", "series": series, "size_label": label,
                         "size": shape.params, "layers": shape.layers,
                         "input_bytes": sum(p.stat().st_size for p in model.glob("*.safetensors")),
                         "output_bytes": out_bytes, "peak_rss_bytes": r["peak_rss_bytes"],
                         "peak_rss_mib": round(r["peak_rss_bytes"] / 2**20, 1), "seconds": round(r["seconds"], 2),
                         "load_avg": round((load0 + os.getloadavg()[0]) / 2, 2)})
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if model is not None and not ctx.keep_inputs:
            shutil.rmtree(model, ignore_errors=True)
    return rows
