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
from gpuforge.core.log import get_logger
from gpuforge.plugins.quantize import model_io
from gpuforge.plugins.quantize.shards import DEFAULT_SHARD_BYTES, INDEX_NAME, ShardWriter, parse_size

DEFAULT_CALIB_MEMORY = 1024**3
"""Calibration activations kept in memory (inputs and outputs of the current block); the
rest goes to files in a scratch folder."""

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


def _prefix(key: str) -> str:
    return key[: -len("weight")] if key.endswith("weight") else key + "."


class _Quantizer:
    """Encodes one weight, writes its layer tensors, keeps the report row."""

    def __init__(self, opts: Options, bits: int, writer: ShardWriter, src: model_io.TensorSource, bar=None):
        from gpuforge.plugins.quantize.methods import resolve

        self.opts, self.bits, self.writer, self.src, self.bar = opts, bits, writer, src, bar
        self.spec = opts.spec
        self.encode = resolve(self.spec.encode)
        self.decode = resolve(self.spec.layout.decode)
        self.rows: list[dict] = []

    def __call__(self, key: str, w: np.ndarray, hessian=None) -> dict[str, np.ndarray]:
        from gpuforge.plugins.quantize.methods import LayerJob, data_bytes

        if not np.isfinite(w).all():
            raise BadInputError(f"tensor {key} of {self.src.path} holds NaN or inf; fix or --ignore it")
        t0 = time.perf_counter()
        dtype = model_io.DTYPE_NAMES.get(self.src.info(key).dtype, "float32")
        layer = self.encode(np.ascontiguousarray(w, np.float32), LayerJob(key, self.opts, self.bits, hessian, dtype))
        prefix = _prefix(key)
        for k, v in layer.items():
            self.writer.add(prefix + k, np.ascontiguousarray(v))
        self.rows.append({"name": prefix.rstrip("."), "shape": list(w.shape), "method": self.opts.method,
                          "bits_per_param": 8 * data_bytes(self.spec.layout, layer) / w.size,
                          "seconds": round(time.perf_counter() - t0, 3)})
        if self.bar is not None:
            self.bar.advance(1)
        return layer

    def dequantized(self, layer: dict) -> np.ndarray:
        return np.asarray(self.decode(layer, {}), np.float32)


def _pass_through(src: model_io.TensorSource, keys, writer: ShardWriter) -> None:
    for key in keys:
        writer.add(key, src.raw(key), src.info(key).dtype)


def _quantize_streamed(src, names: list[str], q: _Quantizer) -> None:
    """Tensor by tensor in file order: quantize the chosen weights, copy the rest as stored."""
    from gpuforge.plugins.quantize.blockwise import release_memory

    chosen = set(names)
    for key in src.keys():
        if key in chosen:
            q(key, src.read(key))
            release_memory()
        else:
            _pass_through(src, [key], q.writer)


