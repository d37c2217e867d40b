"""LoRA layers (Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models")
and PEFT-compatible adapter folders.

    h = W0 x + (alpha / r) * B A dropout(x)        (LoRA eq. 3; A random, B = 0 at init)

Our own modules are used for training; the adapter folder is written exactly as
peft 0.21 writes it (``adapter_model.safetensors`` with keys
``base_model.model.<module path>.lora_A.weight`` / ``.lora_B.weight`` and an
``adapter_config.json`` with peft's LoraConfig fields), so ``peft.PeftModel`` loads
ours and we load peft's. What peft has no field for (the task head, which base the
adapter belongs to) goes into ``gpuforge_adapter.json`` and ``head.safetensors``.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gpuforge.core.errors import BadInputError, UnsupportedError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
OUR_META = "gpuforge_adapter.json"
HEAD_WEIGHTS = "head.safetensors"
PEFT_PREFIX = "base_model.model."


class LoRALinear(nn.Module):
    """A frozen linear layer (``base_layer``: nn.Linear or an NF4 linear) plus a trainable
    low-rank update. Attribute names match peft's so module paths line up."""

    def __init__(self, base_layer: nn.Module, r: int, alpha: float, dropout: float = 0.0, rslora: bool = False):
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.r = r
        self.scaling = alpha / math.sqrt(r) if rslora else alpha / r
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        dev = next(base_layer.parameters(), torch.empty(0)).device
        self.lora_A = nn.Linear(self.in_features, r, bias=False, device=dev)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, device=dev)
        # peft's default init (init_lora_weights=True): kaiming-uniform A, zero B.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        for p in base_layer.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)
        return out + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling


def linear_names(model: nn.Module) -> list[str]:
    """Paths of every nn.Linear (or NF4 linear) in ``model``, in module order."""
    from gpuforge.plugins.finetune.qlora import NF4Linear

    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, NF4Linear)) and n]


def select_targets(model: nn.Module, targets: str | list[str], exclude: tuple[str, ...] = ()) -> list[str]:
    """Module paths LoRA goes on. ``all-linear``: every linear layer except the output
    embedding (as peft) and ``exclude`` prefixes; a string: a regex that must match the
    whole module path (peft's rule for a string); a list: peft's suffix match."""
    names = linear_names(model)
    if targets == "all-linear":
        out_emb = None
        get_out = getattr(model, "get_output_embeddings", None)
        if callable(get_out):
            out_emb = get_out()
        chosen = [n for n in names if model.get_submodule(n) is not out_emb and not n.startswith(exclude)]
    elif isinstance(targets, str):
        try:
            rx = re.compile(targets)
        except re.error as exc:
            raise BadInputError(f"--targets {targets!r} is not a valid regular expression: {exc}") from None
        chosen = [n for n in names if rx.fullmatch(n)]
    else:
        chosen = [n for n in names if any(n == t or n.endswith("." + t) for t in targets)]
    if not chosen:
        sample = ", ".join(names[:6])
        raise BadInputError(f"--targets {targets!r} matches no linear layer of the model (its linear layers look like: "
                            f"{sample}, ...); pass all-linear or a regex over those paths")
    return chosen


