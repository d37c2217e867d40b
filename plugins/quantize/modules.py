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
            b = bias.detach().float().clone() if isinstance(bias, torch.Tensor) else torch.as_tensor(np.asarray(bias)).float()
            self.bias = torch.nn.Parameter(b, requires_grad=False)

    def _finish(self, y: torch.Tensor, shape, dtype) -> torch.Tensor:
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(dtype)


class _NF4Stored(torch.nn.Module):
    """A weight in the bitsandbytes 4-bit layout, held as stored: packed codes and the block
    absmax, double-quantized (8-bit codes + nested absmax + offset: 4.127 bits per weight
    in memory) or float32; the absmax is decoded when the weight is (n/64 values)."""

    def _store(self, shape, packed, absmax, blocksize: int, quant_type: str, nested=None, offset=None,
               nested_blocksize: int = 256) -> None:
        self.shape, self.numel = tuple(int(d) for d in shape), int(np.prod(shape))
        self.blocksize, self.quant_type, self.nested_blocksize = int(blocksize), quant_type, int(nested_blocksize)
        self.register_buffer("packed", _buffer(packed, np.uint8).reshape(-1))
        self.double_quant = nested is not None
        self.register_buffer("absmax", _buffer(absmax, np.uint8 if self.double_quant else np.float32))
        if self.double_quant:
            self.register_buffer("nested_absmax", _buffer(nested, np.float32))
            self.register_buffer("offset", _buffer(offset, np.float32).reshape(1))

    def _encode(self, weight, blocksize: int, quant_type: str, double_quant: bool) -> None:
        w = weight.detach().float().cpu().numpy() if isinstance(weight, torch.Tensor) else np.asarray(weight, np.float32)
        packed, absmax = call("quantize.nf4_encode", np.ascontiguousarray(w).reshape(-1), blocksize, quant_type)
        nested = offset = None
        if double_quant:
            absmax, nested, offset = call("quantize.absmax_dq_encode", absmax, 256)
        self._store(w.shape, packed, absmax, blocksize, quant_type, nested, offset)

    def block_absmax(self):
        """float32 absmax per block (double quantization undone)."""
        if not self.double_quant:
            return _arg(self.absmax)
        return call("quantize.absmax_dq_decode", _arg(self.absmax), _arg(self.nested_absmax), _arg(self.offset),
                    self.nested_blocksize)

    def _codes(self):
        """The packed codes as a kernel argument. They are a parameter only when FSDP2 shards
        them (``finetune lora --qlora --nproc``): then the kernel gets a copy, because a
        NumPy view pins the gathered storage that FSDP2 frees after the layer ran."""
        if isinstance(self.packed, torch.nn.Parameter):
            return _arg(self.packed.detach().clone())
        return _arg(self.packed)

    def _decode_flat(self):
        return call("quantize.nf4_decode", self._codes(), self.block_absmax(), self.numel, self.blocksize,
                    self.quant_type)

    def dequantized(self) -> np.ndarray:
        """float32, the stored shape."""
        w = self._decode_flat()
        w = w.cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)
        return w.reshape(self.shape)

    def dequantized_tensor(self) -> torch.Tensor:
        return _torch(self._decode_flat(), self.packed.device).reshape(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored weight (codes, absmax, nested absmax, offset)."""
        bufs = [self.packed, self.absmax] + ([self.nested_absmax, self.offset] if self.double_quant else [])
        return int(sum(b.numel() * b.element_size() for b in bufs))


def _buffer(a, dtype) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a.detach().to(torch.from_numpy(np.zeros(0, dtype)).dtype).contiguous()
    return torch.from_numpy(np.array(a, dtype=dtype, copy=True).reshape(np.shape(a)))


class NF4Linear(_NF4Stored, _Quantized):
    """A linear layer whose weight is NF4/FP4 (bitsandbytes Linear4bit layout): one input
    row without gradients takes the fused dequantize + matvec kernel (W4A16 decode),
    more rows (or autograd through the input, as QLoRA trains) a dequantized matmul."""

    def __init__(self, in_features, out_features, packed, absmax, blocksize, quant_type, bias=None, *,
                 nested_absmax=None, offset=None, nested_blocksize: int = 256):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._store((self.out_features, self.in_features), packed, absmax, blocksize, quant_type, nested_absmax,
                    offset, nested_blocksize)
        self._bias(bias)

    @classmethod
    def from_state(cls, tensors: dict[str, np.ndarray], bias=None) -> "NF4Linear":
        """From a Linear4bit state dict's entries (keys without the layer prefix)."""
        from gpuforge.plugins.quantize.formats import read_nf4_state

        st = read_nf4_state(tensors, decode_absmax=False)
        out_f, in_f = st["shape"]
        return cls(in_f, out_f, st["packed"], st["absmax"], st["blocksize"], st["quant_type"], bias,
                   nested_absmax=st.get("nested_absmax"), offset=st.get("offset"),
                   nested_blocksize=st.get("nested_blocksize", 256))

    @classmethod
    def from_weight(cls, weight, bias=None, blocksize: int = 64, quant_type: str = "nf4",
                    double_quant: bool = True) -> "NF4Linear":
        """Quantize a weight (out, in) (QLoRA's frozen base: blocks of 64, double quantization)."""
        self = cls.__new__(cls)
        torch.nn.Module.__init__(self)
        self.out_features, self.in_features = (int(d) for d in weight.shape)
        self._encode(weight, blocksize, quant_type, double_quant)
        self._bias(bias)
        return self

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, blocksize: int = 64, quant_type: str = "nf4",
                    double_quant: bool = True) -> "NF4Linear":
        return cls.from_weight(linear.weight, linear.bias, blocksize, quant_type, double_quant)

    def _weight(self):
        return self._decode_flat().reshape(self.out_features, self.in_features)

    def to_linear(self) -> torch.nn.Linear:
        lin = torch.nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        with torch.no_grad():
            lin.weight.copy_(self.dequantized_tensor())
            if self.bias is not None:
                lin.bias.copy_(self.bias)
        return lin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).float()
        if x2.shape[0] == 1 and not (torch.is_grad_enabled() and x2.requires_grad):
            y = _torch(call("quantize.nf4_matvec", self._codes(), self.block_absmax(), _arg(x2[0]),
                            self.out_features, self.blocksize, self.quant_type), x.device)[None]
        elif torch.is_grad_enabled() and x2.requires_grad:
            y = _DecodedAgainInBackward.apply(x2, self)
        else:
            y = x2 @ self.dense_weight(x.device).T
        out = self._finish(y, shape, x.dtype)
        if isinstance(self.packed, torch.nn.Parameter) and out._base is not None:
            # sharded by FSDP2: an in-place op on a returned view would drop the hook that
            # gathers the codes again for the backward pass
            out = out.clone()
        return out

    def dense_weight(self, device) -> torch.Tensor:
        """The dequantized weight (out, in), float32, on ``device``."""
        return _torch(self._weight(), device)


