"""Resource estimates for ``gpuforge plan radiance splat|nerf ...`` (rough, per training step
times steps; what dominates is stated in the notes)."""
from __future__ import annotations

from gpuforge.hardware.estimates import Estimate


def _opts(args: list[str], defaults: dict) -> dict:
    out = dict(defaults)
    it = iter(args)
    for a in it:
        if a.startswith("--") and a[2:].replace("-", "_") in out:
            key = a[2:].replace("-", "_")
            out[key] = type(defaults[key])(next(it))
    return out


def splat(args: list[str]) -> Estimate:
    o = _opts(args, {"gaussians": 200_000, "res": 800, "steps": 30_000, "sh_degree": 3, "per_pixel": 30})
    params = 3 + 3 + 4 + 1 + 3 * (o["sh_degree"] + 1) ** 2
    weights = o["gaussians"] * params * 4
    pixels = o["res"] * o["res"]
    # ~ 20 flops per Gaussian-pixel evaluation forward, ~3x that backward
    flops = o["steps"] * pixels * o["per_pixel"] * 20 * 4
    act = pixels * 4 * 16 + o["gaussians"] * 4 * 16  # image buffers + projected Gaussians / tile lists
    return Estimate(
        what=f"3DGS training: {o['gaussians']} Gaussians, {o['res']}x{o['res']}, {o['steps']} steps",
        memory_bytes=weights * 4 + act, flops=flops, bytes_moved=o["steps"] * (weights * 6 + act), dtype="fp32",
        breakdown={"parameters": weights, "gradients": weights, "adam": 2 * weights, "activations": act},
        notes=["rasterization forward+backward is ~95% of a step (FIELD-NOTES)",
               f"assumes ~{o['per_pixel']} Gaussians blended per pixel"])


def nerf(args: list[str]) -> Estimate:
    o = _opts(args, {"levels": 16, "features_per_level": 2, "log2_hashmap_size": 19, "steps": 30_000,
                     "samples": 262_144})
    table = o["levels"] * (1 << o["log2_hashmap_size"]) * o["features_per_level"] * 4
    mlp_flops = 2 * (o["levels"] * o["features_per_level"] * 64 + 64 * 16 + 31 * 64 + 64 * 64 + 64 * 3)
    flops = o["steps"] * o["samples"] * mlp_flops * 3
    enc_bytes = o["samples"] * o["levels"] * 8 * o["features_per_level"] * 4 * 2  # gathers + scatters
    act = o["samples"] * (64 * 4 + 32) * 4
    return Estimate(
        what=f"hash-grid NeRF training: {o['levels']} levels x 2^{o['log2_hashmap_size']} x "
             f"{o['features_per_level']}, {o['samples']} samples/step, {o['steps']} steps",
        memory_bytes=table * 4 + act, flops=flops, bytes_moved=o["steps"] * (enc_bytes + table * 4),
        dtype="fp32", breakdown={"hash table": table, "gradients": table, "adam": 2 * table, "activations": act},
        notes=["encoding + MLP dominate ('Hardware Acceleration of Neural Graphics'); the sparse Adam touches "
               "only entries hit this step, the dense-gradient bytes above are an upper bound"])
