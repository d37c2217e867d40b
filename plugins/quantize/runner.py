"""``gpuforge quantize run``: quantize a model folder or a safetensors state dict and write
it in the layout other tools read (see :mod:`.formats`)."""
from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.core.files import Manifest, atomic_dir, check_output
from gpuforge.core.log import get_logger
from gpuforge.plugins.quantize import model_io

METHODS = ("rtn", "nf4", "fp4", "int8", "gptq")
CONSTANT_KEYS = ("weight.quant_map", "weight.nested_quant_map", "weight_format", "g_idx")
log = get_logger("gpuforge.quantize")


@dataclass
class Options:
    method: str
    bits: int | None = None
    group_size: int = 128
    block_size: int = 64
    double_quant: bool = True
    act_order: bool = False
    sym: bool = False
    calib: str | None = None
    nsamples: int = 128
    seqlen: int = 128
    targets: str | None = None
    ignore: str | None = None
    threshold: float = 6.0
    percdamp: float = 0.01
    gptq: bool = False          # nf4/fp4: codes chosen by GPTQ (formats.nf4_gptq_layer_tensors)
    mse: bool = False           # rtn/gptq: group ranges by the clipping search (gptq.find_params)

    @property
    def calibrated(self) -> bool:
        return self.method == "gptq" or (self.gptq and self.method in ("nf4", "fp4"))

    def resolved_bits(self) -> int:
        m = self.method
        if m in ("nf4", "fp4"):
            if self.bits not in (None, 4):
                raise UsageError(f"--method {m} is 4-bit; drop --bits {self.bits} or use rtn/gptq")
            if self.mse:
                raise UsageError(f"--mse applies to rtn/gptq grids; --method {m} scales by the block absmax")
            return 4
        if m == "int8":
            if self.gptq or self.mse:
                raise UsageError("--gptq / --mse do not apply to --method int8")
            if self.bits not in (None, 8):
                raise UsageError(f"--method int8 is 8-bit; drop --bits {self.bits} or use rtn/gptq")
            return 8
        if self.gptq:
            raise UsageError(f"--gptq applies to nf4/fp4 (for integer GPTQ use --method gptq), not --method {m}")
        bits = 4 if self.bits is None else self.bits
        if bits not in (2, 3, 4, 8):
            raise UsageError(f"--bits {bits} is not supported for {m}; choose 2, 3, 4 or 8")
        return bits


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UsageError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def check_shapes(name: str, shape: tuple, opts: Options, bits: int) -> None:
    out_f, in_f = shape
    if opts.method in ("nf4", "fp4"):
        if opts.block_size < 1 or in_f % opts.block_size:
            raise BadInputError(f"{name} has {in_f} input features, not a multiple of --block-size "
                                f"{opts.block_size}; pick a block size that divides it or --ignore the layer")
    elif opts.method in ("rtn", "gptq"):
        from gpuforge.kernels.packing import gptq_group

        g = gptq_group(bits)[0]
        if opts.group_size > 0 and in_f % opts.group_size:
            raise BadInputError(f"{name} has {in_f} input features, not a multiple of --group-size "
                                f"{opts.group_size}; pick a group size that divides it or --ignore the layer")
        if in_f % g or out_f % g:
            raise BadInputError(f"{name} has shape {shape}; GPTQ {bits}-bit packing needs both dimensions to be "
                                f"multiples of {g}; --ignore the layer")


def _find_key(tensors: dict, module_name: str) -> str | None:
    key = module_name + ".weight"
    if key in tensors:
        return key
    hits = [k for k in tensors if k.endswith("." + key)]
    return hits[0] if len(hits) == 1 else None