def inject(model: nn.Module, targets: list[str], r: int, alpha: float, dropout: float = 0.0,
           rslora: bool = False) -> dict[str, LoRALinear]:
    """Replace each target linear by a LoRALinear; freeze every base parameter."""
    if r < 1:
        raise BadInputError(f"--r {r}: the LoRA rank must be at least 1")
    for p in model.parameters():
        p.requires_grad_(False)
    layers = {}
    for name in targets:
        base = model.get_submodule(name)
        if r > min(base.in_features, base.out_features):
            raise BadInputError(f"--r {r} is larger than layer {name} ({base.out_features}x{base.in_features}); "
                                f"use --r <= {min(base.in_features, base.out_features)}")
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = LoRALinear(base, r, alpha, dropout, rslora)
        setattr(parent, child, layer)
        layers[name] = layer
    return layers


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter's tensors under peft's key names."""
    out = {}
    for name, layer in lora_layers(model).items():
        out[f"{PEFT_PREFIX}{name}.lora_A.weight"] = layer.lora_A.weight.detach().cpu().contiguous()
        out[f"{PEFT_PREFIX}{name}.lora_B.weight"] = layer.lora_B.weight.detach().cpu().contiguous()
    return out


def load_lora_state(model: nn.Module, state: dict[str, torch.Tensor], where: str = "adapter") -> None:
    layers = lora_layers(model)
    seen = set()
    for key, value in state.items():
        m = re.fullmatch(re.escape(PEFT_PREFIX) + r"(.+)\.(lora_[AB])(?:\.[^.]+)?\.weight", key)
        if not m or m.group(1) not in layers:
            raise BadInputError(f"{where}: tensor {key} names no LoRA layer of this model; the adapter was made "
                                f"for a different base model")
        param = getattr(layers[m.group(1)], m.group(2)).weight
        if tuple(param.shape) != tuple(value.shape):
            raise BadInputError(f"{where}: {key} has shape {tuple(value.shape)} but this model needs "
                                f"{tuple(param.shape)}; the adapter was made for a different base model")
        with torch.no_grad():
            param.copy_(value.to(param.dtype))
        seen.add(key)
    missing = [k for k in lora_state_dict(model) if k not in seen]
    if missing:
        raise BadInputError(f"{where}: no tensor for {missing[0]} ({len(missing)} missing); the adapter is incomplete")


def merge(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its base weight (W = W0 + s B A) and put the plain
    linear back; an NF4 base is dequantized first."""
    from gpuforge.plugins.finetune.qlora import NF4Linear

    for name, layer in list(lora_layers(model).items()):
        base = layer.base_layer
        if isinstance(base, NF4Linear):
            base = base.to_linear()
        with torch.no_grad():
            base.weight += layer.delta_weight().to(base.weight.dtype)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, base)
    return model


def peft_config(base_path: str, model: nn.Module, targets: list[str], r: int, alpha: float, dropout: float,
                rslora: bool = False) -> dict[str, Any]:
    """adapter_config.json with the fields and defaults peft 0.21 writes."""
    cls = type(model)
    return {
        "alora_invocation_tokens": None, "alpha_pattern": {}, "arrow_config": None,
        "auto_mapping": {"base_model_class": cls.__name__, "parent_library": cls.__module__},
        "base_model_name_or_path": str(base_path), "bias": "none", "corda_config": None,
        "ensure_weight_tying": False, "eva_config": None, "exclude_modules": None, "fan_in_fan_out": False,
        "inference_mode": True, "init_lora_weights": True, "kasa_config": None, "layer_replication": None,
        "layers_pattern": None, "layers_to_transform": None, "loftq_config": {}, "lora_alpha": alpha,
        "lora_bias": False, "lora_dropout": dropout, "lora_ga_config": None, "megatron_config": None,
        "megatron_core": "megatron.core", "modules_to_save": None, "monteclora_config": None, "peft_type": "LORA",
        "peft_version": "0.21.2", "qalora_group_size": 16, "r": r, "rank_pattern": {}, "revision": None,
        # Full module paths: peft's suffix rule matches exactly these layers and no others.
        "target_modules": sorted(targets), "target_parameters": None, "task_type": None,
        "trainable_token_indices": None, "use_bdlora": None, "use_dora": False, "use_qalora": False,
        "use_rslora": rslora, "velora_config": None,
    }


def base_fingerprint(model: nn.Module) -> dict[str, Any]:
    """What must agree between an adapter and the base it is loaded into."""
    cfg = getattr(model, "config", None)
    keys = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size", "n_embd", "n_layer")
    return {k: getattr(cfg, k) for k in keys if cfg is not None and hasattr(cfg, k)}