class _DecodedAgainInBackward(torch.autograd.Function):
    """``x @ W.T`` for a frozen quantized layer whose W is decoded again in the backward
    pass instead of kept: a plain matmul makes autograd hold every layer's float32 W from
    the forward to the backward pass, i.e. the whole base in fp32 during a QLoRA step
    (bitsandbytes' MatMul4Bit decodes again the same way). W gets no gradient."""

    @staticmethod
    def forward(ctx, x2: torch.Tensor, layer: "NF4Linear") -> torch.Tensor:
        ctx.layer = layer
        return x2 @ layer.dense_weight(x2.device).T

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        return grad_y @ ctx.layer.dense_weight(grad_y.device), None


class NF4Embedding(_NF4Stored):
    """An embedding table in NF4 (rows a multiple of the block size wide, so a row never
    shares a block with another): a lookup dequantizes only the rows it needs."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx

    @classmethod
    def from_weight(cls, weight, padding_idx=None, blocksize: int = 64, quant_type: str = "nf4",
                    double_quant: bool = True) -> "NF4Embedding":
        num, dim = (int(d) for d in weight.shape)
        if dim % blocksize:
            raise ValueError(f"embedding width {dim} is not a multiple of the block size {blocksize}")
        self = cls(num, dim, padding_idx)
        self._encode(weight, blocksize, quant_type, double_quant)
        return self

    @classmethod
    def from_embedding(cls, emb: torch.nn.Embedding, blocksize: int = 64, quant_type: str = "nf4",
                       double_quant: bool = True) -> "NF4Embedding":
        return cls.from_weight(emb.weight, emb.padding_idx, blocksize, quant_type, double_quant)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        d = self.embedding_dim
        flat = ids.reshape(-1).cpu().numpy()
        packed = self.packed.reshape(self.num_embeddings, d // 2)[torch.from_numpy(flat)].reshape(-1)
        absmax = _torch(self.block_absmax(), self.packed.device).reshape(self.num_embeddings, d // self.blocksize)
        absmax = absmax[torch.from_numpy(flat)].reshape(-1)
        out = call("quantize.nf4_decode", _arg(packed), _arg(absmax), flat.size * d, self.blocksize, self.quant_type)
        return _torch(out, ids.device).reshape(*ids.shape, d)

    @property
    def weight(self) -> torch.Tensor:  # transformers reads .weight (e.g. for dtype/device)
        return self.dequantized_tensor()

    def to_embedding(self) -> torch.nn.Embedding:
        emb = torch.nn.Embedding(self.num_embeddings, self.embedding_dim, padding_idx=self.padding_idx)
        with torch.no_grad():
            emb.weight.copy_(self.dequantized_tensor())
        return emb


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


class DequantizedLinear(torch.nn.Linear):
    """A layout without a module of its own runs as a float linear layer holding the
    decoded weight."""

    def __init__(self, weight: np.ndarray, bias=None):
        out_f, in_f = weight.shape
        super().__init__(in_f, out_f, bias=bias is not None)
        with torch.no_grad():
            self.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight, np.float32)))
            if bias is not None:
                self.bias.copy_(torch.as_tensor(np.asarray(bias)).float())
        self.weight.requires_grad_(False)

    def dequantized(self) -> np.ndarray:
        return self.weight.detach().numpy()


def nf4_module(sub: dict, qconfig: dict, bias=None) -> NF4Linear:
    return NF4Linear.from_state(sub, bias)


def int8_module(sub: dict, qconfig: dict, bias=None) -> "Int8Linear":
    return Int8Linear(np.asarray(sub["weight"]), np.asarray(sub["SCB"]), bias, qconfig.get("llm_int8_threshold", 6.0))


def gptq_module(sub: dict, qconfig: dict, bias=None) -> "GPTQLinear":
    from gpuforge.plugins.quantize.formats import gptq_bits

    return GPTQLinear(sub, gptq_bits(sub), np.shape(sub["g_idx"])[0], np.shape(sub["qweight"])[1], bias)


def build_module(layout, sub: dict, qconfig: dict) -> torch.nn.Module:
    """The module running one stored layer (``sub``: its tensors without the prefix)."""
    from gpuforge.plugins.quantize.methods import loaded, resolve

    sub = loaded(sub)
    bias = sub.get("bias")
    if layout.module:
        return resolve(layout.module)(sub, qconfig, bias)
    return DequantizedLinear(resolve(layout.decode)(sub, qconfig), bias)


def load_quantized_model(folder: str | Path):
    """(model with quantized modules, tokenizer, config dict) from a `quantize run` folder,
    built module by module: a quantized layer is built from its own tensors, every other
    parameter read when its module is filled (sharded outputs welcome)."""
    from gpuforge.core.errors import BadInputError
    from gpuforge.plugins.quantize import model_io
    from gpuforge.plugins.quantize.methods import find_layers, layer_tensors
    from gpuforge.plugins.quantize.skeleton import load_model

    folder = Path(folder)
    src = model_io.TensorSource(folder, require_config=False)
    if src.kind != "folder":
        raise BadInputError(f"{folder} is not a model folder; eval of a state dict compares weights only")
    config = src.config
    qconfig = config.get("quantization_config") or {}
    lazy = src.lazy()
    groups = find_layers(lazy)
    built: set[str] = set()

    def convert(name, module, sk):
        key = sk.checkpoint_name(name, groups)
        if key is None:
            return None
        built.add(key)
        return build_module(groups[key], layer_tensors(lazy, key), qconfig)

    model = load_model(src, convert)
    model.eval()
    missing = sorted(set(groups) - built)
    if missing:
        raise BadInputError(f"quantized layer {missing[0]} of {folder} is not a module of the model")
    return model, model_io.load_tokenizer(folder), config


def quant_config_of(folder: Path) -> dict:
    cfg = json.loads((folder / "config.json").read_text())
    return cfg.get("quantization_config") or {}
