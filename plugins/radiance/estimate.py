"""Resource estimates for ``gpuforge plan radiance splat|nerf ...`` (rough, per training step
times steps; what dominates is stated in the notes)."""
from __future__ import annotations

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.hardware.estimates import Estimate

# option -> (default, smallest, largest): the same ranges as `radiance splat|nerf train`
SPLAT = {"gaussians": (200_000, 1, 10**9), "res": (800, 1, 1 << 16), "steps": (30_000, 1, 10**8),
         "sh_degree": (3, 0, 3), "per_pixel": (30, 1, 10**4)}
NERF = {"levels": (16, 1, 64), "features_per_level": (2, 1, 8), "log2_hashmap_size": (19, 8, 24),
        "steps": (30_000, 1, 10**8), "samples": (262_144, 1, 10**10)}


def _opts(args: list[str], spec: dict, what: str) -> dict:
    """``--name value`` pairs -> ints, each checked against its range (exit 3 with one line)."""
    out = {k: d for k, (d, _, _) in spec.items()}
    known = ", ".join("--" + k.replace("_", "-") for k in spec)
    i = 0
    while i < len(args):
        a = args[i]
        key = a[2:].replace("-", "_") if a.startswith("--") else None
        if key not in spec:
            raise UsageError(f"`plan radiance {what}`: unknown argument {a!r}; it takes {known}")
        if i + 1 >= len(args):
            raise UsageError(f"`plan radiance {what}`: {a} needs a value")
        text = args[i + 1]
        try:
            val = float(text)
            if val != int(val):
                raise ValueError
            val = int(val)
        except (ValueError, OverflowError):
            raise BadInputError(f"{a} {text!r}: expected a whole number") from None
        _, lo, hi = spec[key]
        if not lo <= val <= hi:
            raise BadInputError(f"{a} {val}: must be between {lo} and {hi}")
        out[key] = val
        i += 2
    return out


def splat(args: list[str]) -> Estimate:
    o = _opts(args, SPLAT, "splat")
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
    o = _opts(args, NERF, "nerf")
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