def save_adapter(folder: Path, model: nn.Module, cfg: dict[str, Any], meta: dict[str, Any],
                 head: dict[str, torch.Tensor] | None = None) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    save_file(lora_state_dict(model), str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt"})
    (folder / ADAPTER_CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    (folder / OUR_META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if head:
        save_file({k: v.detach().cpu().contiguous() for k, v in head.items()}, str(folder / HEAD_WEIGHTS))


def read_adapter(folder: str | Path) -> tuple[dict, dict, dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
    """(peft config, our metadata or {}, LoRA tensors, head tensors or None); one clear
    line for anything missing or malformed."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError(f"adapter folder not found: {folder}")
    if not (folder / ADAPTER_WEIGHTS).is_file() and (folder / "adapter_model.bin").is_file():
        raise BadInputError(f"{folder} holds adapter_model.bin: pickle files are not read; convert to safetensors "
                            "(peft: model.save_pretrained(folder, safe_serialization=True))")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).is_file():
            raise BadInputError(f"{folder} is not an adapter folder: {name} is missing")
    try:
        cfg = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"malformed {folder / ADAPTER_CONFIG}: {exc}") from None
    if not isinstance(cfg, dict):
        raise BadInputError(f"malformed {folder / ADAPTER_CONFIG}: expected a JSON object")
    if cfg.get("peft_type", "LORA") != "LORA":
        raise UnsupportedError(f"{folder}: peft_type {cfg.get('peft_type')} is not supported (only LORA)")
    for flag in ("use_dora", "fan_in_fan_out"):
        if cfg.get(flag):
            raise UnsupportedError(f"{folder}: {flag}=true is not supported by gpuforge's LoRA layers")
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise UnsupportedError(f"{folder}: per-layer rank_pattern/alpha_pattern is not supported")
    try:
        meta = json.loads((folder / OUR_META).read_text()) if (folder / OUR_META).is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"malformed {folder / OUR_META}: {exc}") from None
    try:
        state = load_file(str(folder / ADAPTER_WEIGHTS))
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise BadInputError(f"cannot read {folder / ADAPTER_WEIGHTS}: {exc}") from None
    try:
        head = load_file(str(folder / HEAD_WEIGHTS)) if (folder / HEAD_WEIGHTS).is_file() else None
    except Exception as exc:
        raise BadInputError(f"cannot read {folder / HEAD_WEIGHTS}: {exc}") from None
    for name, tensors in ((ADAPTER_WEIGHTS, state), (HEAD_WEIGHTS, head or {})):
        bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise BadInputError(f"{folder / name}: tensor {bad[0]} holds NaN or inf; the adapter is damaged")
    return cfg, meta, state, head


def apply_adapter(model: nn.Module, folder: str | Path, dropout: float | None = None) -> tuple[dict, dict, Any]:
    """Load an adapter folder (ours or peft's) into ``model``: check it belongs to this
    base, inject LoRA layers where it says, copy its tensors. Returns (cfg, meta, head)."""
    cfg, meta, state, head = read_adapter(folder)
    fp = meta.get("base")
    if fp:
        here = base_fingerprint(model)
        diff = [k for k in fp if k in here and fp[k] != here[k]]
        if diff:
            k = diff[0]
            raise BadInputError(f"adapter {folder} was made for a different base model ({k}={fp[k]}, this model has "
                                f"{here[k]}); pass the base it was trained on")
    names = sorted({m.group(1) for k in state
                    if (m := re.fullmatch(re.escape(PEFT_PREFIX) + r"(.+)\.lora_[AB](?:\.[^.]+)?\.weight", k))})
    if not names:
        raise BadInputError(f"{folder}/{ADAPTER_WEIGHTS} holds no LoRA tensors (keys like "
                            f"{PEFT_PREFIX}<module>.lora_A.weight)")
    missing = [n for n in names if not _has_linear(model, n)]
    if missing:
        raise BadInputError(f"adapter {folder} targets module {missing[0]} which this model does not have; the adapter "
                            f"was made for a different base model")
    try:
        r, alpha, p = int(cfg["r"]), float(cfg["lora_alpha"]), float(cfg.get("lora_dropout", 0.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadInputError(f"{folder}/{ADAPTER_CONFIG}: r and lora_alpha must be numbers ({exc!r})") from None
    inject(model, names, r, alpha, p if dropout is None else dropout, bool(cfg.get("use_rslora", False)))
    load_lora_state(model, state, where=str(folder))
    return cfg, meta, head


def _has_linear(model: nn.Module, name: str) -> bool:
    from gpuforge.plugins.finetune.qlora import NF4Linear

    try:
        return isinstance(model.get_submodule(name), (nn.Linear, NF4Linear))
    except AttributeError:
        return False
