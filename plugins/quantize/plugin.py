"""Hook implementations of the quantize plugin; imports nothing heavy."""
from __future__ import annotations

from pathlib import Path

from gpuforge.core.hookspecs import hookimpl
from gpuforge.core.specs import (BenchmarkSpec, CommandSpec, DemoSpec, EstimateSpec, KernelSpec, TuningSpec,
                                 three_backends)

_PKG = "gpuforge.plugins.quantize"

# name -> (module, summary, extra KernelSpec fields); backends are `<module>:<name>`,
# `<module>:<name>_cpu`, `<module>_cuda:<name>_cuda`; cases `kernel_cases:<name>_all`,
# PTX `<module>_cuda:<name>_ptx`.
KERNELS = {
    "nf4_encode": ("nf4", "NF4/FP4 blockwise 4-bit encode, bitsandbytes layout (high nibble first) + absmax", {}),
    "nf4_decode": ("nf4", "NF4/FP4 decode: code[nibble] * absmax[block]", {}),
    "absmax_dq_encode": ("nf4", "double quantization of absmax: mean offset + 8-bit dynamic map, nested blocks of 256", {}),
    "absmax_dq_decode": ("nf4", "inverse of absmax_dq_encode: map[q] * nested_absmax + offset", {}),
    "int8_vectorwise_quant": ("int8", "LLM.int8() row-wise int8 with outlier-column detection (|x| >= threshold)", {}),
    "int8_matmul": ("int8", "int8 (m,k) x int8 (n,k)^T with int32 accumulation", {}),
    "nf4_matvec": ("matvec", "fused NF4/FP4 dequantize + matrix-vector product (W4A16 decode path)",
                   {"rtol": 1e-4, "atol": 1e-4}),
    "gptq_dequantize": ("matvec", "GPTQ v1 (qweight, qzeros, scales, g_idx) -> float32 (in, out), 2/3/4/8 bits", {}),
    "mask_2to4": ("sparse24", "2:4 mask: keep the 2 largest scores of every 4 along the input dimension", {}),
    "compress_2to4": ("sparse24", "2:4 compression: kept values + 2-bit position pairs per group", {}),
    "gptq_matvec": ("matvec", "fused GPTQ dequantize + matrix-vector product (W4A16 decode path)",
                    {"rtol": 1e-4, "atol": 1e-4}),
}


def kernel_specs() -> list[KernelSpec]:
    specs = []
    for name, (module, summary, extra) in KERNELS.items():
        cpu, cuda = f"{_PKG}.{module}", f"{_PKG}.{module}_cuda"
        specs.append(KernelSpec(
            name=f"quantize.{name}", summary=summary,
            backends=three_backends(cpu, name),
            cases=f"{_PKG}.kernel_cases:{name}_all", ptx=f"{cuda}:{name}_ptx", **extra))
    return specs


@hookimpl
def register_kernels(register):
    for spec in kernel_specs():
        register(spec)


@hookimpl
def register_hardware(register):
    register(TuningSpec("quantize", str(Path(__file__).with_name("tuning.toml"))))


@hookimpl
def register_commands(register):
    register(CommandSpec("quantize", f"{_PKG}.cli:app",
                         "GPTQ, LLM.int8(), NF4 + double quantization, KV-cache quantization, 2:4 sparsity"))


@hookimpl
def register_estimates(register):
    register(EstimateSpec("quantize", "run", f"{_PKG}.advise:estimate",
                          "memory and work of quantizing a model (GPTQ: Hessian + calibration activations)"))


@hookimpl
def register_benchmarks(register):
    register(BenchmarkSpec("quantize", f"{_PKG}.bench:run",
                           "NF4 against bitsandbytes (CPU), W4A16 matvec against torch fp32, GPTQ pack/dequantize"))
    register(BenchmarkSpec("quantize.scale", f"{_PKG}.scale_bench:run",
                           "quantize run on Llama-shaped 1.1B/3B/7B bf16 models: peak RSS and time (nf4, int8, gptq)",
                           suite="scale"))


@hookimpl
def register_demos(register):
    register(DemoSpec("quantize", f"{_PKG}.demo:run",
                      "MiniLM quantized with GPTQ and NF4: size on disk and embedding fidelity", order=20))
