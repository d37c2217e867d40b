"""Loading, lookup by id and by CUDA device name, selection and unit helpers."""
from __future__ import annotations

import json
import subprocess

import pytest

from gpuforge.core.errors import BadInputError, UnknownGpuError, UnsupportedError
from gpuforge.core.safepath import python_argv
from gpuforge.hardware.profiles import (
    DTYPES,
    GpuProfile,
    clear_cache,
    get_profile,
    load_profiles,
    match_device_name,
    select,
)


@pytest.fixture(scope="module")
def profiles():
    return load_profiles()


def test_ids_unique_and_match_file_names(profiles):
    assert len(profiles) == 15
    for pid, prof in profiles.items():
        assert prof.id == pid
        assert prof.path.endswith(f"/{pid}.toml")


def test_profiles_are_frozen_and_hashable(profiles):
    prof = profiles["h100-sxm"]
    with pytest.raises(AttributeError):
        prof.sm_count = 1  # type: ignore[misc]
    assert {prof: 1}[prof] == 1
    assert prof.sources["fp32_tflops"]


def test_key_figures(profiles):
    h100 = profiles["h100-sxm"]
    assert (h100.sm_count, h100.memory_gib, h100.memory_bandwidth_gbs, h100.l2_cache_mib) == (132, 80, 3350, 50)
    assert (h100.shared_mem_per_sm_kib, h100.shared_mem_per_block_kib, h100.tdp_w) == (228, 227, 700)
    assert (h100.bf16_tensor_tflops, h100.fp8_tensor_tflops, h100.fp32_tflops) == (989.4, 1978.9, 66.9)
    h200 = profiles["h200"]
    assert (h200.memory_gib, h200.memory_bandwidth_gbs) == (141, 4800)
    assert h200.bf16_tensor_tflops == h100.bf16_tensor_tflops
    assert profiles["v100"].bf16_tensor_tflops == 0 and profiles["t4"].bf16_tensor_tflops == 0
    assert h100.cc == (9, 0)


def test_unit_helpers(profiles):
    h100 = profiles["h100-sxm"]
    assert h100.peak_flops("bf16") == pytest.approx(989.4e12)
    assert h100.peak_flops("FP32") == pytest.approx(66.9e12)
    assert h100.memory_bytes == 80 * 2**30
    assert h100.bandwidth_bytes_per_s == 3.35e12
    assert h100.shared_mem_per_block_bytes == 227 * 1024 == 232448  # what the driver reports
    for dtype in DTYPES:
        assert h100.peak_flops(dtype) > 0


def test_unsupported_dtype_names_gpu_and_dtype(profiles):
    with pytest.raises(UnsupportedError, match=r"v100.*bf16|bf16.*v100"):
        profiles["v100"].peak_flops("bf16")
    with pytest.raises(UnsupportedError, match="fp8"):
        profiles["a100-80gb"].peak_flops("fp8")
    with pytest.raises(BadInputError, match="fp64"):
        profiles["h100-sxm"].peak_flops("fp64")


def test_get_profile(profiles):
    assert get_profile("H100-SXM", profiles).id == "h100-sxm"
    assert get_profile("t4").id == "t4"


def test_unknown_gpu_is_helpful(profiles):
    with pytest.raises(UnknownGpuError) as info:
        get_profile("h100", profiles)
    msg = str(info.value)
    assert "\n" not in msg
    assert "h100-sxm" in msg and "h100-pcie" in msg and "gpuforge hw list" in msg
    assert info.value.exit_code == 3


@pytest.mark.parametrize(
    "device_name, gpu_id",
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H200", "h200"),
        ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
        ("NVIDIA A100-SXM4-80GB", "a100-80gb"),
        ("NVIDIA A10G", "a10g"),
        ("NVIDIA L4", "l4"),
        ("NVIDIA L40S", "l40s"),
        ("Tesla T4", "t4"),
        ("Tesla V100-SXM2-32GB", "v100"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("NVIDIA GeForce RTX 4070", "rtx-4070"),
        ("NVIDIA GeForce RTX 3090", "rtx-3090"),
        ("NVIDIA RTX A6000", "rtx-a6000"),
        ("Orin", "jetson-agx-orin"),
    ],
)
def test_match_device_name(profiles, device_name, gpu_id):
    prof = match_device_name(device_name, profiles)
    assert prof is not None and prof.id == gpu_id


