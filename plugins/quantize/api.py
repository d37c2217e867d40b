"""The quantize plugin's Python surface, for other plugins (finetune's QLoRA) and users' code.

    from gpuforge.plugins.quantize.api import NF4Linear, load_quantized, quantize

    quantize("model/", "out/", "nf4")                                   # = gpuforge quantize run model/ --method nf4 --out out/
    q = load_quantized("out/")                                           # q.model, q.tokenizer, q.config, q.method
    q(["The weather is lovely today."])                                  # the model's output on tokenized texts
    layer = NF4Linear.from_linear(torch.nn.Linear(4096, 4096))      # QLoRA's frozen base layer
    model, tokenizer, config = load_quantized_model("out/")          # a `quantize run` folder
    model = load_streamed("model/", convert)    # filled module by module; convert() may swap modules

Everything here runs through the kernel registry (``quantize.nf4_encode`` ...), so the
quantize plugin must be enabled: :func:`require` says so in one line when it is not.
"""
from __future__ import annotations

from gpuforge.core.errors import UnsupportedError
from gpuforge.plugins.quantize.methods import (LayerJob, Layout, Method, all_methods, get_method, method_names,
                                               register)
from gpuforge.plugins.quantize.modules import (DequantizedLinear, GPTQLinear, Int8Linear, NF4Embedding, NF4Linear,
                                               load_quantized_model)
from gpuforge.plugins.quantize.skeleton import load_model as load_streamed

KERNELS = ("quantize.nf4_encode", "quantize.nf4_decode", "quantize.absmax_dq_encode", "quantize.absmax_dq_decode")

__all__ = ["DequantizedLinear", "GPTQLinear", "Int8Linear", "LayerJob", "Layout", "Method", "NF4Embedding", "NF4Linear",
           "Quantized", "all_methods", "get_method", "load_quantized", "load_quantized_model", "load_streamed",
           "method_names", "quantize", "register", "require"]


def quantize(model: str, out: str, method: str, *, force: bool = False, device: str = "cpu",
             shard_size: int | str = "2GB", calib_memory: int | str = "1GB", **options) -> dict:
    """``gpuforge quantize run MODEL --method METHOD --out OUT`` from Python (same checks,
    output transaction and manifest); ``options`` are the command's options by their
    Python names (``bits=4``, ``group_size=128``, ``block_size=64``, ``double_quant=True``,
    ``gptq=False``, ``nsamples=128`` ...). Returns the command's result."""
    from gpuforge.plugins.quantize.runner import Options, run

    try:
        opts = Options(method=method, **options)
    except TypeError as exc:
        from gpuforge.core.errors import UsageError

        raise UsageError(f"quantize(): {exc}") from None
    return run(str(model), str(out), opts, force=force, shard_size=shard_size, calib_memory=calib_memory,
               device=device)


class Quantized:
    """A `quantize run` output loaded with the plugin's modules (kernels through the registry)."""

    def __init__(self, model, tokenizer, config: dict):
        self.model, self.tokenizer, self.config = model, tokenizer, config

    @property
    def method(self) -> str | None:
        """The method that wrote the folder (``nf4``, ``int8``, ``gptq`` ...), from its config."""
        qc = self.config.get("quantization_config") or {}
        if qc.get("quant_method") == "bitsandbytes":
            return "int8" if qc.get("load_in_8bit") else qc.get("bnb_4bit_quant_type")
        return qc.get("quant_method")

    def __call__(self, texts: list[str] | str, max_length: int = 128):
        """The model's output (a transformers ``ModelOutput``) on the tokenized ``texts``."""
        import torch

        if self.tokenizer is None:
            from gpuforge.core.errors import BadInputError

            raise BadInputError("this quantized folder has no tokenizer; call .model with token ids instead")
        if isinstance(texts, str):
            texts = [texts]
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        with torch.no_grad():
            return self.model(**enc)


def load_quantized(path: str) -> Quantized:
    """A `quantize run` output folder, built module by module (never the float model):
    NF4/FP4, LLM.int8() and GPTQ layers as the plugin's modules, in eval mode."""
    require("load_quantized()")
    model, tokenizer, config = load_quantized_model(path)
    if tokenizer is not None and getattr(tokenizer, "pad_token", "") is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Quantized(model, tokenizer, config)


def require(what: str = "this") -> None:
    """Raise :class:`UnsupportedError` (exit 4) when the quantize plugin's kernels are not
    registered (the plugin is disabled or failed to load)."""
    from gpuforge.core.kernels import kernel_specs

    missing = [k for k in KERNELS if k not in kernel_specs()]
    if missing:
        raise UnsupportedError(f"{what} needs the quantize plugin's {', '.join(missing)} kernel(s), which are not "
                               "registered; enable the quantize plugin (`gpuforge plugins list`)")