def collect_hessians(model, tok, names: dict[str, str], lines: list[str], seqlen: int):
    """{tensor key: Hessian} from one pass of the fp32 model over the calibration lines
    (one sequence per forward, no padding tokens)."""
    import torch

    from gpuforge.plugins.quantize.gptq import Hessian

    mods = dict(model.named_modules())
    hs = {key: Hessian(mods[mod].in_features) for mod, key in names.items()}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # one short sequence per forward: small ops, the thread pool only adds waiting
    try:
        model_io.forward_lines(model, tok, lines, seqlen, list(names), lambda n, i, o: hs[names[n]].add(i[0]))
    finally:
        torch.set_num_threads(threads)
    return {k: h.H for k, h in hs.items()}


def quantize_tensors(tensors: dict[str, np.ndarray], names: list[str], opts: Options, bits: int,
                     hessians: dict | None = None, progress_cb=None) -> tuple[dict[str, np.ndarray], list[dict]]:
    """The output state dict and one info row per quantized layer."""
    import torch

    from gpuforge.plugins.quantize import formats, gptq

    out: dict[str, np.ndarray] = {}
    rows = []
    chosen = set(names)
    for key, t in tensors.items():
        if key not in chosen:
            out[key] = t
    for key in names:
        w = np.ascontiguousarray(tensors[key], dtype=np.float32)
        prefix = key[: -len("weight")] if key.endswith("weight") else key + "."
        t0 = time.perf_counter()
        if opts.method in ("nf4", "fp4") and opts.gptq:
            layer = formats.nf4_gptq_layer_tensors(w, hessians[key], opts.method, opts.block_size, opts.double_quant,
                                                   opts.act_order, opts.percdamp)
        elif opts.method in ("nf4", "fp4"):
            layer = formats.nf4_layer_tensors(w, opts.method, opts.block_size, opts.double_quant)
        elif opts.method == "int8":
            layer = formats.int8_layer_tensors(w)
        else:
            wt = torch.from_numpy(w)
            if opts.method == "gptq":
                gq = gptq.gptq(wt, hessians[key], bits, opts.group_size, opts.sym, opts.act_order,
                               percdamp=opts.percdamp, mse=opts.mse)
            else:
                gq = gptq.rtn(wt, bits, opts.group_size, opts.sym, mse=opts.mse)
            layer = formats.gptq_layer_tensors(gq)
        # per-parameter storage; the fixed code tables and the JSON state are format constants
        nbytes = sum(v.nbytes for k, v in layer.items() if k not in CONSTANT_KEYS and ".quant_state." not in k)
        for k, v in layer.items():
            out[prefix + k] = np.ascontiguousarray(v)
        rows.append({"name": prefix.rstrip("."), "shape": list(w.shape), "method": opts.method,
                     "bits_per_param": 8 * nbytes / w.size, "seconds": round(time.perf_counter() - t0, 3)})
        if progress_cb:
            progress_cb()
    return out, rows


def quantization_config(opts: Options, bits: int) -> dict:
    if opts.method in ("nf4", "fp4"):
        return {"quant_method": "bitsandbytes", "load_in_4bit": True, "load_in_8bit": False,
                "bnb_4bit_quant_type": opts.method, "bnb_4bit_use_double_quant": opts.double_quant,
                "bnb_4bit_compute_dtype": "float32", "bnb_4bit_quant_storage": "uint8",
                "bnb_4bit_blocksize": opts.block_size,
                **({"gpuforge_codes": "gptq", "gpuforge_act_order": opts.act_order} if opts.gptq else {})}
    if opts.method == "int8":
        return {"quant_method": "bitsandbytes", "load_in_8bit": True, "load_in_4bit": False,
                "llm_int8_threshold": opts.threshold}
    return {"quant_method": "gptq", "bits": bits, "group_size": opts.group_size if opts.group_size > 0 else -1,
            "damp_percent": opts.percdamp, "desc_act": opts.act_order, "static_groups": False,
            "sym": opts.sym, "true_sequential": False, "model_file_base_name": "model",
            "checkpoint_format": "gptq", "gpuforge_method": opts.method, "gpuforge_mse_ranges": opts.mse}


