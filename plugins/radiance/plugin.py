"""Hook implementations of the radiance plugin; imports nothing heavy."""
from __future__ import annotations

from pathlib import Path

from gpuforge.core.hookspecs import hookimpl
from gpuforge.core.specs import (BenchmarkSpec, CommandSpec, DemoSpec, EstimateSpec, KernelSpec, TuningSpec,
                                 three_backends)

_P = "gpuforge.plugins.radiance"

# name -> (module, cuda module, reference attr, cases "module:attr", summary, tolerances)
_KERNELS = {
    "hash_encode": ("hashgrid", "hashgrid_cuda", "hashgrid:cases",
                    "Instant-NGP multi-resolution hash encoding, forward (tiny-cuda-nn indexing)", 1e-4, 1e-5),
    "hash_encode_bwd": ("hashgrid", "hashgrid_cuda", "hashgrid:bwd_cases",
                        "hash encoding backward: d loss / d table (scatter-add)", 1e-4, 1e-5),
    "march_rays": ("raymarch", "raymarch_cuda", "raymarch:march_cases",
                   "ray marching: samples in occupied cells of an occupancy grid inside the box", 1e-5, 1e-6),
    "composite_fwd": ("raymarch", "raymarch_cuda", "raymarch:composite_cases",
                      "front-to-back volume compositing with early termination (T < 1e-4)", 1e-4, 1e-5),
    "composite_bwd": ("raymarch", "raymarch_cuda", "raymarch:composite_bwd_cases",
                      "volume compositing backward: d/d sigma, d/d rgb", 1e-3, 1e-4),
    "gs_project": ("rasterize", "rasterize_cuda", "kernel_cases:project_cases",
                   "3DGS projection: 2-D covariance through the Jacobian (+ dilation, default 0.3 px²), conic, radius", 1e-4, 1e-4),
    "gs_bin_tiles": ("rasterize", "rasterize_cuda", "kernel_cases:bin_cases",
                     "3DGS tile binning (16x16) with a per-tile front-to-back depth sort", 0, 0),
    "gs_rasterize_fwd": ("rasterize", "rasterize_cuda", "kernel_cases:raster_fwd_cases",
                         "3DGS alpha blending per tile (alpha clamp 0.99, skip < 1/255, stop at T < 1e-4)", 1e-4, 1e-5),
    "gs_rasterize_bwd": ("rasterize", "rasterize_cuda", "kernel_cases:raster_bwd_cases",
                         "3DGS rasterizer backward: d/d means2d, conics, colours, opacities", 1e-3, 1e-4),
}


def kernel_specs() -> list[KernelSpec]:
    out = []
    for name, (mod, cuda_mod, cases, summary, rtol, atol) in _KERNELS.items():
        out.append(KernelSpec(
            name=f"radiance.{name}", summary=summary,
            backends=three_backends(f"{_P}.{mod}", name, f"{_P}.{cuda_mod}"),
            cases=f"{_P}.{cases}", ptx=f"{_P}.{cuda_mod}:{name}_ptx", rtol=rtol, atol=atol,
        ))
    return out


@hookimpl
def register_commands(register):
    register(CommandSpec("radiance", f"{_P}.cli:app", "Radiance fields: hash-grid NeRF and 3D Gaussian splatting."))


@hookimpl
def register_kernels(register):
    for spec in kernel_specs():
        register(spec)


@hookimpl
def register_hardware(register):
    register(TuningSpec("radiance", str(Path(__file__).with_name("tuning.toml"))))


@hookimpl
def register_benchmarks(register):
    register(BenchmarkSpec("radiance", f"{_P}.bench:run",
                           "hash encoding and splat rasterizer fwd+bwd vs the torch references; rays/s, frames/s"))


@hookimpl
def register_demos(register):
    register(DemoSpec("radiance", f"{_P}.demo:run", "NeRF and Gaussian splatting trained ~1 minute each", order=50))


@hookimpl
def register_estimates(register):
    register(EstimateSpec("radiance", "splat", f"{_P}.estimate:splat", "memory/FLOPs of splat training"))
    register(EstimateSpec("radiance", "nerf", f"{_P}.estimate:nerf", "memory/FLOPs of hash-grid NeRF training"))