def _quantize_blockwise(sk, names: list[str], linear: dict[str, str], q: _Quantizer, opts: Options,
                        calib_memory: int, run) -> dict:
    """Calibrated methods, one transformer block at a time (:mod:`.blockwise`)."""
    import torch

    from gpuforge.plugins.quantize.blockwise import BlockRunner
    from gpuforge.plugins.quantize.gptq import Hessian

    tok = model_io.load_tokenizer(sk.source.path)
    lines = model_io.read_lines(opts.calib, model_io.CALIB_TEXT)[: opts.nsamples]
    chosen = set(names)
    modules = [m for m, k in linear.items() if k in chosen]
    mods = dict(sk.model.named_modules())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # one short sequence per forward: small ops, the thread pool only adds waiting
    try:
        with run.timed("calibrate_first_block"):
            runner = BlockRunner(sk, tok, lines, opts.seqlen, calib_memory)
    finally:
        torch.set_num_threads(threads)
    done: set[str] = set()

    def quantize_group(group: list[str], run) -> None:
        hs = {m: Hessian(mods[m].in_features) for m in group}
        alias: dict[str, str] = {}
        seen: dict[int, tuple] = {}       # inputs of this sample: modules fed the same tensor share a Hessian

        def hook(m):
            def f(mod, inp, out):
                x = inp[0]
                owner = seen.setdefault(id(x), (m, x))[0]
                if owner == m:
                    hs[m].add(x)
                else:
                    alias[m] = owner
            return f

        handles = [mods[m].register_forward_hook(hook(m)) for m in group]
        torch.set_num_threads(1)
        try:
            run(lambda j, out: seen.clear())
        finally:
            torch.set_num_threads(threads)
            for h in handles:
                h.remove()
        for m in group:
            h = hs[alias.get(m, m)].H
            layer = q(linear[m], mods[m].weight.detach().numpy(), h)
            with torch.no_grad():      # the next inputs come from the quantized layer
                mods[m].weight.data = torch.from_numpy(q.dequantized(layer))
            done.add(m)
        hs.clear()

    try:
        for i, bname in enumerate(runner.block_names()):
            group = [m for m in modules if m.startswith(bname + ".")]
            runner.load(i)
            if group:
                quantize_group(group, lambda cb, i=i: runner.run(i, cb))
            runner.advance(i)
        outside = [m for m in modules if m not in done]
        if outside:                   # layers after the blocks (pooler, head): calibrated on their real inputs
            quantize_group(outside, lambda cb: runner.tail(cb))
        return {"activations_spilled_bytes": runner.spilled_bytes, "calibration_lines": len(lines)}
    finally:
        runner.close()


def run(input_path: str, out: str, opts: Options, force: bool = False, shard_size: int | str = DEFAULT_SHARD_BYTES,
        calib_memory: int | str = DEFAULT_CALIB_MEMORY, device: str = "cpu") -> dict:
    """``gpuforge quantize run`` from Python: the same checks, output transaction and
    manifest as the command (kernels on ``device``: ``cpu``, ``cuda[:N]`` or ``auto``)."""
    from gpuforge.core.run import Run, execute, resolve_device

    r = Run("quantize run", device=resolve_device(device), backend=None, seed=None, json=False, force=force,
            threads=None, params={**opts.__dict__, "input": str(input_path), "out": str(out),
                                  "shard_size": str(shard_size), "calib_memory": str(calib_memory)})
    result: dict = {}

    def body(r) -> None:
        result.update(quantize_run(r, input_path, out, opts, shard_size, calib_memory))
        r.result({k: v for k, v in result.items() if k != "per_layer"})

    execute(r, body)
    return result