@pytest.mark.parametrize(
    "device_name",
    ["NVIDIA H200 NVL", "NVIDIA H100 NVL", "NVIDIA A10", "NVIDIA L40", "NVIDIA A100 80GB PCIe",
     "NVIDIA GeForce RTX 4070 Ti", "NVIDIA GeForce RTX 4070 SUPER", "NVIDIA GeForce RTX 3090 Ti",
     "NVIDIA GeForce RTX 4090 D", "NVIDIA RTX 6000 Ada Generation", "Tesla V100-SXM2-16GB", "AMD Radeon"],
)
def test_similar_names_do_not_match(profiles, device_name):
    assert match_device_name(device_name, profiles) is None


def test_select(profiles):
    assert [p.id for p in select("all", profiles)] == sorted(profiles)
    assert [p.id for p in select("l4", profiles)] == ["l4"]
    assert [p.id for p in select("l4, t4", profiles)] == ["l4", "t4"]
    with pytest.raises(UnknownGpuError):
        select("l4,nope", profiles)


def test_extra_dir_adds_profiles(tmp_path, profile_data, write_profile):
    profile_data["id"] = "my-h100"
    write_profile(profile_data, folder=tmp_path / "extra")
    clear_cache()
    merged = load_profiles([str(tmp_path / "extra")])
    assert "my-h100" in merged and "h100-sxm" in merged
    assert "my-h100" not in load_profiles()


def test_malformed_profile_names_file_and_problem(tmp_path, profile_data, write_profile):
    profile_data["id"] = "broken"
    profile_data["shared_mem_per_sm_kib"] = 100
    path = write_profile(profile_data, folder=tmp_path / "bad")
    with pytest.raises(BadInputError) as info:
        load_profiles([str(tmp_path / "bad")])
    assert str(path) in str(info.value) and "shared_mem_per_sm_kib" in str(info.value)


def test_invalid_toml_and_duplicates(tmp_path, profile_data, write_profile):
    (tmp_path / "syntax").mkdir()
    (tmp_path / "syntax" / "x.toml").write_text("id = \n")
    with pytest.raises(BadInputError, match="not valid TOML"):
        load_profiles([str(tmp_path / "syntax")])
    write_profile(profile_data, folder=tmp_path / "dup")  # id h100-sxm again
    with pytest.raises(BadInputError, match="two GPU profiles define id 'h100-sxm'"):
        load_profiles([str(tmp_path / "dup")])
    with pytest.raises(BadInputError, match="does not exist"):
        load_profiles([str(tmp_path / "missing")])


def test_to_dict_is_json_ready(profiles):
    d = profiles["l4"].to_dict()
    assert json.loads(json.dumps(d))["match"] == ["L4"]
    assert d["sources"]["memory_bandwidth_gbs"]


def test_import_is_light_and_fast():
    # A fresh process: loading every profile and price must not pull torch/numba/numpy/cuda.
    code = (
        "import sys, time; t = time.perf_counter();"
        "from gpuforge.hardware.profiles import load_profiles; from gpuforge.hardware.pricing import load_pricing;"
        "import gpuforge.hardware.detect, gpuforge.hardware.cpu, gpuforge.hardware.schema;"
        "load_profiles(); load_pricing(); dt = time.perf_counter() - t;"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numba', 'numpy', 'cuda'));"
        "print(dt, heavy)"
    )
    out = subprocess.run([*python_argv(), "-c", code], capture_output=True, text=True, check=True).stdout
    seconds, heavy = out.split(" ", 1)
    assert heavy.strip() == "[]"
    assert float(seconds) < 1.0


def test_dataclass_fields_cover_schema():
    from gpuforge.hardware.schema import NUMBERS, FLAGS, STRINGS

    names = set(GpuProfile.__dataclass_fields__)
    assert set(NUMBERS) | set(FLAGS) | set(STRINGS) | {"match", "sources"} <= names