def run(input_path: str, out: str, opts: Options, force: bool = False) -> dict:
    check_method(opts.method)
    bits = opts.resolved_bits()
    check_output(out, force)
    if opts.calibrated:
        if opts.nsamples < 1 or opts.seqlen < 2:
            raise UsageError("--nsamples must be >= 1 and --seqlen >= 2")
    manifest = Manifest("quantize run", {k: v for k, v in opts.__dict__.items()} | {"bits": bits})
    src = Path(input_path)
    with manifest.timed("load"):
        kind, tensors, config = model_io.load_input(src)
    model = tok = None
    linear_keys = None
    names_by_module: dict[str, str] = {}
    if kind == "folder":
        with manifest.timed("load_model"):
            model, tok = model_io.load_hf(src, config)
        for mod in model_io.linear_modules(model):
            key = _find_key(tensors, mod)
            if key:
                names_by_module[mod] = key
        linear_keys = set(names_by_module.values())
    elif opts.calibrated:
        what = "--method gptq" if opts.method == "gptq" else "--gptq"
        raise UsageError(f"{what} needs calibration activations, so a model folder (config.json + "
                         f"safetensors), not the bare state dict {src}; use --method rtn / nf4 without it")
    names = model_io.select_targets(tensors, linear_keys, opts.targets, opts.ignore)
    if opts.targets is None:   # like GPTQ tools: the output head stays in float unless asked for
        names = [k for k in names if not k.startswith("lm_head.")]
    if not names:
        raise BadInputError(f"no 2-D floating weights of {src} match --targets/--ignore; nothing to quantize")
    for key in names:
        check_shapes(key, tensors[key].shape, opts, bits)
        if not np.isfinite(tensors[key]).all():
            raise BadInputError(f"tensor {key} of {src} holds NaN or inf; fix or --ignore it")
    hessians = None
    if opts.calibrated:
        lines = model_io.read_lines(opts.calib, model_io.CALIB_TEXT)[: opts.nsamples]
        wanted = {m: k for m, k in names_by_module.items() if k in set(names)}
        with manifest.timed("calibrate"):
            hessians = collect_hessians(model, tok, wanted, lines, opts.seqlen)
    from gpuforge.core.progress import progress

    with manifest.timed("quantize"):
        with progress(f"quantize {opts.method}", total=len(names)) as bar:
            qtensors, rows = quantize_tensors(tensors, names, opts, bits, hessians, progress_cb=lambda: bar.advance(1))

    from safetensors.numpy import save_file

    manifest.add_input(src)
    with atomic_dir(out, force=force) as tmp:
        with manifest.timed("write"):
            save_file(qtensors, str(tmp / model_io.WEIGHTS_NAME), metadata={"format": "pt"})
            qc = quantization_config(opts, bits)
            if kind == "folder":
                for p in src.rglob("*"):
                    rel = p.relative_to(src)
                    if p.is_file() and p.suffix not in (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack") \
                            and rel != Path("config.json") and not rel.name.startswith("."):
                        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(p, tmp / rel)
                cfg = dict(config)
                cfg["quantization_config"] = qc
                (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
            if qc["quant_method"] == "gptq":
                (tmp / "quantize_config.json").write_text(json.dumps(
                    {k: v for k, v in qc.items() if k != "quant_method"} | {"quant_method": "gptq"}, indent=2) + "\n")
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                manifest.add_output(Path(out) / p.relative_to(tmp))
        qparams = sum(int(np.prod(r["shape"])) for r in rows)
        result = {
            "input": str(src), "output": str(out), "kind": kind, "method": opts.method, "bits": bits,
            "layers": len(rows), "quantized_params": qparams,
            "bits_per_param": sum(r["bits_per_param"] * np.prod(r["shape"]) for r in rows) / max(qparams, 1),
            "input_bytes": int(sum(v.nbytes for v in tensors.values())),
            "output_bytes": int((tmp / model_io.WEIGHTS_NAME).stat().st_size),
            "per_layer": rows,
        }
        manifest.set("result", {k: v for k, v in result.items() if k != "per_layer"})
        manifest.write(tmp)
    return result
