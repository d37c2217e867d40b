"""The roofline model: time = max(FLOPs / peak rate, bytes / memory bandwidth).

Williams, Waterman and Patterson, "Roofline: an insightful visual performance model
for multicore architectures" (CACM 2009). A kernel whose arithmetic intensity
(FLOPs per byte of device memory traffic) is below the GPU's ridge point
(peak / bandwidth) is memory-bound; above it, compute-bound. Peaks are the profiles'
dense datasheet figures, so the times are lower bounds: real kernels reach a share of
them (``gpuforge hw bench`` measures that share on the device at hand).

Pure Python: no NumPy/torch, so planning commands start fast.
"""
from __future__ import annotations

import ast
import math
import operator
from dataclasses import asdict, dataclass

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.hardware.profiles import DTYPES, GpuProfile

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.Pow: operator.pow}


def parse_number(text: str | float | int, what: str, *, allow_zero: bool = True) -> float:
    """A non-negative finite number from ``1.1e12``, ``65e9`` or an arithmetic expression
    of numbers such as ``2*8192**3`` (only + - * / ** and parentheses).

    Text that is not a number: :class:`UsageError` (exit 2); a negative, zero (when not
    allowed), NaN or infinite value: :class:`BadInputError` (exit 3).
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        src = str(text).strip().replace("_", "")
        try:
            value = float(src)
        except ValueError:
            value = _eval_expression(src, what)
    if not math.isfinite(value):
        raise BadInputError(f"{what} must be a finite number, got {text!r}")
    if value < 0 or (value == 0 and not allow_zero):
        need = "non-negative" if allow_zero else "positive"
        raise BadInputError(f"{what} must be {need}, got {text!r}")
    return value


def _eval_expression(src: str, what: str) -> float:
    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 64:
                raise ValueError("exponent too large")
            return float(_OPS[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        raise ValueError("not a number")

    if len(src) > 200:
        raise UsageError(f"{what}: expression too long; give a plain number like 1.1e12")
    try:
        return ev(ast.parse(src, mode="eval"))
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, TypeError):
        raise UsageError(f"{what} {src!r} is not a number; give e.g. 1.1e12 or 2*8192**3") from None


def check_dtype(dtype: str) -> str:
    key = dtype.strip().lower()
    if key not in DTYPES:
        raise UsageError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")
    return key


def peak_rate(profile: GpuProfile, dtype: str) -> tuple[float, str, str]:
    """(FLOP/s, dtype whose rate is used, note). A GPU without Tensor Cores for ``dtype``
    (bf16 on a V100, fp8 before Ada) falls back to its FP32 CUDA-core rate, said in the note."""
    dtype = check_dtype(dtype)
    if profile.supports(dtype):
        return profile.peak_flops(dtype), dtype, ""
    return profile.peak_flops("fp32"), "fp32", f"no {dtype} Tensor Cores on {profile.id}: FP32 rate used"


@dataclass
class RooflineResult:
    gpu: str
    name: str
    dtype: str
    dtype_used: str
    flops: float
    bytes: float
    peak_flops: float
    bandwidth_bytes_per_s: float
    compute_s: float
    memory_s: float
    time_s: float
    bound: str
    """``compute``, ``memory`` or ``none`` (no work)."""
    intensity: float | None
    """FLOPs per byte; None when no bytes move."""
    ridge: float
    """The intensity where the roofs meet: peak / bandwidth."""
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def roofline(profile: GpuProfile, flops: float, bytes_moved: float, dtype: str = "bf16",
             *, compute_efficiency: float = 1.0, bandwidth_efficiency: float = 1.0) -> RooflineResult:
    """Time of ``flops`` operations moving ``bytes_moved`` bytes on ``profile``.

    ``*_efficiency`` scale the datasheet peaks (e.g. the share ``hw bench`` measured).
    """
    peak, used, note = peak_rate(profile, dtype)
    peak *= compute_efficiency
    bw = profile.bandwidth_bytes_per_s * bandwidth_efficiency
    compute_s = flops / peak
    memory_s = bytes_moved / bw
    time_s = max(compute_s, memory_s)
    if time_s == 0:
        bound = "none"
    else:
        bound = "compute" if compute_s >= memory_s else "memory"
    return RooflineResult(
        gpu=profile.id, name=profile.name, dtype=check_dtype(dtype), dtype_used=used,
        flops=flops, bytes=bytes_moved, peak_flops=peak, bandwidth_bytes_per_s=bw,
        compute_s=compute_s, memory_s=memory_s, time_s=time_s, bound=bound,
        intensity=(flops / bytes_moved) if bytes_moved > 0 else None,
        ridge=peak / bw, note=note,
    )


def format_seconds(s: float | None) -> str:
    """Readable duration: 1.11 ms, 4.2 s, 35 min, 3.1 h."""
    if s is None:
        return "-"
    if s == 0:
        return "0 s"
    if s >= 3 * 3600:
        return f"{s / 3600:.3g} h"
    if s >= 120:
        return f"{s / 60:.3g} min"
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} us"