def quantize_run(run, input_path: str, out: str, opts: Options, shard_size: int | str = DEFAULT_SHARD_BYTES,
                 calib_memory: int | str = DEFAULT_CALIB_MEMORY) -> dict:
    """Quantize ``input_path`` (a model folder or a .safetensors file) into the output
    folder ``out`` of the command runtime's ``run``, streamed: weights are read one tensor
    at a time and written to shards as they fill; calibrated methods hold one transformer
    block at a time (activations past ``calib_memory`` bytes go to disk). Kernels run on
    ``run.device`` through the registry; the runtime writes the manifest."""
    check_method(opts.method)
    spec = opts.spec
    bits = opts.resolved_bits()
    shard_size, calib_memory = parse_size(shard_size), parse_size(calib_memory)
    if shard_size < 1 or calib_memory < 0:
        raise UsageError("--shard-size must be positive and --calib-memory >= 0")
    if opts.calibrated and (opts.nsamples < 1 or opts.seqlen < 2):
        raise UsageError("--nsamples must be >= 1 and --seqlen >= 2")
    if opts.group_size != -1 and opts.group_size < 1:
        raise UsageError(f"--group-size {opts.group_size}: use -1 (one group per row) or a size >= 1")
    if opts.block_size < 1:
        raise UsageError(f"--block-size {opts.block_size}: use a size >= 1 (bitsandbytes uses 64)")
    run.input(input_path, "INPUT")
    dst = run.output(out, kind="dir")   # --force, overlap with the input, writability: checked before any work
    run.note("quantize", {"bits": bits, "shard_size": shard_size, "calib_memory": calib_memory})
    src = model_io.TensorSource(input_path)
    infos = {k: src.info(k) for k in src.keys()}
    sk = None
    linear: dict[str, str] = {}
    block_key, n_blocks = None, 0
    if src.kind == "folder":
        from gpuforge.plugins.quantize.skeleton import Skeleton

        with run.timed("skeleton"):
            sk = Skeleton(src)
        linear = sk.linear_keys()
        block_mod = model_io.find_blocks(sk.model)
        if block_mod is not None:
            n_blocks = len(sk.model.get_submodule(block_mod))
            first = next((m for m in linear if m.startswith(block_mod + ".")), None)
            if first is not None:   # the block list as the checkpoint names it
                block_key = linear[first][: -len(first + ".weight")] + block_mod
    elif opts.calibrated:
        what = "--gptq" if opts.gptq else f"--method {opts.method}"
        raise UsageError(f"{what} needs calibration activations, so a model folder (config.json + "
                         f"safetensors), not the bare state dict {src.path}; use --method rtn / nf4 without it")
    names = model_io.select_targets(infos, set(linear.values()) if sk is not None else None, opts.targets, opts.ignore)
    if opts.targets is None:   # like GPTQ tools: the output head stays in float unless asked for
        names = [k for k in names if not k.startswith("lm_head.")]
    kept_float, structure, notes = [], {}, []
    if sk is not None:
        names, kept_float, structure, notes = block_scope(names, linear, block_key, n_blocks, opts.targets,
                                                          spec.layout.scope)
        for note in notes:
            log.warning(note)
    if not names:
        raise BadInputError(f"no 2-D floating weights of {src.path} match --targets/--ignore; nothing to quantize")
    for key in names:
        check_shapes(key, infos[key].shape, opts, bits)

    from gpuforge.core.progress import progress

    extra: dict = {}
    tmp = dst.tmp
    # everything lands in the runtime's temporary folder, moved into place on success
    writer = ShardWriter(tmp, shard_size)
    with progress(f"quantize {opts.method}", total=len(names)) as bar:
        q = _Quantizer(opts, bits, writer, src, bar)
        with run.timed("quantize"):
            if opts.calibrated:
                extra = _quantize_blockwise(sk, names, linear, q, opts, calib_memory, run)
                _pass_through(src, [k for k in src.keys() if k not in set(names)], writer)
            else:
                _quantize_streamed(src, names, q)
    with run.timed("write"):
        files = writer.close()
        qc = quantization_config(opts, bits, structure)
        if src.kind == "folder":
            for p in src.path.rglob("*"):
                rel = p.relative_to(src.path)
                if p.is_file() and p.suffix not in (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack") \
                        and rel not in (Path("config.json"), Path(INDEX_NAME)) and not rel.name.startswith("."):
                    (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(p, tmp / rel)
            cfg = dict(src.config)
            if qc is not None:
                cfg["quantization_config"] = qc
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        if qc is not None and qc.get("quant_method") == "gptq":
            (tmp / "quantize_config.json").write_text(json.dumps(
                {k: v for k, v in qc.items() if k != "quant_method"} | {"quant_method": "gptq"}, indent=2) + "\n")
    rows = q.rows
    qparams = sum(int(np.prod(r["shape"])) for r in rows)
    result = {
        "input": str(src.path), "output": str(out), "kind": src.kind, "method": opts.method, "bits": bits,
        "layers": len(rows), "quantized_params": qparams,
        "bits_per_param": sum(r["bits_per_param"] * np.prod(r["shape"]) for r in rows) / max(qparams, 1),
        "input_bytes": src.bytes_on_disk,
        "output_bytes": int(sum(f.stat().st_size for f in files if f.suffix == ".safetensors")),
        "shards": len([f for f in files if f.suffix == ".safetensors"]),
        "per_layer": rows,
        "kept_in_float": [k[: -len(".weight")] if k.endswith(".weight") else k for k in kept_float],
        "loaders": spec.layout.loader, "notes": notes, **extra,
    }
    return result
