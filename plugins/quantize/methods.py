"""The quantization methods of ``quantize run`` and the layouts they write: one table that
the runner, the layer modules, ``inspect``, ``eval``, ``advise`` / ``plan`` and the CLI read.

A :class:`Method` (``--method NAME``) says how a weight is encoded: its encoder, the
``--bits`` it accepts, the options it honours, whether it needs calibration, the
``quantization_config`` it writes, the serving format it produces (``advise``). Its
:class:`Layout` says how a layer is stored: the tensors it has, the one whose name marks a
layer stored this way, which of them are format constants (not counted in bits per
parameter), how to decode it, the ``nn.Module`` that runs it, and who else reads it.

Adding a method is one module with its functions plus one row: in :data:`BUILTIN`, or from
another distribution through the entry point group ``gpuforge.quantize_methods`` (each
entry: ``name = "module:attr"`` of a :class:`Method`), or :func:`register` in-process.
Everything here is metadata and ``"module:attr"`` strings: importing this module imports
nothing heavy (the CLI builds its help from it).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

from gpuforge.core.errors import UsageError

ENTRY_POINT_GROUP = "gpuforge.quantize_methods"
_PKG = "gpuforge.plugins.quantize"


@dataclass(frozen=True)
class Layout:
    """How a quantized layer ``<prefix>.*`` is stored."""

    name: str
    """Shown by ``quantize inspect``."""
    marker: str
    """Key (after ``<prefix>.``) present in exactly the layers stored this way."""
    keys: tuple[str, ...]
    """The layer's tensors (``bias`` aside), as the loaders expect them."""
    decode: str
    """``"module:attr"`` of ``decode(sub, qconfig) -> float32 (out, in)``; ``sub`` holds the
    layer's tensors without the prefix, ``qconfig`` the ``quantization_config`` (or {})."""
    describe: str | None = None
    """``"module:attr"`` of ``describe(sub, qconfig) -> {"shape": (out, in), "label": str,
    "detail": str}``; default: decode for the shape, the layout's name as label. Here the
    values of ``sub`` may be lazy (``.shape``, ``.dtype``, ``.nbytes`` known, ``np.asarray``
    reads them): inspect reads only what a description needs."""
    module: str | None = None
    """``"module:attr"`` of ``build(sub, qconfig, bias) -> torch.nn.Module`` running the
    layer from its stored form; default: a float ``nn.Linear`` holding the decoded weight."""
    constants: tuple[str, ...] = ()
    """Keys that are format constants (code tables, format flags, group maps)."""
    loader: str = ""
    """Who reads this layout besides gpuforge (README, inspect)."""
    scope: str = "all"
    """``all``: its loaders quantize any linear layer; ``blocks``: only linear layers inside
    the transformer blocks, the same ones in every block (GPTQ loaders): by default the
    other layers stay in float."""


@dataclass(frozen=True)
class LayerJob:
    """What an encoder gets besides the weight."""

    name: str
    """The weight's tensor name."""
    opts: Any
    """The run's :class:`~.runner.Options`."""
    bits: int
    hessian: Any = None
    """``2 X X^T / n`` of the layer's calibration inputs (methods that calibrate)."""
    dtype: str = "float32"
    """The weight's dtype on disk (bf16 stays what a loader dequantizes to)."""


@dataclass(frozen=True)
class Method:
    """One ``--method``."""

    name: str
    summary: str
    layout: Layout
    encode: str
    """``"module:attr"`` of ``encode(weight float32 (out, in), job: LayerJob) -> {key: array}``
    (keys without the layer prefix, as :attr:`Layout.keys`)."""
    bits: tuple[int, ...] = (4,)
    """Accepted ``--bits``; the first is the default."""
    flags: frozenset[str] = frozenset()
    """Optional switches it honours among ``gptq`` (codes chosen by GPTQ) and ``mse``."""
    calibration: str = "never"
    """``never``, ``always`` (GPTQ) or ``gptq`` (only with ``--gptq``)."""
    config: str | None = None
    """``"module:attr"`` of ``quantization_config(opts, bits, structure) -> dict`` for
    config.json; ``structure`` holds ``block_name_to_quantize`` and
    ``modules_in_block_to_quantize`` (checkpoint key names; None when unknown or all)."""
    check_shape: str | None = None
    """``"module:attr"`` of ``check(name, (out, in), opts, bits)``: raises BadInputError."""
    serving: str = "W{bits}A16"
    """The serving format it produces (``quantize advise``), ``{bits}`` filled in."""
    overhead_bits: float = 0.0
    """Nominal stored bits per parameter beyond ``bits`` (scales...), for ``plan``."""

    def calibrated(self, opts) -> bool:
        return self.calibration == "always" or (self.calibration == "gptq" and bool(getattr(opts, "gptq", False)))

    def resolve_bits(self, opts) -> int:
        """``--bits`` checked against the method (default: its first), and its switches."""
        for flag, what in (("gptq", "--gptq"), ("mse", "--mse")):
            if getattr(opts, flag, False) and flag not in self.flags:
                takers = [m.name for m in all_methods().values() if flag in m.flags]
                raise UsageError(f"{what} does not apply to --method {self.name} (it applies to "
                                 f"{', '.join(takers) or 'no method'})")
        bits = self.bits[0] if getattr(opts, "bits", None) is None else int(opts.bits)
        if bits not in self.bits:
            raise UsageError(f"--bits {bits} is not supported by --method {self.name}; choose "
                             f"{', '.join(map(str, self.bits))}")
        return bits

    def serving_format(self, bits: int) -> str:
        return self.serving.format(bits=bits)

    def nominal_bits(self, bits: int) -> float:
        return bits + self.overhead_bits


