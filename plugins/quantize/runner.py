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
    def spec(self):
        """This run's row of the methods table."""
        from gpuforge.plugins.quantize.methods import get_method

        return get_method(self.method)

    @property
    def calibrated(self) -> bool:
        return self.spec.calibrated(self)

    def resolved_bits(self) -> int:
        return self.spec.resolve_bits(self)


def check_method(method: str) -> str:
    return Options(method).spec.name


def check_shapes(name: str, shape: tuple, opts: Options, bits: int) -> None:
    spec = opts.spec
    if spec.check_shape:
        from gpuforge.plugins.quantize.methods import resolve

        resolve(spec.check_shape)(name, tuple(shape), opts, bits)


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
    from gpuforge.plugins.quantize.methods import LayerJob, data_bytes, resolve

    out: dict[str, np.ndarray] = {}
    rows = []
    chosen = set(names)
    for key, t in tensors.items():
        if key not in chosen:
            out[key] = t
    spec = opts.spec
    encode = resolve(spec.encode)
    for key in names:
        w = np.ascontiguousarray(tensors[key], dtype=np.float32)
        prefix = key[: -len("weight")] if key.endswith("weight") else key + "."
        t0 = time.perf_counter()
        layer = encode(w, LayerJob(key, opts, bits, hessians.get(key) if hessians else None))
        nbytes = data_bytes(spec.layout, layer)
        for k, v in layer.items():
            out[prefix + k] = np.ascontiguousarray(v)
        rows.append({"name": prefix.rstrip("."), "shape": list(w.shape), "method": opts.method,
                     "bits_per_param": 8 * nbytes / w.size, "seconds": round(time.perf_counter() - t0, 3)})
        if progress_cb:
            progress_cb()
    return out, rows


def quantization_config(opts: Options, bits: int, structure: dict | None = None) -> dict | None:
    spec = opts.spec
    if not spec.config:
        return None
    from gpuforge.plugins.quantize.methods import resolve

    return resolve(spec.config)(opts, bits, structure or {})


def block_scope(names: list[str], linear_keys: dict[str, str], block_key: str | None, n_blocks: int,
                targets: str | None, scope: str) -> tuple[list[str], list[str], dict, list[str]]:
    """For a layout whose loaders quantize only the same linear layers in every transformer
    block (``scope == "blocks"``): (weights to quantize, weights kept in float, the
    ``block_name_to_quantize`` / ``modules_in_block_to_quantize`` structure, notes).
    ``linear_keys``: module name -> weight key of every linear layer; names are checkpoint
    keys, so the block name is the one a loader of the checkpoint's class sees."""
    if scope != "blocks":
        return names, [], {}, []
    if block_key is None:
        return names, [], {}, ["no transformer blocks found: GPTQ loaders (optimum / gptqmodel) need "
                               "block_name_to_quantize; this output loads in gpuforge only"]
    inside = [k for k in names if k.startswith(block_key + ".")]
    kept: list[str] = []
    if targets is None:
        kept = [k for k in names if k not in set(inside)]
        names = inside
    def rel(k: str) -> tuple[str, str]:
        idx, _, rest = k[len(block_key) + 1:].partition(".")
        return idx, rest[: -len(".weight")] if rest.endswith(".weight") else rest
    all_rel = list(dict.fromkeys(rel(k)[1] for k in linear_keys.values() if k.startswith(block_key + ".")))
    per_block: dict[str, set] = {}
    for k in names:
        if k.startswith(block_key + "."):
            i, r = rel(k)
            per_block.setdefault(i, set()).add(r)
    notes = []
    outside = [k for k in names if not k.startswith(block_key + ".")]
    sets = list(per_block.values())
    uniform = len(per_block) == n_blocks and all(x == sets[0] for x in sets)
    if outside or not uniform:
        notes.append("GPTQ loaders (transformers + optimum / gptqmodel) quantize the same linear layers in every "
                     f"block of {block_key} and nothing outside it; "
                     + (f"{len(outside)} selected layer(s) lie outside the blocks (e.g. {outside[0]})" if outside
                        else "the selection differs between blocks")
                     + ": this output loads in gpuforge (quantize eval, load_quantized_model) only")
    structure: dict = {"block_name_to_quantize": block_key}
    if uniform and sets and set(all_rel) != sets[0]:
        structure["modules_in_block_to_quantize"] = [[r for r in all_rel if r in sets[0]]]
    return names, kept, structure, notes


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
    block_key, n_blocks = None, 0
    if kind == "folder":
        with manifest.timed("load_model"):
            model, tok = model_io.load_hf(src, config)
        for mod in model_io.linear_modules(model):
            key = _find_key(tensors, mod)
            if key:
                names_by_module[mod] = key
        linear_keys = set(names_by_module.values())
        block_mod = model_io.find_blocks(model)
        if block_mod is not None:
            n_blocks = len(model.get_submodule(block_mod))
            first = next((m for m in names_by_module if m.startswith(block_mod + ".")), None)
            if first is not None:   # the block list as the checkpoint names it
                block_key = names_by_module[first][: -len(first + ".weight")] + block_mod
    elif opts.calibrated:
        what = "--gptq" if opts.gptq else f"--method {opts.method}"
        raise UsageError(f"{what} needs calibration activations, so a model folder (config.json + "
                         f"safetensors), not the bare state dict {src}; use --method rtn / nf4 without it")
    names = model_io.select_targets(tensors, linear_keys, opts.targets, opts.ignore)
    if opts.targets is None:   # like GPTQ tools: the output head stays in float unless asked for
        names = [k for k in names if not k.startswith("lm_head.")]
    kept_float, structure, notes = [], {}, []
    if kind == "folder":
        names, kept_float, structure, notes = block_scope(names, names_by_module, block_key, n_blocks, opts.targets,
                                                          opts.spec.layout.scope)
        for note in notes:
            log.warning(note)
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
            qc = quantization_config(opts, bits, structure)
            if kind == "folder":
                for p in src.rglob("*"):
                    rel = p.relative_to(src)
                    if p.is_file() and p.suffix not in (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack") \
                            and rel != Path("config.json") and not rel.name.startswith("."):
                        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(p, tmp / rel)
                cfg = dict(config)
                if qc is not None:
                    cfg["quantization_config"] = qc
                (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
            if qc is not None and qc.get("quant_method") == "gptq":
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
            "kept_in_float": [k[: -len(".weight")] if k.endswith(".weight") else k for k in kept_float],
            "loaders": opts.spec.layout.loader, "notes": notes,
        }
        manifest.set("result", {k: v for k, v in result.items() if k != "per_layer"})
        manifest.write(tmp)
    return result
