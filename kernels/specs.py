"""Registration metadata of the shared kernels: names, summaries and ``"module:attr"``
strings only. Importing this module imports nothing heavy (no NumPy, Numba or CUDA).
"""
from __future__ import annotations

from gpuforge.core.specs import KernelSpec, three_backends

_PKG = "gpuforge.kernels"

# name -> (module, cases attr in cases.py, summary, extra KernelSpec fields);
# backends are `<name>` (reference), `<name>_cpu` and `<name>_cuda` (in <module>_cuda),
# PTX entries `<name>_ptx`. `cases:<stem>_cases` returns `<stem>_valid_cases` (compared
# with the reference) plus `<stem>_invalid_cases` (every backend must raise as it does).
_KERNELS = {
    "blockwise_absmax": (
        "blockwise", "blockwise_cases",
        "max |x| of each block of block_size consecutive elements (NaN propagates)", {}),
    "blockwise_quantize_absmax_int8": (
        "blockwise", "blockwise_cases",
        "bitsandbytes-style blockwise int8: rint(x / absmax * 127), plus absmax", {}),
    "pack_bits": (
        "packing", "pack_bits_cases",
        "pack 2/4-bit values into bytes along the last axis, first value in the high bits", {}),
    "unpack_bits": (
        "packing", "unpack_bits_cases", "inverse of pack_bits", {}),
    "pack_int32": (
        "packing", "pack_int32_cases",
        "GPTQ v1 qweight packing of 2/3/4/8-bit values along axis 0 into int32 words", {}),
    "unpack_int32": (
        "packing", "unpack_int32_cases", "inverse of pack_int32", {}),
    "pairwise_topk": (
        "pairwise", "pairwise_topk_cases",
        "k nearest rows of y for each row of x (Euclidean, ties to the smaller index)",
        {"rtol": 1e-5, "atol": 1e-5, "compare": f"{_PKG}.pairwise:compare_topk"}),
}


def kernel_specs() -> list[KernelSpec]:
    """One :class:`KernelSpec` per shared kernel, named ``kernels.<function>``."""
    specs = []
    for name, (module, cases, summary, extra) in _KERNELS.items():
        cpu, cuda = f"{_PKG}.{module}", f"{_PKG}.{module}_cuda"
        specs.append(KernelSpec(
            name=f"kernels.{name}",
            summary=summary,
            backends=three_backends(cpu, name),
            cases=f"{_PKG}.cases:{cases}",
            ptx=f"{cuda}:{name}_ptx",
            **extra,
        ))
    return specs