def resolve(target: str) -> Callable:
    from gpuforge.core.lazy import resolve as _resolve

    return _resolve(target)


# --- the built-in table --------------------------------------------------------------------

BNB_LOADER = "bitsandbytes / transformers (BitsAndBytesConfig)"


def _bnb4(quant_type: str) -> Layout:
    state = f"weight.quant_state.bitsandbytes__{quant_type}"
    return Layout(
        name=f"bitsandbytes-{quant_type}", marker=state,
        keys=("weight", "weight.absmax", "weight.quant_map", "weight.nested_absmax", "weight.nested_quant_map", state),
        decode=f"{_PKG}.formats:nf4_decode_layer", describe=f"{_PKG}.formats:nf4_describe",
        module=f"{_PKG}.modules:nf4_module", constants=("weight.quant_map", "weight.nested_quant_map", state),
        loader=BNB_LOADER)


BNB_NF4 = _bnb4("nf4")
BNB_FP4 = _bnb4("fp4")
BNB_INT8 = Layout(
    name="bitsandbytes-int8", marker="SCB", keys=("weight", "SCB", "weight_format"),
    decode=f"{_PKG}.formats:int8_decode_layer", describe=f"{_PKG}.formats:int8_describe",
    module=f"{_PKG}.modules:int8_module", constants=("weight_format",), loader=BNB_LOADER)
GPTQ_V1 = Layout(
    name="gptq", marker="qweight", keys=("qweight", "qzeros", "scales", "g_idx"),
    decode=f"{_PKG}.formats:gptq_decode_layer", describe=f"{_PKG}.formats:gptq_describe",
    module=f"{_PKG}.modules:gptq_module", constants=("g_idx",),
    loader="transformers + optimum + gptqmodel (GPTQConfig)", scope="blocks")

BUILTIN: tuple[Method, ...] = (
    Method("rtn", "round to nearest on GPTQ's grid (per group of input columns), GPTQ v1 layout", GPTQ_V1,
           encode=f"{_PKG}.formats:encode_rtn", bits=(4, 2, 3, 8), flags=frozenset({"mse"}),
           config=f"{_PKG}.formats:gptq_config", check_shape=f"{_PKG}.formats:gptq_check_shape",
           overhead_bits=(16 + 4) / 128),
    Method("nf4", "NormalFloat4 blocks + double-quantized absmax (QLoRA), bitsandbytes Linear4bit", BNB_NF4,
           encode=f"{_PKG}.formats:encode_nf4", flags=frozenset({"gptq"}), calibration="gptq",
           config=f"{_PKG}.formats:bnb4_config", check_shape=f"{_PKG}.formats:bnb4_check_shape",
           serving="W4A16", overhead_bits=8 / 64 + 32 / (64 * 256)),
    Method("fp4", "bitsandbytes FP4 blocks + double-quantized absmax, bitsandbytes Linear4bit", BNB_FP4,
           encode=f"{_PKG}.formats:encode_fp4", flags=frozenset({"gptq"}), calibration="gptq",
           config=f"{_PKG}.formats:bnb4_config", check_shape=f"{_PKG}.formats:bnb4_check_shape",
           serving="W4A16", overhead_bits=8 / 64 + 32 / (64 * 256)),
    Method("int8", "LLM.int8() row-wise int8 (outliers in float at run time), bitsandbytes Linear8bitLt", BNB_INT8,
           encode=f"{_PKG}.formats:encode_int8", bits=(8,), config=f"{_PKG}.formats:int8_config",
           serving="W8A8-INT8", overhead_bits=32 / 4096),
    Method("gptq", "GPTQ (Hessian-compensated rounding on calibration text), GPTQ v1 layout", GPTQ_V1,
           encode=f"{_PKG}.formats:encode_gptq", bits=(4, 2, 3, 8), flags=frozenset({"mse"}), calibration="always",
           config=f"{_PKG}.formats:gptq_config", check_shape=f"{_PKG}.formats:gptq_check_shape",
           overhead_bits=(16 + 4) / 128),
)

