"""``quantize sparsify INPUT --pattern 2:4 --out DIR [--calib TEXT]``.

Scores: ``|w|`` (magnitude), or with ``--calib`` (model folders) ``|w| * ||x_j||_2``, the
weight times the norm of its input feature over the calibration text (Wanda, Sun et al.
2023), which keeps weights that meet large activations. The 2 largest scores of each group
of 4 along the input dimension survive (``quantize.mask_2to4``).

Output: ``model.safetensors`` with the pruned weights in place (dense, loads anywhere; a
sparse-tensor-core runtime compresses it), ``sparse24.safetensors`` with the compressed
form (``<name>.values`` float32 (out, in/2), ``<name>.meta`` uint8 (out, in/4), from
``quantize.compress_2to4``), config and tokenizer files copied, ``manifest.json``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.core.kernels import call
from gpuforge.plugins.quantize import model_io


def sparsify(run, input_path: str, out: str, pattern: str = "2:4", calib: str | None = None,
             targets: str | None = None, ignore: str | None = None) -> dict:
    """Prune into the output folder ``out`` of the command runtime's ``run`` (kernels on
    ``run.device`` through the registry; the runtime writes the manifest)."""
    if pattern != "2:4":
        raise UsageError(f"--pattern {pattern!r}: only 2:4 is supported (the pattern sparse tensor cores run)")
    src = run.input(input_path, "INPUT")
    if calib is not None:
        run.input(calib, "--calib file")
    dst = run.output(out, kind="dir")
    kind, tensors, config = model_io.load_input(src)
    linear_keys = None
    norms: dict[str, np.ndarray] = {}
    if kind == "folder":
        from gpuforge.plugins.quantize.runner import _find_key

        model, tok = model_io.load_hf(src, config)
        by_mod = {m: _find_key(tensors, m) for m in model_io.linear_modules(model)}
        linear_keys = {k for k in by_mod.values() if k}
        if calib is not None:
            from gpuforge.plugins.quantize.evaluate import capture_inputs

            lines = model_io.read_lines(calib, model_io.CALIB_TEXT)[:64]
            xs = capture_inputs(model, tok, [m for m, k in by_mod.items() if k], lines, 128)
            norms = {by_mod[m]: np.linalg.norm(x, axis=0).astype(np.float32) for m, x in xs.items()}
    elif calib is not None:
        raise UsageError("--calib needs a model folder (activations); a bare state dict is pruned by magnitude")
    names = model_io.select_targets(tensors, linear_keys, targets, ignore)
    if not names:
        raise BadInputError(f"no 2-D floating weights of {src} match --targets/--ignore; nothing to sparsify")
    for k in names:
        if tensors[k].shape[1] % 4:
            raise BadInputError(f"{k} has {tensors[k].shape[1]} input features, not a multiple of 4; --ignore it")
        if not np.isfinite(tensors[k]).all():
            raise BadInputError(f"tensor {k} of {src} holds NaN or inf; fix or --ignore it")
    pruned = dict(tensors)
    compressed: dict[str, np.ndarray] = {}
    rows = []
    dense_bytes = comp_bytes = 0
    for k in names:
        w = np.ascontiguousarray(tensors[k], dtype=np.float32)
        score = np.abs(w) * norms[k][None, :] if k in norms else np.abs(w)
        mask = call("quantize.mask_2to4", np.ascontiguousarray(score, dtype=np.float32))
        vals, meta = call("quantize.compress_2to4", w, mask)
        pruned[k] = np.where(mask, w, 0).astype(tensors[k].dtype)
        base = k[: -len(".weight")] if k.endswith(".weight") else k
        compressed[base + ".values"], compressed[base + ".meta"] = vals, meta
        rel = float(np.linalg.norm(w - pruned[k]) / max(np.linalg.norm(w), 1e-30))
        rows.append({"name": k, "shape": list(w.shape), "weight_rel_err": rel, "scored_by": "wanda" if k in norms else "magnitude"})
        dense_bytes += w.nbytes
        comp_bytes += vals.nbytes + meta.nbytes
    from safetensors.numpy import save_file

    tmp = dst.tmp
    save_file({k: np.ascontiguousarray(v) for k, v in pruned.items()}, str(tmp / model_io.WEIGHTS_NAME),
              metadata={"format": "pt"})
    save_file(compressed, str(tmp / "sparse24.safetensors"), metadata={"pattern": "2:4"})
    if kind == "folder":
        for p in src.rglob("*"):
            rel = p.relative_to(src)
            if p.is_file() and p.suffix not in (".safetensors", ".bin", ".pt", ".pth") and not rel.name.startswith("."):
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(p, tmp / rel)
    result = {"input": str(src), "output": str(out), "pattern": pattern, "layers": len(rows),
              "dense_bytes": dense_bytes, "compressed_bytes": comp_bytes,
              "mean_weight_rel_err": float(np.mean([r["weight_rel_err"] for r in rows])), "per_layer": rows}
    return result
