"""Hook implementations of the superres plugin; imports nothing heavy."""
from __future__ import annotations

from pathlib import Path

from gpuforge.core.hookspecs import hookimpl
from gpuforge.core.specs import (BenchmarkSpec, CommandSpec, DemoSpec, EstimateSpec, KernelSpec, TuningSpec,
                                 three_backends)

_PKG = "gpuforge.plugins.superres"

_KERNELS = {
    # name -> (cases function, summary, extra KernelSpec fields)
    "shuffle_ycbcr_rgb": (
        "shuffle_cases",
        "pixel shuffle of the sub-pixel layer + clamp + full-range BT.601 YCbCr->RGB, to uint8",
        {"compare": f"{_PKG}.kernel_cases:compare_u8"}),
    "bicubic_resize": (
        "resize_cases", "PIL's BICUBIC resize (a=-0.5, antialiased when shrinking) of float32 (H, W, C)",
        {"rtol": 1e-5, "atol": 1e-5}),
    "tile_split": ("split_cases", "overlapping inference windows of a (C, H, W) image, shifted inside at borders", {}),
    "tile_stitch": ("stitch_cases", "seamless stitch: each pixel from the core of the window that owns it", {}),
}


@hookimpl
def register_commands(register):
    register(CommandSpec("superres", f"{_PKG}.cli:app", "ESPCN super-resolution for images and video."))


@hookimpl
def register_kernels(register):
    for name, (cases, summary, extra) in _KERNELS.items():
        register(KernelSpec(
            name=f"superres.{name}",
            summary=summary,
            backends=three_backends(f"{_PKG}.kernels", name),
            cases=f"{_PKG}.kernel_cases:{cases}",
            ptx=f"{_PKG}.kernels_cuda:{name}_ptx",
            **extra,
        ))


@hookimpl
def register_hardware(register):
    register(TuningSpec("superres", str(Path(__file__).with_name("tuning.toml"))))


@hookimpl
def register_benchmarks(register):
    # One spec per part, named as `superres bench --only` names them: that command is now
    # `gpuforge bench superres` (cli/main.py SHARED_VERBS), and its --only must keep working.
    for name, fn, summary in (
            ("frame", "frame_rows", "ESPCN 360p->1080p x3 vs a plain torch module"),
            ("tiling", "tiling_rows", "1080p x2: automatic tiles (bounded memory) vs one pass over the picture"),
            ("shuffle", "shuffle_rows", "fused pixel shuffle + clamp + YCbCr->RGB vs torch ops"),
            ("resize", "resize_rows", "bicubic resize: numba-cpu vs the NumPy reference, PIL alongside"),
            ("tiles", "tile_rows", "tile split/merge kernels: numba-cpu vs the NumPy reference")):
        register(BenchmarkSpec(name, f"{_PKG}.bench:{fn}", summary))
    # `gpuforge bench scale` (issue 15): peak RSS and time against input size, in fresh
    # processes (about 12 minutes here); not part of `gpuforge bench superres` unless
    # `--only scale` names it
    register(BenchmarkSpec("scale", f"{_PKG}.scalebench:run",
                           "superres upscale x2: peak RSS and time for 540p..4K images and a 4K video, growth exponents",
                           suite="scale"))


@hookimpl
def register_estimates(register):
    register(EstimateSpec("superres", "upscale", f"{_PKG}.estimate:estimate",
                          "ESPCN FLOPs, bytes and memory (with tiling) for an upscale"))


@hookimpl
def register_demos(register):
    register(DemoSpec("superres", f"{_PKG}.demo:run", "a held-out photo upscaled x3: bicubic vs ESPCN vs original", 50))
