"""The table "product command -> kernels it dispatches", checked against the manifests
on the CPU (tests/test_command_kernels.py) and on simulated CUDA
(tests/test_command_kernels_cuda_sim.py), with the outputs of both runs compared.

Each entry builds its inputs in a folder, names the command's arguments (``{out}`` is
the output path), the kernels its manifest must list (every one of them, and no
other), and how to compare the CPU and CUDA outputs. Inputs are tiny: the simulator
runs each CUDA thread in Python.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path], None]
    """Writes the inputs into the folder."""
    args: list[str]
    """The command (after `gpuforge`), with {dir} and {out} placeholders."""
    kernels: frozenset[str]
    out: str = "out"
    """The output path under the folder (its manifest is read)."""
    compare: Callable[[Path, Path], None] | None = None
    """Checks the CPU output (first) against the CUDA output (second)."""
    global_args: list[str] = field(default_factory=list)

    def argv(self, folder: Path, out: Path) -> list[str]:
        return [a.format(dir=folder, out=out) for a in self.args]


def _image(folder: Path, h: int = 12, w: int = 16) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / "a.png")


def _rgba_image(folder: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (12, 16, 4), dtype=np.uint8), "RGBA").save(folder / "a.png")


def _gray16_image(folder: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16)).save(folder / "a.png")


def _same_image(tolerance: int) -> Callable[[Path, Path], None]:
    def check(a: Path, b: Path) -> None:
        from PIL import Image

        x = np.asarray(Image.open(a)).astype(int)
        y = np.asarray(Image.open(b)).astype(int)
        assert x.shape == y.shape
        # float32 convolutions give the same uint8 pixels up to rounding at .5 boundaries
        assert np.abs(x - y).max() <= tolerance, np.abs(x - y).max()

    return check


CASES: list[Case] = [
    Case("superres upscale", _image, ["superres", "upscale", "{dir}/a.png", "--scale", "3", "--out", "{out}"],
         frozenset({"superres.bicubic_resize", "superres.shuffle_ycbcr_rgb"}), out="up.png",
         compare=_same_image(1)),
    Case("superres upscale --tile", lambda d: _image(d, 20, 20),
         ["superres", "upscale", "{dir}/a.png", "--scale", "2", "--tile", "8", "--out", "{out}"],
         frozenset({"superres.bicubic_resize", "superres.shuffle_ycbcr_rgb", "superres.tile_split",
                    "superres.tile_stitch"}), out="up.png", compare=_same_image(1)),
    # RGBA with -s 2.5: x3 network, alpha and the final resize through the bicubic kernel
    Case("superres upscale RGBA -s 2.5", _rgba_image, ["superres", "upscale", "{dir}/a.png", "-s", "2.5", "--out", "{out}"],
         frozenset({"superres.bicubic_resize", "superres.shuffle_ycbcr_rgb"}), out="up.png", compare=_same_image(2)),
    # 16-bit gray: the network on the plane only (no chroma, no fused RGB kernel)
    Case("superres upscale 16-bit gray --tile", _gray16_image,
         ["superres", "upscale", "{dir}/a.png", "--scale", "2", "--tile", "8", "--out", "{out}"],
         frozenset({"superres.tile_split", "superres.tile_stitch"}), out="up.png", compare=_same_image(2)),
]


# ------------------------------------------------------------------ finetune
# A one-layer BERT, hidden 32, with a vocabulary of the training words (a few hundred
# embedding rows; 9k NF4 weights that the simulator dequantizes per forward in about a
# second), 8 labelled rows.
_FT_STEPS = ["--max-steps", "2", "--batch-size", "4", "--r", "2", "--alpha", "4", "--max-len", "16",
             "--checkpoint-every", "100", "--optimizer", "adamw"]   # auto would pick torch's step
# the NF4 base is the quantize plugin's NF4Linear/NF4Embedding: bitsandbytes' double
# quantization of the block scales through quantize.absmax_dq_*
_QLORA_KERNELS = frozenset({"quantize.nf4_encode", "quantize.nf4_decode", "quantize.absmax_dq_encode",
                            "quantize.absmax_dq_decode"})


def _ft_inputs(folder: Path) -> None:
    import json
    import re

    from tiny_models import make_tiny_bert

    src = Path(__file__).resolve().parents[1] / "plugins" / "finetune" / "data" / "negsent_train.jsonl"
    lines = src.read_text().splitlines()[:8]
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    words = {w for line in lines for w in re.findall(r"[a-z]+", json.loads(line)["text"].lower())}
    make_tiny_bert(folder / "m", hidden=32, layers=1, words=sorted(words), max_positions=32)


def _ft_inputs_with_qlora_adapter(folder: Path) -> None:
    from gpuforge.plugins.finetune.api import train_adapter

    _ft_inputs(folder)
    train_adapter(folder / "m", folder / "train.jsonl", folder / "ad", qlora=True, max_steps=1, batch_size=4, r=2,
                  max_len=16)


def _same_adapter(a: Path, b: Path) -> None:
    import json

    import torch
    from safetensors.torch import load_file

    x, y = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert x.keys() == y.keys()
    for k in x:
        # float32 AdamW on two backends: the simulator runs the kernel's sqrt and division
        # in Python floats, so the updates differ by a few float32 ulps per step.
        torch.testing.assert_close(x[k], y[k], rtol=1e-4, atol=1e-6)
    # the first step's loss comes before any optimizer step: the forward passes (NF4
    # decode included) agree exactly
    first = [json.loads((d / "train_log.jsonl").read_text().splitlines()[0])["loss"] for d in (a, b)]
    assert first[0] == first[1], first


def _same_eval(a: Path, b: Path) -> None:
    import json

    # NF4 codes, block scales and their 8-bit double quantization are identical across
    # backends, so the dequantized weights and the metric are equal, not just close
    x, y = json.loads(a.read_text()), json.loads(b.read_text())
    assert x["value"] == y["value"] and x["examples"] == y["examples"] == 8, (x, y)


CASES += [
    Case("finetune lora", _ft_inputs,
         ["finetune", "lora", "{dir}/m", "--data", "{dir}/train.jsonl", "--out", "{out}", *_FT_STEPS],
         frozenset({"finetune.adamw_step"}), out="ad", compare=_same_adapter),
    Case("finetune lora --qlora", _ft_inputs,
         ["finetune", "lora", "{dir}/m", "--data", "{dir}/train.jsonl", "--out", "{out}", "--qlora", *_FT_STEPS],
         frozenset({"finetune.adamw_step"}) | _QLORA_KERNELS, out="ad", compare=_same_adapter),
    Case("finetune eval (qlora adapter)", _ft_inputs_with_qlora_adapter,
         ["finetune", "eval", "{dir}/m", "--adapter", "{dir}/ad", "--data", "{dir}/train.jsonl", "--out", "{out}"],
         _QLORA_KERNELS, out="eval.json", compare=_same_eval),
]


# ------------------------------------------------------------------ fraud
# HDBSCAN's kNN and MST steps are the kernels (one algorithm and tie rule on every
# backend), so labels, probabilities and outlier scores are identical, not just close.
# (Prim, exact mode above 60 columns, is run on simulated CUDA by
# tests/fraud/test_fraud_hdbscan_cuda_sim.py; kept out of here for the suite's time.)
_FRAUD_HDBSCAN = ["--min-cluster-size", "10", "--min-samples", "4"]


def _fraud_points(n: int, d: int) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        from gpuforge.plugins.fraud.hdbscan.knn import _blobs

        np.save(folder / "x.npy", _blobs(2, n, d, centres=3))  # three blobs, 10% noise

    return make


def _fraud_clicks_of(sessions: int) -> Callable[[Path], None]:
    def make(folder: Path) -> None:
        from gpuforge.plugins.fraud.simulate import simulate

        simulate(sessions, 0.1, seed=2).to_parquet(folder / "clicks.parquet", index=False)

    return make


_fraud_clicks = _fraud_clicks_of(150)


def _same_table(*exact: str, close: tuple[str, ...] = ()) -> Callable[[Path, Path], None]:
    def check(a: Path, b: Path) -> None:
        import pandas as pd

        x, y = pd.read_parquet(a), pd.read_parquet(b)
        assert list(x.columns) == list(y.columns) and len(x) == len(y)
        for c in exact:
            assert np.array_equal(x[c].to_numpy(), y[c].to_numpy(), equal_nan=x[c].dtype.kind == "f"), c
        for c in close:
            # torch stays on the CPU under the simulator: the same kernels, the same floats
            np.testing.assert_allclose(x[c].to_numpy(), y[c].to_numpy(), rtol=0, atol=1e-6)

    return check


def _same_pipeline(a: Path, b: Path) -> None:
    import pandas as pd

    assert pd.read_parquet(a / "clusters.parquet")["label"].max() >= 1   # at least two clusters to agree on
    _same_table("session_id", "label", "probability", "outlier_score")(a / "clusters.parquet", b / "clusters.parquet")


def _fraud_cluster(a: Path, b: Path) -> None:
    import pandas as pd

    assert pd.read_parquet(a)["label"].max() >= 1   # at least two clusters to agree on
    _same_table("row", "label", "probability", "outlier_score")(a, b)


_FRAUD_CLUSTER = _fraud_cluster
CASES += [
    Case("fraud cluster exact", _fraud_points(120, 4),
         ["fraud", "cluster", "{dir}/x.npy", "--out", "{out}", *_FRAUD_HDBSCAN],
         frozenset({"fraud.knn", "fraud.mst"}), out="c.parquet", compare=_FRAUD_CLUSTER),
    # > 32 columns: approx mode's cells (GEMM path) with its NN-descent refine step. The
    # simulator's cost grows as rows^2 x columns: 60 x 33 (three clusters) runs in ~10 s
    # where 120 x 40 took ~100 s.
    Case("fraud cluster approx", _fraud_points(60, 33),
         ["fraud", "cluster", "{dir}/x.npy", "--out", "{out}", "--mode", "approx", "--min-cluster-size", "5",
          "--min-samples", "4"],
         frozenset({"fraud.knn_local", "fraud.knn_refine", "fraud.knn_forest", "fraud.mst"}), out="c.parquet",
         compare=_FRAUD_CLUSTER),
    # the Bi-LSTM on run.torch_device (the CPU under the simulator): no numba kernel
    Case("fraud embed", _fraud_clicks,
         ["fraud", "embed", "{dir}/clicks.parquet", "--out", "{out}", "--dim", "4", "--epochs", "1"],
         frozenset(), out="e.parquet", compare=_same_table("session_id", close=("e0", "e1", "e2", "e3"))),
    # 100 sessions, --min-cluster-size 5 --min-samples 2: two clusters and noise (150
    # sessions at 10/4 left every session noise, and took ~45 s in the simulator)
    Case("fraud pipeline --no-embed", _fraud_clicks_of(100),
         ["fraud", "pipeline", "{dir}/clicks.parquet", "--out", "{out}", "--no-embed", "--min-cluster-size", "5",
          "--min-samples", "2"],
         # 12 PCA columns: approx mode's exact kNN (approx.EXACT_KNN_COLUMNS)
         frozenset({"fraud.knn", "fraud.knn_forest", "fraud.mst"}), out="rep", compare=_same_pipeline),
]

from command_table_radiance import ROWS as _RADIANCE  # noqa: E402

CASES += [Case(i, make, args, frozenset(kernels), out=out, compare=cmp) for i, make, args, kernels, out, cmp in _RADIANCE]


# ------------------------------------------------------------------ quantize
# A safetensors state dict of two small linear weights (16x64 and 8x64): every block of
# 64 and every group of 32 is whole, so the simulator runs a few hundred threads.
def _q_state_dict(folder: Path) -> None:
    from safetensors.numpy import save_file

    from tiny_models import two_linears

    save_file(two_linears(np.random.default_rng(3), (16, 64), (8, 64)), str(folder / "sd.safetensors"))


def _q_nf4_output(folder: Path) -> None:
    from gpuforge.plugins.quantize.runner import Options, run

    _q_state_dict(folder)
    run(str(folder / "sd.safetensors"), str(folder / "q"), Options(method="nf4"))


def _same_files(*names: str) -> Callable[[Path, Path], None]:
    def check(a: Path, b: Path) -> None:
        # codes, scales and packed words are integers or exact float32 results of the
        # same arithmetic on both backends: the files are byte-identical
        for n in names:
            assert (a / n).read_bytes() == (b / n).read_bytes(), n

    return check


def _same_quantize_eval(a: Path, b: Path) -> None:
    import json

    # identical NF4 codes and scales dequantize to identical weights: equal errors
    x, y = json.loads(a.read_text()), json.loads(b.read_text())
    assert x["summary"] == y["summary"] and x["layers"] == y["layers"], (x, y)


CASES += [
    Case("quantize run nf4", _q_state_dict, ["quantize", "run", "{dir}/sd.safetensors", "--method", "nf4",
                                             "--out", "{out}"],
         frozenset({"quantize.nf4_encode", "quantize.absmax_dq_encode"}), out="q",
         compare=_same_files("model.safetensors")),
    Case("quantize run int8", _q_state_dict, ["quantize", "run", "{dir}/sd.safetensors", "--method", "int8",
                                              "--out", "{out}"],
         frozenset({"quantize.int8_vectorwise_quant"}), out="q", compare=_same_files("model.safetensors")),
    Case("quantize sparsify", _q_state_dict, ["quantize", "sparsify", "{dir}/sd.safetensors", "--out", "{out}"],
         frozenset({"quantize.mask_2to4", "quantize.compress_2to4"}), out="sp",
         compare=_same_files("model.safetensors", "sparse24.safetensors")),
    Case("quantize eval nf4", _q_nf4_output, ["quantize", "eval", "{dir}/sd.safetensors", "{dir}/q", "--out", "{out}"],
         frozenset({"quantize.nf4_decode", "quantize.absmax_dq_decode"}), out="eval.json",
         compare=_same_quantize_eval),
]


# GPTQ and KVQuant need a model (calibration activations, real keys and values): a
# one-layer Llama of hidden size 32 (its 10k weights are 10k simulated unpack threads).
# GPTQ's column updates are torch on the run's device (the CPU under the simulator); its
# packing into GPTQ's int32 words is the registry's.
def _q_tiny_llama(folder: Path) -> None:
    from tiny_models import make_tiny_llama

    make_tiny_llama(folder / "llama", hidden=32, intermediate=64, layers=1)


def _same_json(a: Path, b: Path) -> None:
    import json

    x, y = json.loads(a.read_text()), json.loads(b.read_text())
    assert x == y, (x, y)


CASES += [
    Case("quantize run gptq", _q_tiny_llama, ["quantize", "run", "{dir}/llama", "--method", "gptq", "--group-size",
                                              "32", "--nsamples", "2", "--seqlen", "16", "--out", "{out}"],
         frozenset({"kernels.pack_int32", "kernels.unpack_int32"}), out="qg",
         compare=_same_files("model.safetensors")),
    # KVQuant's analysis is torch on the run's device and dispatches no registry kernel:
    # the row checks that it runs there, records none, and gives the same numbers
    Case("quantize kv", _q_tiny_llama, ["quantize", "kv", "{dir}/llama", "--out", "{out}"], frozenset(),
         out="kv.json", compare=_same_json),
]
