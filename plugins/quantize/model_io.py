"""Reading the inputs of ``quantize run/eval``: a Hugging Face model folder (config.json +
safetensors, loaded with transformers, offline) or a single ``.safetensors`` state dict;
calibration text; bad inputs as one-line errors."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError, UsageError

DATA = Path(__file__).with_name("data")
CALIB_TEXT = DATA / "calibration.txt"
HELDOUT_TEXT = DATA / "heldout.txt"
WEIGHTS_NAME = "model.safetensors"


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def safetensors_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a file as NumPy arrays (bf16 widened to float32); one-line errors."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        if "bf16" in str(exc).lower() or "bfloat16" in str(exc).lower():
            from safetensors.torch import load_file as load_torch

            return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
                    for k, v in load_torch(str(path)).items()}
        raise BadInputError(f"{path} is not a readable safetensors file ({str(exc).splitlines()[0][:120]}); "
                            "pass a .safetensors state dict or a model folder") from None


def load_input(path: str | Path) -> tuple[str, dict[str, np.ndarray], dict | None]:
    """(kind "folder"|"file", tensors, config or None)."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"input not found: {path}")
    if path.is_dir():
        if not is_model_folder(path):
            raise BadInputError(f"{path} is a folder without config.json; pass a Hugging Face model folder "
                                "or a .safetensors file")
        files = safetensors_files(path)
        if not files:
            raise BadInputError(f"no .safetensors weights in {path} (only safetensors model folders are read)")
        tensors: dict[str, np.ndarray] = {}
        for f in files:
            tensors.update(read_safetensors(f))
        try:
            config = json.loads((path / "config.json").read_text())
        except json.JSONDecodeError as exc:
            raise BadInputError(f"malformed {path / 'config.json'}: {exc}") from None
        return "folder", tensors, config
    if path.suffix != ".safetensors":
        raise BadInputError(f"{path} is not a .safetensors file; pass a .safetensors state dict or a model folder")
    return "file", read_safetensors(path), None


def compile_regex(pattern: str | None, what: str):
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"{what} {pattern!r} is not a valid regular expression: {exc}") from None


def select_targets(tensors: dict[str, np.ndarray], linear_weights: set[str] | None, targets: str | None,
                   ignore: str | None) -> list[str]:
    """Names of the weights to quantize: 2-D floating tensors (in a model folder: nn.Linear
    weights) whose name matches ``targets`` and not ``ignore``."""
    t_re, i_re = compile_regex(targets, "--targets"), compile_regex(ignore, "--ignore")
    out = []
    for name, t in tensors.items():
        if t.ndim != 2 or not np.issubdtype(t.dtype, np.floating):
            continue
        if linear_weights is not None and name not in linear_weights:
            continue
        if t_re is not None and not t_re.search(name):
            continue
        if i_re is not None and i_re.search(name):
            continue
        out.append(name)
    return out


def read_lines(path: str | Path | None, default: Path) -> list[str]:
    p = Path(path) if path else default
    if not p.is_file():
        raise BadInputError(f"text file not found: {p}")
    try:
        lines = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except UnicodeDecodeError:
        raise BadInputError(f"{p} is not UTF-8 text; pass a plain text file, one sample per line") from None
    if not lines:
        raise BadInputError(f"{p} holds no text; pass a file with one sample per line")
    return lines


def load_hf(folder: Path, config: dict | None = None):
    """(model, tokenizer) from a model folder, offline; the model in eval mode, float32."""
    from gpuforge.core.hub import offline

    with offline():
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

        try:
            cfg = AutoConfig.from_pretrained(str(folder))
            causal = is_causal(config or cfg.to_dict())
            cls = AutoModelForCausalLM if causal else AutoModel
            model = cls.from_pretrained(str(folder), dtype="float32")
        except Exception as exc:  # transformers raises many types for a folder it cannot read
            raise BadInputError(f"transformers cannot load {folder}: {str(exc).splitlines()[0][:160]}") from None
        model.eval()
        tok = None
        try:
            tok = AutoTokenizer.from_pretrained(str(folder))
        except Exception:
            tok = None
    return model, tok


def is_causal(config: dict) -> bool:
    return any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in config.get("architectures") or [])


def linear_modules(model) -> dict[str, object]:
    import torch

    return {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def find_blocks(model) -> str | None:
    """Module name of the transformer blocks (``encoder.layer``, ``model.layers``...): the
    ``nn.ModuleList`` of same-class modules holding linear layers with the most parameters."""
    import torch

    best, best_n = None, 0
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.ModuleList) or len(mod) == 0:
            continue
        kinds = {type(child) for child in mod}
        if len(kinds) != 1 or not any(isinstance(m, torch.nn.Linear) for m in mod[0].modules()):
            continue
        n = sum(p.numel() for p in mod.parameters())
        if n > best_n:
            best, best_n = name, n
    return best


def forward_lines(model, tok, lines: list[str], seqlen: int, hooked: list[str], on_call) -> None:
    """Run ``model`` on each line as its own sequence (no padding tokens), calling
    ``on_call(name, inputs, output)`` whenever a module named in ``hooked`` runs; the
    hooks are removed afterwards. Calibration (GPTQ Hessians), per-layer evaluation
    inputs and the KV analysis all collect their activations this way."""
    import torch

    mods = dict(model.named_modules())
    hooks = [mods[n].register_forward_hook(lambda m, i, o, n=n: on_call(n, i, o)) for n in hooked]
    try:
        with torch.no_grad():
            for line in lines:
                model(**tokenize(tok, [line], seqlen))
    finally:
        for h in hooks:
            h.remove()


def tokenize(tok, lines: list[str], seqlen: int):
    if tok is None:
        raise BadInputError("the model folder has no tokenizer; calibration and eval need one")
    return tok(lines, padding=True, truncation=True, max_length=seqlen, return_tensors="pt")
