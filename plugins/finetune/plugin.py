"""Hook implementations of the finetune plugin; imports nothing heavy."""
from __future__ import annotations

from pathlib import Path

from gpuforge.core.hookspecs import hookimpl
from gpuforge.core.specs import (BenchmarkSpec, CommandSpec, DemoSpec, EstimateSpec, KernelSpec, TuningSpec,
                                 three_backends)

_PKG = "gpuforge.plugins.finetune"


@hookimpl
def register_commands(register):
    register(CommandSpec("finetune", f"{_PKG}.cli:app",
                         "LoRA / QLoRA fine-tuning, SlimFit freezing, CPU-offloaded AdamW, PEFT-compatible adapters.",
                         aliases={"lora": "train"}))  # DESIGN.md's verb is train; lora kept for scripts


@hookimpl
def register_kernels(register):
    register(KernelSpec(
        name="finetune.adamw_step",
        summary="fused torch.optim.AdamW step on flat fp32 buffers (ZeRO-Offload CPU optimizer)",
        backends=three_backends(f"{_PKG}.adam", "adamw_step"),
        cases=f"{_PKG}.adam:adamw_cases", ptx=f"{_PKG}.adam_cuda:adamw_ptx", rtol=2e-5, atol=1e-6,
    ))
    register(KernelSpec(
        name="finetune.quantize_blockwise_8bit",
        summary="bitsandbytes-style blockwise 8-bit (dynamic map) quantization of optimizer state",
        backends=three_backends(f"{_PKG}.adam", "quantize_blockwise_8bit"),
        cases=f"{_PKG}.adam:quantize_8bit_cases", ptx=f"{_PKG}.adam_cuda:quantize8_ptx",
    ))
    register(KernelSpec(
        name="finetune.dequantize_blockwise_8bit",
        summary="inverse of finetune.quantize_blockwise_8bit: code[q] * block absmax",
        backends=three_backends(f"{_PKG}.adam", "dequantize_blockwise_8bit"),
        cases=f"{_PKG}.adam:dequantize_8bit_cases", ptx=f"{_PKG}.adam_cuda:dequantize8_ptx",
    ))


@hookimpl
def register_hardware(register):
    register(TuningSpec("finetune", str(Path(__file__).with_name("tuning.toml"))))


@hookimpl
def register_benchmarks(register):
    register(BenchmarkSpec("finetune.adamw", f"{_PKG}.bench:run_adamw",
                           "fused CPU AdamW vs torch.optim.AdamW(foreach=True); 8-bit state round trip"))


@hookimpl
def register_demos(register):
    register(DemoSpec("finetune", f"{_PKG}.demo:run", "LoRA on MiniLM: negation-aware sentiment, before/after", 40))


@hookimpl
def register_estimates(register):
    register(EstimateSpec("finetune", "lora", f"{_PKG}.plan:estimate",
                          "memory of LoRA / QLoRA / full fine-tuning (--params N [--qlora|--method M])"))
