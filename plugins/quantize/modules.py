"""Quantized replacements of ``nn.Linear`` that run through the kernel registry: numba-cpu
for CPU tensors, numba-cuda for CUDA tensors (the quantized data are buffers, so
``module.to("cuda")`` moves them and the registry then picks the CUDA kernels), and the
loader that turns a quantized output folder back into a runnable model.

- :class:`NF4Linear` (bitsandbytes Linear4bit layout): one input row (the decode path)
  goes through the fused dequantize + matrix-vector kernel ``quantize.nf4_matvec``
  (W4A16); more rows dequantize the weight with ``quantize.nf4_decode`` and use a float
  matmul.
- :class:`Int8Linear` (Linear8bitLt layout): LLM.int8() — activations quantized row-wise
  with outlier columns (``|x| >= threshold``) split off in float, int8 x int8 -> int32
  through ``quantize.int8_matmul`` (eq. 7 of the paper).
- :class:`GPTQLinear` (GPTQ v1 layout): ``quantize.gptq_matvec`` for one row, else the
  weight from ``quantize.gptq_dequantize`` and a float matmul.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from gpuforge.core.kernels import call


def _arg(t: torch.Tensor):
    """What a kernel gets: the CUDA tensor itself (numba-cuda), or a NumPy view (numba-cpu)."""
    t = t.detach().contiguous()
    return t if t.is_cuda else t.numpy()


def _torch(a, device) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(a)).to(device)


class _Quantized(torch.nn.Module):
    def _bias(self, bias):
        if bias is None:
            self.bias = None
        else:
            self.bias = torch.nn.Parameter(torch.as_tensor(np.asarray(bias)).float(), requires_grad=False)

    def _finish(self, y: torch.Tensor, shape, dtype) -> torch.Tensor:
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(dtype)


class NF4Linear(_Quantized):
    def __init__(self, in_features, out_features, packed, absmax, blocksize, quant_type, bias=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.blocksize, self.quant_type = blocksize, quant_type
        self.register_buffer("packed", torch.from_numpy(np.ascontiguousarray(packed, np.uint8).reshape(-1)))
        self.register_buffer("absmax", torch.from_numpy(np.ascontiguousarray(absmax, np.float32)))
        self._bias(bias)

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], bias=None) -> "NF4Linear":
        from gpuforge.plugins.quantize.formats import read_nf4_state

        st = read_nf4_state(tensors)
        out_f, in_f = st["shape"]
        return cls(in_f, out_f, st["packed"], st["absmax"], st["blocksize"], st["quant_type"], bias)

    def _weight(self):
        n = self.in_features * self.out_features
        return call("quantize.nf4_decode", _arg(self.packed), _arg(self.absmax), n, self.blocksize,
                    self.quant_type).reshape(self.out_features, self.in_features)

    def dequantized(self) -> np.ndarray:
        w = self._weight()
        return w.cpu().numpy() if isinstance(w, torch.Tensor) else w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).float()
        if x2.shape[0] == 1:
            y = _torch(call("quantize.nf4_matvec", _arg(self.packed), _arg(self.absmax), _arg(x2[0]),
                            self.out_features, self.blocksize, self.quant_type), x.device)[None]
        else:
            y = x2 @ _torch(self._weight(), x.device).T
        return self._finish(y, shape, x.dtype)


class Int8Linear(_Quantized):
    def __init__(self, weight_int8, scb, bias=None, threshold: float = 6.0):
        super().__init__()
        self.register_buffer("cb", torch.from_numpy(np.ascontiguousarray(weight_int8, np.int8)))
        self.register_buffer("scb", torch.from_numpy(np.ascontiguousarray(scb, np.float32)))
        self.out_features, self.in_features = self.cb.shape
        self.threshold = float(threshold)
        self._bias(bias)

    def dequantized(self) -> np.ndarray:
        return (self.cb.float() * (self.scb[:, None] / 127.0)).cpu().numpy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).float().contiguous()
        codes, sx, outl = call("quantize.int8_vectorwise_quant", _arg(x2), self.threshold)
        acc = _torch(call("quantize.int8_matmul", codes, _arg(self.cb)), x.device)
        sx, outl = _torch(sx, x.device), _torch(outl, x.device)
        y = acc.float() * (sx[:, None] * self.scb[None, :] / float(127 * 127))
        if bool(outl.any()):
            cols = torch.nonzero(outl).reshape(-1)
            w_cols = self.cb[:, cols].float() * (self.scb[:, None] / 127.0)
            y = y + x2[:, cols] @ w_cols.T
        return self._finish(y, shape, x.dtype)


class GPTQLinear(_Quantized):
    def __init__(self, tensors: dict[str, np.ndarray], bits: int, in_features: int, out_features: int, bias=None):
        super().__init__()
        self.bits, self.in_features, self.out_features = bits, in_features, out_features
        for name, dtype in (("qweight", np.int32), ("qzeros", np.int32), ("scales", np.float32), ("g_idx", np.int32)):
            self.register_buffer(name, torch.from_numpy(np.ascontiguousarray(np.asarray(tensors[name]).astype(dtype))))
        self._bias(bias)

    def _weight_t(self):
        return call("quantize.gptq_dequantize", _arg(self.qweight), _arg(self.qzeros), _arg(self.scales),
                    _arg(self.g_idx), self.bits)

    def dequantized(self) -> np.ndarray:
        """float32 (out, in)."""
        w = self._weight_t()
        w = w.cpu().numpy() if isinstance(w, torch.Tensor) else w
        return w.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).float()
        if x2.shape[0] == 1:
            y = _torch(call("quantize.gptq_matvec", _arg(self.qweight), _arg(self.qzeros), _arg(self.scales),
                            _arg(self.g_idx), self.bits, _arg(x2[0])), x.device)[None]
        else:
            y = x2 @ _torch(self._weight_t(), x.device)
        return self._finish(y, shape, x.dtype)


def _set_module(model, name: str, new) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def layer_groups(tensors: dict[str, np.ndarray]) -> dict[str, str]:
    """{layer prefix: method} of the quantized layers in a state dict."""
    out = {}
    for k in tensors:
        if k.endswith(".qweight"):
            out[k[: -len(".qweight")]] = "gptq"
        elif ".weight.quant_state.bitsandbytes__" in k:
            out[k.split(".weight.quant_state.")[0]] = k.rsplit("__", 1)[1]
        elif k.endswith(".SCB"):
            out[k[: -len(".SCB")]] = "int8"
    return out


def _sub(tensors: dict, prefix: str) -> dict:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def build_module(prefix: str, method: str, tensors: dict, qconfig: dict, linear=None):
    sub = _sub(tensors, prefix)
    bias = sub.get("bias")
    if method in ("nf4", "fp4"):
        return NF4Linear.from_state(sub, bias)
    if method == "int8":
        return Int8Linear(sub["weight"], sub["SCB"], bias, qconfig.get("llm_int8_threshold", 6.0))
    bits = int(qconfig.get("bits", 4))
    in_f = sub["g_idx"].shape[0]
    out_f = sub["qweight"].shape[1]
    return GPTQLinear(sub, bits, in_f, out_f, bias)


def load_quantized_model(folder: str | Path):
    """(model with quantized modules, tokenizer, config dict) from a `quantize run` folder."""
    from gpuforge.core.errors import BadInputError
    from gpuforge.plugins.quantize import model_io

    folder = Path(folder)
    kind, tensors, config = model_io.load_input(folder)
    if kind != "folder":
        raise BadInputError(f"{folder} is not a model folder; eval of a state dict compares weights only")
    qconfig = config.get("quantization_config") or {}
    from gpuforge.core.hub import offline

    with offline():
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

        cfg_dict = {k: v for k, v in config.items() if k != "quantization_config"}
        cfg = AutoConfig.for_model(**cfg_dict) if "model_type" in cfg_dict else AutoConfig.from_pretrained(str(folder))
        if hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
        cls = AutoModelForCausalLM if model_io.is_causal(config) else AutoModel
        model = cls.from_config(cfg)
    model.eval()
    groups = layer_groups(tensors)
    for prefix, method in groups.items():
        try:
            model.get_submodule(prefix)
        except AttributeError:
            raise BadInputError(f"quantized layer {prefix} of {folder} is not a module of the model") from None
        _set_module(model, prefix, build_module(prefix, method, tensors, qconfig))
    rest = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()
            if not any(k.startswith(p + ".") for p in groups)}
    missing, _unexpected = model.load_state_dict(rest, strict=False)
    missing = [m for m in missing if not any(m.startswith(p + ".") for p in groups)]
    if missing:
        raise BadInputError(f"{folder} lacks tensors the model needs, e.g. {missing[0]}")
    tok = None
    with offline():
        try:
            tok = AutoTokenizer.from_pretrained(str(folder))
        except Exception:
            pass
    return model, tok, config


def quant_config_of(folder: Path) -> dict:
    cfg = json.loads((folder / "config.json").read_text())
    return cfg.get("quantization_config") or {}
