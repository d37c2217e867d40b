"""``gpuforge quantize ...``: GPTQ, LLM.int8(), NF4/FP4 + double quantization, KV-cache
analysis, 2:4 sparsity, format advice. Heavy imports happen inside the commands."""
from __future__ import annotations

from typing import Optional

import typer

from gpuforge.core.output import print_table
from gpuforge.core.run import Run, command
from gpuforge.plugins.quantize.methods import method_names

app = typer.Typer(help="GPTQ, LLM.int8(), NF4 + double quantization, KV-cache quantization, 2:4 sparsity.",
                  no_args_is_help=True)

def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def _write_json(dst, res: dict) -> None:
    if dst is not None:
        from gpuforge.core.output import to_json

        dst.tmp.write_text(to_json(res) + "\n")


@command(app, "run", outputs=True)
def run_cmd(
    run: Run,
    input: str = typer.Argument(..., metavar="INPUT", help="A Hugging Face model folder (config.json + safetensors) or a .safetensors state dict."),
    method: str = typer.Option(..., "--method", help=" | ".join(method_names())),
    out: str = typer.Option(..., "--out", help="Output folder."),
    bits: Optional[int] = typer.Option(None, "--bits", help="2 | 3 | 4 | 8 (rtn/gptq; default 4)."),
    group_size: int = typer.Option(128, "--group-size", help="rtn/gptq group size along the input dimension (-1: one group per row)."),
    block_size: int = typer.Option(64, "--block-size", help="nf4/fp4 block size (bitsandbytes default 64)."),
    double_quant: bool = typer.Option(True, "--double-quant/--no-double-quant", help="nf4/fp4: quantize absmax too (QLoRA)."),
    act_order: bool = typer.Option(False, "--act-order", help="gptq (and nf4/fp4 with --gptq): quantize columns by decreasing Hessian diagonal."),
    use_gptq: bool = typer.Option(False, "--gptq", help="nf4/fp4: choose the codes with GPTQ's error compensation on the calibration text (needs a model folder); the output is the same bitsandbytes layout."),
    sym: bool = typer.Option(False, "--sym/--asym", help="rtn/gptq: symmetric or asymmetric grid."),
    mse: bool = typer.Option(False, "--mse", help="rtn/gptq: pick each group's range by a clipping search (least |error|^2.4, the GPTQ reference quantizer's mse option) instead of min/max."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Calibration text, one sample per line (default: the shipped file)."),
    nsamples: int = typer.Option(128, "--nsamples", help="gptq / --gptq: calibration lines used (the shipped file has 140)."),
    seqlen: int = typer.Option(128, "--seqlen", help="gptq / --gptq: tokens per calibration sample at most."),
    targets: Optional[str] = typer.Option(None, "--targets", help="Regex: quantize weights whose name matches (default: all nn.Linear / 2-D weights)."),
    ignore: Optional[str] = typer.Option(None, "--ignore", help="Regex: leave matching weights in float."),
    threshold: float = typer.Option(6.0, "--threshold", help="int8: LLM.int8() outlier threshold used at run time."),
    shard_size: str = typer.Option("2GB", "--shard-size", help="Largest output shard (model-0000N-of-0000M.safetensors + index); e.g. 2GB, 500MB. Memory does not depend on it."),
    calib_memory: str = typer.Option("1GB", "--calib-memory", help="gptq / --gptq: calibration activations kept in memory; the rest goes to scratch files."),
) -> None:
    """Quantize a model and write it in the layout bitsandbytes / GPTQ loaders read, streamed:
    one tensor (gptq: one transformer block) in memory at a time."""
    from gpuforge.plugins.quantize.runner import Options, quantize_run

    opts = Options(method=method, bits=bits, group_size=group_size, block_size=block_size, double_quant=double_quant,
                   act_order=act_order, sym=sym, calib=calib, nsamples=nsamples, seqlen=seqlen, targets=targets,
                   ignore=ignore, threshold=threshold, gptq=use_gptq, mse=mse)
    res = quantize_run(run, input, out, opts, shard_size=shard_size, calib_memory=calib_memory)

    def human() -> None:
        typer.echo(f"{res['method']} ({res['bits']}-bit): {res['layers']} layers, {res['quantized_params']:,} params at "
                   f"{res['bits_per_param']:.2f} bits/param; {_fmt_bytes(res['input_bytes'])} -> "
                   f"{_fmt_bytes(res['output_bytes'])}; wrote {res['output']}")
        if res.get("kept_in_float"):
            typer.echo(f"kept in float (outside the transformer blocks its loaders quantize): "
                       f"{', '.join(res['kept_in_float'])}; --targets quantizes them anyway")
        for note in res.get("notes", []):
            typer.echo(f"note: {note}")
        if res.get("loaders"):
            typer.echo(f"loads in: {res['loaders']}")

    run.result(res, human)


@command(app, "eval", outputs=True)
def eval_cmd(
    run: Run,
    original: str = typer.Argument(..., metavar="ORIGINAL", help="The float model folder or .safetensors file."),
    quantized: str = typer.Argument(..., metavar="QUANTIZED", help="The output folder of `quantize run`."),
    data: Optional[str] = typer.Option(None, "--data", help="Text file, one sample per line (default: the shipped held-out sentences)."),
    seqlen: int = typer.Option(128, "--seqlen", help="Tokens per sample (perplexity: window length)."),
    stride: int = typer.Option(64, "--stride", help="Perplexity: window stride."),
    out: Optional[str] = typer.Option(None, "--out", help="Also write the result as JSON to this file (manifest beside it)."),
) -> None:
    """Per-layer weight and output error; embedding cosine (encoders) or perplexity (causal LMs)."""
    from gpuforge.plugins.quantize.evaluate import evaluate

    run.input(original, "ORIGINAL")
    run.input(quantized, "QUANTIZED")
    if data is not None:
        run.input(data, "--data file")
    dst = run.output(out, kind="file") if out is not None else None
    res = evaluate(original, quantized, data, seqlen=seqlen, stride=stride)
    _write_json(dst, res)

    def human() -> None:
        print_table([{k: (f"{v:.5f}" if isinstance(v, float) else v) for k, v in r.items()} for r in res["layers"]],
                    title="per-layer relative error")
        for k, v in res["summary"].items():
            typer.echo(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")

    run.result(res, human)


@command(app, "inspect", device=False)
def inspect_cmd(run: Run,
                folder: str = typer.Argument(..., metavar="DIR", help="A quantized output folder (or .safetensors file).")) -> None:
    """Bits per parameter, size on disk, method per layer."""
    from gpuforge.plugins.quantize.inspect_dir import inspect_path

    run.input(folder, "DIR")
    res = inspect_path(folder)

    def human() -> None:
        print_table([{**r, "bits_per_param": f"{r['bits_per_param']:.3f}"} for r in res["layers"]], title=res["path"])
        typer.echo(f"{res['quantized_layers']} quantized layers, {res['bits_per_param']:.3f} bits/param over them; "
                   f"{_fmt_bytes(res['bytes_on_disk'])} on disk")

    run.result(res, human)


@command(app, "advise", device=False)
def advise_cmd(
    run: Run,
    params: str = typer.Option(..., "--params", help="Parameter count: 7e9, 7B, 70B, 125M ..."),
    gpu: str = typer.Option(..., "--gpu", help="GPU profile id (see `gpuforge hw list`)."),
    batch: str = typer.Option("sync", "--batch", help="sync (latency, small batches) | async (throughput, large batches)."),
    context: int = typer.Option(4096, "--context", min=1, help="Tokens of context per sequence (KV cache)."),
) -> None:
    """Which weight/activation format for this model size on this GPU (BF16, W8A8-FP8, W8A8-INT8, W4A16)."""
    from gpuforge.plugins.quantize.advise import advise

    res = advise(params, gpu, batch, context)

    def human() -> None:
        print_table(res["options"], title=f"{res['params_b']:.2f}B params on {res['gpu']} ({batch})")
        how = f" (quantize run --method {' | '.join(res['advice_methods'])})" if res["advice_methods"] else ""
        typer.echo(f"advice: {res['advice']}{how} - {res['why']}")

    run.result(res, human)


@command(app, "sparsify", outputs=True)
def sparsify_cmd(
    run: Run,
    input: str = typer.Argument(..., metavar="INPUT", help="A model folder or .safetensors state dict."),
    pattern: str = typer.Option("2:4", "--pattern", help="N:M structured sparsity pattern (2:4)."),
    out: str = typer.Option(..., "--out", help="Output folder."),
    calib: Optional[str] = typer.Option(None, "--calib", help="Calibration text: score weights by |w| * ||x|| (Wanda-style) instead of |w|."),
    targets: Optional[str] = typer.Option(None, "--targets", help="Regex of weights to sparsify."),
    ignore: Optional[str] = typer.Option(None, "--ignore", help="Regex of weights to keep dense."),
) -> None:
    """2:4 structured sparsity: keep the 2 largest of every 4 weights along the input dimension."""
    from gpuforge.plugins.quantize.sparsify import sparsify

    res = sparsify(run, input, out, pattern, calib, targets, ignore)
    run.result(res, f"{res['layers']} layers pruned to {pattern}; compressed {_fmt_bytes(res['compressed_bytes'])} "
                    f"(dense {_fmt_bytes(res['dense_bytes'])}); wrote {res['output']}")


@command(app, "kv", outputs=True)
def kv_cmd(
    run: Run,
    model: str = typer.Argument(..., metavar="MODEL", help="A Hugging Face model folder."),
    bits: int = typer.Option(4, "--bits", help="2 | 3 | 4"),
    calib: Optional[str] = typer.Option(None, "--calib", help="Text whose keys/values are analysed (default: the shipped calibration file)."),
    gpu: str = typer.Option("a100-80gb", "--gpu", help="GPU profile for the context-length estimate."),
    outlier_frac: float = typer.Option(0.01, "--outlier-frac", help="Share of values kept in fp16 as sparse outliers (dense-and-sparse)."),
    out: Optional[str] = typer.Option(None, "--out", help="Also write the result as JSON to this file (manifest beside it)."),
) -> None:
    """KVQuant analysis on the model's real keys and values."""
    from gpuforge.plugins.quantize.kv import analyse

    run.input(model, "MODEL")
    if calib is not None:
        run.input(calib, "--calib file")
    dst = run.output(out, kind="file") if out is not None else None
    res = analyse(model, bits, calib, gpu, outlier_frac)
    _write_json(dst, res)

    def human() -> None:
        print_table(res["rows"], title=f"KV cache at {bits} bits ({res['model_type']}; {res['rope_note']})")
        typer.echo(f"bytes per token: fp16 {res['fp16_bytes_per_token']:.0f} -> {res['quant_bytes_per_token']:.1f}; "
                   f"context that fits on {res['gpu']}: {res['fp16_context']:,} -> {res['quant_context']:,} tokens")

    run.result(res, human)
