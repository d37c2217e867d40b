"""The quantize plugin's Python surface, for other plugins (finetune's QLoRA) and users' code.

    from gpuforge.plugins.quantize.api import NF4Linear, load_quantized_model
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
           "all_methods", "get_method", "load_quantized_model", "load_streamed", "method_names", "register", "require"]


def require(what: str = "this") -> None:
    """Raise :class:`UnsupportedError` (exit 4) when the quantize plugin's kernels are not
    registered (the plugin is disabled or failed to load)."""
    from gpuforge.core.kernels import kernel_specs

    missing = [k for k in KERNELS if k not in kernel_specs()]
    if missing:
        raise UnsupportedError(f"{what} needs the quantize plugin's {', '.join(missing)} kernel(s), which are not "
                               "registered; enable the quantize plugin (`gpuforge plugins list`)")
