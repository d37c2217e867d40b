"""What a GPU profile (``hardware/profiles/<id>.toml``) must hold, and the checks on it.

:func:`validate_profile` returns a list of problems (empty when the profile is fine)
instead of raising, so that ``gpuforge hw check`` and the tests can show every problem
of every file at once. Besides keys and types it checks the figures against facts that
do not depend on a datasheet: the per-SM limits CUDA's occupancy calculation uses
(:data:`CC_LIMITS`, from the CUDA C++ Programming Guide) and the FP32 rate implied by
SM count x clock. A typo in a limit would otherwise silently produce launch
configurations that fail on the real device.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

# Per compute capability, from the CUDA C++ Programming Guide, "Technical Specifications
# per Compute Capability" (shared memory in KiB; per block = the opt-in dynamic maximum)
# and "Arithmetic Instructions" (FP32 fma results per clock per SM).
CC_LIMITS: dict[str, dict[str, int]] = {
    "7.0": dict(shared_mem_per_sm_kib=96, shared_mem_per_block_kib=96, max_threads_per_sm=2048,
                max_blocks_per_sm=32, fp32_lanes_per_sm=64),
    "7.2": dict(shared_mem_per_sm_kib=96, shared_mem_per_block_kib=96, max_threads_per_sm=2048,
                max_blocks_per_sm=32, fp32_lanes_per_sm=64),
    "7.5": dict(shared_mem_per_sm_kib=64, shared_mem_per_block_kib=64, max_threads_per_sm=1024,
                max_blocks_per_sm=16, fp32_lanes_per_sm=64),
    "8.0": dict(shared_mem_per_sm_kib=164, shared_mem_per_block_kib=163, max_threads_per_sm=2048,
                max_blocks_per_sm=32, fp32_lanes_per_sm=64),
    "8.6": dict(shared_mem_per_sm_kib=100, shared_mem_per_block_kib=99, max_threads_per_sm=1536,
                max_blocks_per_sm=16, fp32_lanes_per_sm=128),
    "8.7": dict(shared_mem_per_sm_kib=164, shared_mem_per_block_kib=163, max_threads_per_sm=1536,
                max_blocks_per_sm=16, fp32_lanes_per_sm=128),
    "8.9": dict(shared_mem_per_sm_kib=100, shared_mem_per_block_kib=99, max_threads_per_sm=1536,
                max_blocks_per_sm=24, fp32_lanes_per_sm=128),
    "9.0": dict(shared_mem_per_sm_kib=228, shared_mem_per_block_kib=227, max_threads_per_sm=2048,
                max_blocks_per_sm=32, fp32_lanes_per_sm=128),
}
# The same on every compute capability from 7.0 to 9.0.
COMMON_LIMITS = dict(registers_per_sm=65536, registers_per_block=65536, max_threads_per_block=1024,
                     warp_size=32)
CC_ARCHITECTURE = {"7.0": "volta", "7.2": "volta", "7.5": "turing", "8.0": "ampere", "8.6": "ampere",
                   "8.7": "ampere", "8.9": "ada", "9.0": "hopper"}
ARCHITECTURES = ("volta", "turing", "ampere", "ada", "hopper")

# key -> (type, min, max). Ranges are "plausible for an NVIDIA GPU from 2017-2026": wide
# enough for the next generation, narrow enough to catch GB-vs-MB or TFLOPS-vs-GFLOPS slips.
NUMBERS: dict[str, tuple[type, float, float]] = {
    "sm_count": (int, 1, 1024),
    "memory_gib": (float, 1, 1024),
    "memory_bandwidth_gbs": (float, 20, 50_000),
    "l2_cache_mib": (float, 0.25, 1024),
    "shared_mem_per_sm_kib": (int, 16, 1024),
    "shared_mem_per_block_kib": (int, 16, 1024),
    "registers_per_sm": (int, 1024, 1 << 20),
    "registers_per_block": (int, 1024, 1 << 20),
    "max_threads_per_sm": (int, 32, 8192),
    "max_threads_per_block": (int, 32, 8192),
    "max_blocks_per_sm": (int, 1, 256),
    "warp_size": (int, 32, 32),
    "boost_clock_mhz": (float, 300, 5000),
    "fp32_tflops": (float, 0.1, 1000),
    # Tensor rates: 0 means "not supported"; other values must be in range.
    "fp16_tensor_tflops": (float, 0, 50_000),
    "bf16_tensor_tflops": (float, 0, 50_000),
    "tf32_tensor_tflops": (float, 0, 50_000),
    "int8_tensor_tops": (float, 0, 100_000),
    "fp8_tensor_tflops": (float, 0, 100_000),
    "tdp_w": (float, 5, 5000),
}
FLAGS = ("sparsity_2_4", "fp8")
STRINGS = ("id", "name", "vendor", "architecture", "compute_capability", "form_factor")
REQUIRED = (*STRINGS, "match", *NUMBERS, *FLAGS, "sources")
OPTIONAL = {"match_exclude": list, "memory_type": str, "notes": str}
# Keys that are facts about the hardware and so must name where they come from.
SOURCED = ("compute_capability", *NUMBERS, *FLAGS)

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_CC_RE = re.compile(r"^\d+\.\d$")
FP32_TOLERANCE = 0.03  # datasheets round to 3 significant digits


def _type_ok(value: Any, kind: type) -> bool:
    if isinstance(value, bool):  # bool is an int subclass: never a number here
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float)) and math.isfinite(value)
    return isinstance(value, kind)


def validate_profile(data: dict, source: str) -> list[str]:
    """Every problem with one profile, each as ``"<source>: <key>: <what is wrong>"``."""
    problems: list[str] = []

    def bad(key: str, msg: str) -> None:
        problems.append(f"{source}: {key}: {msg}")

    if not isinstance(data, dict):
        return [f"{source}: not a TOML table"]

    for key in REQUIRED:
        if key not in data:
            bad(key, "missing")
    for key in data:
        if key not in REQUIRED and key not in OPTIONAL:
            bad(key, "unknown key (typo? see hardware/profiles/README.md)")

    for key in STRINGS:
        if key in data and not (isinstance(data[key], str) and data[key].strip()):
            bad(key, f"must be a non-empty string, got {data[key]!r}")
    for key, kind in OPTIONAL.items():
        if key in data and not isinstance(data[key], kind):
            bad(key, f"must be a {kind.__name__}, got {type(data[key]).__name__}")

    pid = data.get("id")
    if isinstance(pid, str):
        if not _ID_RE.match(pid):
            bad("id", f"{pid!r} must be lowercase letters, digits and dashes")
        if source.endswith(".toml") and Path(source).stem != pid:
            bad("id", f"{pid!r} must equal the file name {Path(source).name!r}")
    if data.get("vendor", "nvidia") != "nvidia":
        bad("vendor", f"only 'nvidia' is supported, got {data['vendor']!r}")

    for key in ("match", "match_exclude"):
        if key in data:
            value = data[key]
            if not (isinstance(value, list) and all(isinstance(s, str) and s.strip() for s in value)):
                bad(key, "must be a list of non-empty strings")
            elif key == "match" and not value:
                bad(key, "must name at least one device-name substring")

    for key, (kind, lo, hi) in NUMBERS.items():
        if key not in data:
            continue
        value = data[key]
        if not _type_ok(value, kind):
            bad(key, f"must be {'an integer' if kind is int else 'a number'}, got {value!r}")
        elif value < 0:
            bad(key, f"must not be negative, got {value}")
        elif not lo <= value <= hi:
            bad(key, f"{value} is outside the plausible range {lo:g}..{hi:g}")
    for key in FLAGS:
        if key in data and not isinstance(data[key], bool):
            bad(key, f"must be true or false, got {data[key]!r}")

    _check_compute_capability(data, bad)
    _check_sources(data, bad)
    return problems


def _check_compute_capability(data: dict, bad) -> None:
    cc = data.get("compute_capability")
    if not isinstance(cc, str):
        return
    if not _CC_RE.match(cc):
        bad("compute_capability", f"must look like \"9.0\" (a string), got {cc!r}")
        return
    if cc not in CC_LIMITS:
        bad("compute_capability", f"{cc} is not in the limits table (known: {', '.join(CC_LIMITS)}); "
                                  "add its row to hardware/schema.py first")
        return
    arch = data.get("architecture")
    if isinstance(arch, str):
        if arch not in ARCHITECTURES:
            bad("architecture", f"{arch!r} is not one of {', '.join(ARCHITECTURES)}")
        elif arch != CC_ARCHITECTURE[cc]:
            bad("architecture", f"{arch!r} does not agree with compute capability {cc} "
                                f"({CC_ARCHITECTURE[cc]})")

    expected = {**COMMON_LIMITS, **CC_LIMITS[cc]}
    for key, want in expected.items():
        if key in data and key in NUMBERS and _type_ok(data[key], int) and data[key] != want:
            bad(key, f"{data[key]} disagrees with CUDA's limit for compute capability {cc} ({want})")

    # Features that need a minimum compute capability (Ampere: BF16, TF32, 2:4 sparsity;
    # Ada/Hopper: FP8). A nonzero rate on older hardware is a copied-row mistake.
    major_minor = tuple(int(p) for p in cc.split("."))
    needs = {"bf16_tensor_tflops": (8, 0), "tf32_tensor_tflops": (8, 0), "fp8_tensor_tflops": (8, 9)}
    for key, min_cc in needs.items():
        value = data.get(key)
        if _type_ok(value, float) and value > 0 and major_minor < min_cc:
            bad(key, f"{value} but compute capability {cc} has no such Tensor Core mode (needs "
                     f"{min_cc[0]}.{min_cc[1]}+); use 0")
    if data.get("sparsity_2_4") is True and major_minor < (8, 0):
        bad("sparsity_2_4", f"2:4 sparsity needs compute capability 8.0+, this is {cc}")
    fp8_rate = data.get("fp8_tensor_tflops")
    if isinstance(data.get("fp8"), bool) and _type_ok(fp8_rate, float) and data["fp8"] != (fp8_rate > 0):
        bad("fp8", f"is {str(data['fp8']).lower()} but fp8_tensor_tflops is {fp8_rate}")

    # FP32 peak = SMs x FP32 lanes x 2 (fma) x clock: catches a wrong SM count or clock.
    sm, clk, fp32 = data.get("sm_count"), data.get("boost_clock_mhz"), data.get("fp32_tflops")
    if _type_ok(sm, int) and _type_ok(clk, float) and _type_ok(fp32, float) and sm > 0 and clk > 0 and fp32 > 0:
        implied = sm * CC_LIMITS[cc]["fp32_lanes_per_sm"] * 2 * clk * 1e6 / 1e12
        if abs(implied - fp32) > FP32_TOLERANCE * fp32:
            bad("fp32_tflops", f"{fp32} but sm_count x {CC_LIMITS[cc]['fp32_lanes_per_sm']} lanes x 2 x "
                               f"boost_clock_mhz gives {implied:.1f}; one of the three is wrong")


def _check_sources(data: dict, bad) -> None:
    sources = data.get("sources")
    if sources is None:
        return
    if not isinstance(sources, dict):
        bad("sources", "must be a table mapping each figure's key to where it comes from")
        return
    for key in SOURCED:
        text = sources.get(key)
        if not (isinstance(text, str) and text.strip()):
            bad(f"sources.{key}", "missing: every figure needs a source (datasheet/whitepaper and the figure)")
    for key in sources:
        if key not in SOURCED and key not in STRINGS and key not in OPTIONAL and key != "match":
            bad(f"sources.{key}", "names no key of the profile")
