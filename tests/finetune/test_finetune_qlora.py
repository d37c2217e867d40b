"""QLoRA base through the quantize plugin's registered NF4 kernels."""
from __future__ import annotations

import pytest
import torch

from gpuforge.core.kernels import kernel_specs

pytestmark = pytest.mark.skipif(
    not {"quantize.nf4_encode", "quantize.nf4_decode"} <= set(kernel_specs()),
    reason="the quantize plugin's NF4 kernels are not registered")


def test_nf4_base_bits_and_outputs(tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    from gpuforge.plugins.finetune import lora as L
    from gpuforge.plugins.finetune.qlora import NF4Linear, dequantize_model, quantize_model

    model = AutoModel.from_pretrained(str(tiny_bert)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    enc = tok(["The movie was not good."], return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc).last_hidden_state
    rep = quantize_model(model)
    assert rep["quantized_bits_per_param"] <= 4.2 and rep["base_bits_per_param"] <= 4.2, rep
    with torch.no_grad():
        q = model(**enc).last_hidden_state
    assert torch.nn.functional.cosine_similarity(q.flatten(), ref.flatten(), dim=0) > 0.95
    # LoRA on an NF4 base: identity at init, merge dequantizes
    targets = L.select_targets(model, "all-linear", exclude=("pooler",))
    assert isinstance(model.get_submodule(targets[0]), NF4Linear)
    L.inject(model, targets, r=4, alpha=8)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**enc).last_hidden_state, q)
        for layer in L.lora_layers(model).values():
            layer.lora_B.weight.normal_(0, 0.05)
        adapted = model(**enc).last_hidden_state
        L.merge(model)
        dequantize_model(model)
        assert not any(isinstance(m, NF4Linear) for m in model.modules())
        torch.testing.assert_close(model(**enc).last_hidden_state, adapted, rtol=1e-4, atol=1e-4)


def test_qlora_cli_run(run_cli, tiny_bert, small_data, tmp_path):
    out = tmp_path / "q"
    r = run_cli("finetune", "lora", str(tiny_bert), "--data", str(small_data["train"]), "--out", str(out), "--qlora",
                "--max-steps", "3", "--batch-size", "8", "--r", "4", "--max-len", "32", "--json")
    assert r.code == 0, r
    assert r.json()["qlora"]["base_bits_per_param"] <= 4.2
    e = run_cli("finetune", "eval", str(tiny_bert), "--adapter", str(out), "--data", str(small_data["test"]), "--json")
    assert e.code == 0, e