_REGISTERED: dict[str, Method] = {}


def register(method: Method) -> None:
    """Add a method in-process (tests, notebooks); entry points do it for installed packages."""
    if not isinstance(method, Method):
        raise TypeError(f"register() takes a Method, got {type(method).__name__}")
    if method.name in {m.name for m in BUILTIN}:
        raise ValueError(f"method {method.name!r} is built in")
    _REGISTERED[method.name] = method
    all_methods.cache_clear()


def unregister(name: str) -> None:
    _REGISTERED.pop(name, None)
    all_methods.cache_clear()


def _entry_point_methods() -> list[Method]:
    """Methods of installed distributions; a broken entry is reported once and skipped."""
    from importlib.metadata import entry_points

    out = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            obj = resolve(ep.value)
            if not isinstance(obj, Method):
                raise TypeError(f"{ep.value} is a {type(obj).__name__}, not a quantize Method")
            if obj.name != ep.name:
                raise ValueError(f"entry point {ep.name!r} holds method {obj.name!r}")
            out.append(obj)
        except Exception as exc:  # one broken extension never breaks quantize
            from gpuforge.core.log import get_logger

            get_logger("gpuforge.quantize").warning("quantization method failed to load", method=ep.name,
                                                    reason=" ".join(f"{type(exc).__name__}: {exc}".split())[:300])
    return out


@lru_cache(maxsize=1)
def all_methods() -> dict[str, Method]:
    """name -> Method: the built-in rows, then installed and registered extensions."""
    table = {m.name: m for m in BUILTIN}
    for m in [*_entry_point_methods(), *_REGISTERED.values()]:
        if m.name in table and table[m.name] is not m:
            from gpuforge.core.log import get_logger

            get_logger("gpuforge.quantize").warning("quantization method name taken; extension skipped", method=m.name)
            continue
        table[m.name] = m
    return table


def method_names() -> list[str]:
    """Built-in names and the names of installed extensions, without importing them."""
    from importlib.metadata import entry_points

    names = [m.name for m in BUILTIN]
    extra = sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} | set(_REGISTERED))
    return names + [n for n in extra if n not in names]


def get_method(name: str) -> Method:
    table = all_methods()
    if name not in table:
        raise UsageError(f"unknown method {name!r}; choose one of {', '.join(table)}")
    return table[name]


def layouts() -> list[Layout]:
    """Every distinct layout of the table, in table order."""
    seen: dict[int, Layout] = {}
    for m in all_methods().values():
        seen.setdefault(id(m.layout), m.layout)
    return list(seen.values())


def find_layers(keys) -> dict[str, Layout]:
    """{layer prefix: Layout} of the quantized layers among tensor names ``keys``."""
    marks = {lay.marker: lay for lay in layouts()}
    out: dict[str, Layout] = {}
    for k in keys:
        for marker, lay in marks.items():
            if k.endswith("." + marker):
                out[k[: -len(marker) - 1]] = lay
    return out


def layer_tensors(tensors, prefix: str) -> dict:
    """The tensors of layer ``prefix`` without the prefix (``bias`` included)."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def describe(layout: Layout, sub: dict, qconfig: dict) -> dict:
    """``{"shape", "label", "detail"}`` of one stored layer."""
    if layout.describe:
        return resolve(layout.describe)(sub, qconfig)
    return {"shape": tuple(decode(layout, sub, qconfig).shape), "label": layout.name, "detail": ""}


def loaded(sub: dict) -> dict:
    """A layer's tensors as NumPy arrays (lazy references read now)."""
    import numpy as np

    return {k: v if isinstance(v, np.ndarray) else np.asarray(v) for k, v in sub.items()}


def decode(layout: Layout, sub: dict, qconfig: dict):
    """float32 (out, in): the weight a stored layer stands for."""
    return resolve(layout.decode)(loaded(sub), qconfig)


def data_bytes(layout: Layout, sub: dict) -> int:
    """Bytes of per-parameter data of a layer (bias and format constants not counted)."""
    return int(sum(v.nbytes for k, v in sub.items() if k != "bias" and k not in layout.constants))

