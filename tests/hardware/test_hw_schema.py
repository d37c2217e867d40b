"""The schema check: built-in profiles pass, broken ones yield the expected problems."""
from __future__ import annotations

import sys

import pytest

from gpuforge.hardware.profiles import BUILTIN_DIR
from gpuforge.hardware.schema import CC_ARCHITECTURE, CC_LIMITS, SOURCED, validate_profile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUILTIN_FILES = sorted(BUILTIN_DIR.glob("*.toml"))
EXPECTED_IDS = {
    "h100-sxm", "h100-pcie", "h200", "a100-40gb", "a100-80gb", "a10g", "l4", "l40s", "t4", "v100",
    "rtx-4090", "rtx-4070", "rtx-3090", "rtx-a6000", "jetson-agx-orin",
}


def test_every_expected_profile_exists():
    assert {p.stem for p in BUILTIN_FILES} == EXPECTED_IDS


@pytest.mark.parametrize("path", BUILTIN_FILES, ids=lambda p: p.stem)
def test_builtin_profile_passes_schema(path):
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    assert validate_profile(data, str(path)) == []
    assert data["id"] == path.stem


def test_valid_profile_has_no_problems(profile_data):
    assert validate_profile(profile_data, "h100-sxm.toml") == []


def _keys(problems):
    # "<source>: <key>: <message>" -> key
    return [p.split(": ")[1] for p in problems]


def test_wrong_shared_memory_for_compute_capability(profile_data):
    profile_data["shared_mem_per_sm_kib"] = 164  # an A100's figure on a cc 9.0 profile
    problems = validate_profile(profile_data, "h100-sxm.toml")
    assert _keys(problems) == ["shared_mem_per_sm_kib"]
    assert "9.0" in problems[0] and "228" in problems[0]


def test_missing_source(profile_data):
    del profile_data["sources"]["memory_bandwidth_gbs"]
    problems = validate_profile(profile_data, "h100-sxm.toml")
    assert _keys(problems) == ["sources.memory_bandwidth_gbs"]


def test_negative_number(profile_data):
    profile_data["memory_bandwidth_gbs"] = -3350
    problems = validate_profile(profile_data, "h100-sxm.toml")
    assert _keys(problems) == ["memory_bandwidth_gbs"]
    assert "negative" in problems[0]


def test_several_problems_reported_together(profile_data):
    profile_data["shared_mem_per_block_kib"] = 99
    profile_data["tdp_w"] = -1
    del profile_data["sources"]["tdp_w"]
    del profile_data["sm_count"]
    keys = _keys(validate_profile(profile_data, "h100-sxm.toml"))
    assert set(keys) == {"shared_mem_per_block_kib", "tdp_w", "sources.tdp_w", "sm_count"}


@pytest.mark.parametrize(
    "change, key",
    [
        ({"compute_capability": 9.0}, "compute_capability"),          # a float, not "9.0"
        ({"compute_capability": "9.9"}, "compute_capability"),        # not in the table
        ({"architecture": "ampere"}, "architecture"),                 # disagrees with 9.0
        ({"warp_size": 64}, "warp_size"),
        ({"max_blocks_per_sm": 16}, "max_blocks_per_sm"),
        ({"sm_count": 13.2}, "sm_count"),                             # not an integer
        ({"sm_count": True}, "sm_count"),                             # bool is not a number
        ({"memory_gib": 80000}, "memory_gib"),                        # MiB written as GiB
        ({"fp32_tflops": 6.69}, "fp32_tflops"),                       # disagrees with SMs x clock
        ({"fp8": False}, "fp8"),                                      # rate says it has FP8
        ({"match": []}, "match"),
        ({"memry_gib": 80}, "memry_gib"),                             # typo: unknown key
        ({"id": "H100_SXM"}, "id"),
    ],
)
def test_single_mistakes_are_caught(profile_data, change, key):
    profile_data.update(change)
    assert key in _keys(validate_profile(profile_data, "h100-sxm.toml"))


def test_id_must_match_file_name(profile_data):
    assert _keys(validate_profile(profile_data, "/some/where/h100.toml")) == ["id"]


def test_features_need_their_compute_capability(profile_data):
    # A Turing card cannot have BF16, FP8 or 2:4 sparsity.
    profile_data.update(compute_capability="7.5", architecture="turing", shared_mem_per_sm_kib=64,
                        shared_mem_per_block_kib=64, max_threads_per_sm=1024, max_blocks_per_sm=16,
                        sm_count=40, boost_clock_mhz=1590, fp32_tflops=8.1)
    keys = set(_keys(validate_profile(profile_data, "h100-sxm.toml")))
    assert keys == {"bf16_tensor_tflops", "tf32_tensor_tflops", "fp8_tensor_tflops", "sparsity_2_4"}


def test_limits_table_is_complete():
    assert set(CC_LIMITS) == {"7.0", "7.2", "7.5", "8.0", "8.6", "8.7", "8.9", "9.0"}
    assert set(CC_ARCHITECTURE) == set(CC_LIMITS)
    for cc, row in CC_LIMITS.items():
        # The opt-in per-block maximum is the SM's minus 1 KiB reserved by the system from 8.0 on.
        assert row["shared_mem_per_block_kib"] == row["shared_mem_per_sm_kib"] - (1 if cc >= "8.0" else 0)


def test_every_figure_key_needs_a_source():
    assert "fp32_tflops" in SOURCED and "shared_mem_per_sm_kib" in SOURCED and "fp8" in SOURCED
