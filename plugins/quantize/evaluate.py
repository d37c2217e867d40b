"""``gpuforge quantize eval ORIGINAL QUANTIZED``: how far the quantized model is from the
original.

- per layer: relative weight error ``||W_q - W||_F / ||W||_F`` and relative output error
  ``||X W_q^T - X W^T||_F / ||X W^T||_F`` on the inputs ``X`` that layer sees in the
  ORIGINAL model on the evaluation text (the GPTQ objective, eq. 1 of the paper);
- encoders: cosine similarity of the pooled sentence embeddings (mean pooling over the
  attention mask, then L2 normalization, as sentence-transformers' MiniLM) against the
  original, per sentence (mean and min);
- causal LMs: perplexity of both models over the text joined, windows of ``seqlen``
  tokens moved by ``stride`` (only the new tokens of each window are scored).
The quantized model runs through the plugin's modules (:mod:`.modules`), i.e. through
the registry's numba-cpu kernels on the CPU.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError
from gpuforge.plugins.quantize import model_io


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    d = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b)) / d if d > 0 else float(np.linalg.norm(a - b))


def weight_errors(orig: dict[str, np.ndarray], quantized: dict[str, np.ndarray]) -> list[dict]:
    """Per quantized layer of a state dict: relative weight error (no model needed)."""
    from gpuforge.plugins.quantize import methods

    rows = []
    for prefix, layout in methods.find_layers(quantized).items():
        key = prefix + ".weight"
        if key not in orig:
            raise BadInputError(f"the original has no tensor {key} for quantized layer {prefix}")
        sub = methods.layer_tensors(quantized, prefix)
        wq = methods.decode(layout, sub, {})
        w = np.asarray(orig[key], np.float32)
        rows.append({"layer": prefix, "method": methods.describe(layout, sub, {})["label"],
                     "weight_rel_err": _rel(np.asarray(wq), w)})
    return rows


def mean_pool(last_hidden, mask):
    import torch

    m = mask.unsqueeze(-1).to(last_hidden.dtype)
    emb = (last_hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(emb, p=2, dim=1)


def embed(model, tok, lines: list[str], seqlen: int):
    import torch

    with torch.no_grad():
        enc = model_io.tokenize(tok, lines, seqlen)
        out = model(**enc)
        return mean_pool(out.last_hidden_state, enc["attention_mask"])


def capture_inputs(model, tok, names: list[str], lines: list[str], seqlen: int) -> dict:
    """{module name: X (tokens, in)} of each Linear in ``names`` on ``lines`` (no padding)."""
    import torch

    got: dict[str, list] = {n: [] for n in names}
    model_io.forward_lines(model, tok, lines, seqlen, names,
                           lambda n, i, o: got[n].append(i[0].reshape(-1, i[0].shape[-1])))
    return {n: torch.cat(v).numpy() for n, v in got.items()}


def perplexity(model, tok, text: str, seqlen: int, stride: int) -> float:
    import torch

    ids = tok(text, return_tensors="pt")["input_ids"]
    nll, count, prev = 0.0, 0, 0
    with torch.no_grad():
        for begin in range(0, ids.shape[1], stride):
            end = min(begin + seqlen, ids.shape[1])
            trg = end - prev
            x = ids[:, begin:end]
            labels = x.clone()
            labels[:, :-trg] = -100
            out = model(x, labels=labels)
            n = int((labels[:, 1:] != -100).sum())
            nll += float(out.loss) * n
            count += n
            prev = end
            if end == ids.shape[1]:
                break
    return math.exp(nll / max(count, 1))


def evaluate(original: str, quantized: str, data: str | None, seqlen: int = 128, stride: int = 64,
             max_tokens_per_layer: int = 4096) -> dict:
    from gpuforge.plugins.quantize import methods
    from gpuforge.plugins.quantize.methods import find_layers
    from gpuforge.plugins.quantize.modules import load_quantized_model

    orig_p, quant_p = Path(original), Path(quantized)
    osrc = model_io.TensorSource(orig_p)
    qsrc = model_io.TensorSource(quant_p, require_config=False)
    okind, oconfig, qkind = osrc.kind, osrc.config, qsrc.kind
    otensors, qtensors = osrc.lazy(), qsrc.lazy()     # read a layer at a time
    groups = find_layers(qtensors)
    if not groups:
        raise BadInputError(f"{quant_p} holds no quantized layers (no qweight / quant_state / SCB tensors)")
    lines = model_io.read_lines(data, model_io.HELDOUT_TEXT)
    if okind == "file" or qkind == "file":
        rows = weight_errors(otensors, qtensors)
        return {"original": str(orig_p), "quantized": str(quant_p), "layers": rows,
                "summary": {"mean_weight_rel_err": float(np.mean([r["weight_rel_err"] for r in rows]))}}

    import torch

    model, tok = model_io.load_hf(orig_p, oconfig)
    qmodel, qtok, qconfig = load_quantized_model(quant_p)
    tok = tok or qtok
    qmods = dict(qmodel.named_modules())
    names = [n for n in groups if n in dict(model.named_modules())]
    xs = capture_inputs(model, tok, names, lines, seqlen)
    omods = dict(model.named_modules())
    rows = []
    for n in names:
        w = omods[n].weight.detach().numpy()
        wq = np.asarray(qmods[n].dequantized(), np.float32)
        x = xs[n][:max_tokens_per_layer]
        y = x @ w.T
        with torch.no_grad():
            yq = qmods[n](torch.from_numpy(x)).numpy()
            if omods[n].bias is not None:
                yq = yq - omods[n].bias.numpy()
        label = methods.describe(groups[n], methods.layer_tensors(qtensors, n), qconfig or {})["label"]
        rows.append({"layer": n, "method": label, "weight_rel_err": _rel(wq, w), "output_rel_err": _rel(yq, y)})
    summary: dict = {"layers": len(rows),
                     "mean_weight_rel_err": float(np.mean([r["weight_rel_err"] for r in rows])),
                     "mean_output_rel_err": float(np.mean([r["output_rel_err"] for r in rows]))}
    if model_io.is_causal(oconfig):
        text = "\n".join(lines)
        summary["perplexity_original"] = perplexity(model, tok, text, seqlen, stride)
        summary["perplexity_quantized"] = perplexity(qmodel, tok, text, seqlen, stride)
    else:
        e0 = embed(model, tok, lines, seqlen)
        e1 = embed(qmodel, tok, lines, seqlen)
        cos = (e0 * e1).sum(1).numpy()
        summary["embedding_cosine_mean"] = float(cos.mean())
        summary["embedding_cosine_min"] = float(cos.min())
        summary["sentences"] = len(lines)
    return {"original": str(orig_p), "quantized": str(quant_p), "layers": rows, "summary": summary}
