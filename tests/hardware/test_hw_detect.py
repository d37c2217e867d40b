"""GPU detection: never raises; on a machine without a driver it says "CPU only"."""
from __future__ import annotations

import enum
import json
from types import SimpleNamespace

import pytest

from gpuforge.hardware.detect import detect_gpus
from gpuforge.hardware.profiles import load_profiles


def test_detect_on_this_machine_does_not_raise():
    result = detect_gpus()
    json.dumps(result.to_dict())
    if result.cpu_only:
        assert result.gpus == []
        assert result.reason.startswith("CPU only: ")
        assert "\n" not in result.reason and len(result.reason) < 200
    else:
        assert result.gpus


class _Result(enum.IntEnum):
    CUDA_SUCCESS = 0
    CUDA_ERROR_NO_DEVICE = 100


# Attribute values an H100 SXM reports (CUDA 12/13 driver).
H100_ATTRS = {
    "COMPUTE_CAPABILITY_MAJOR": 9, "COMPUTE_CAPABILITY_MINOR": 0, "MULTIPROCESSOR_COUNT": 132,
    "L2_CACHE_SIZE": 52428800, "MAX_SHARED_MEMORY_PER_BLOCK_OPTIN": 232448,
    "MAX_SHARED_MEMORY_PER_MULTIPROCESSOR": 233472, "MAX_REGISTERS_PER_MULTIPROCESSOR": 65536,
    "MAX_THREADS_PER_MULTIPROCESSOR": 2048, "CLOCK_RATE": 1980000, "MEMORY_CLOCK_RATE": 2619000,
    "GLOBAL_MEMORY_BUS_WIDTH": 5120,
}


def fake_driver(names, init_error=None, init_result=_Result.CUDA_SUCCESS, attrs=H100_ATTRS):
    attr_enum = enum.IntEnum("CUdevice_attribute", {f"CU_DEVICE_ATTRIBUTE_{k}": i for i, k in enumerate(attrs)})
    values = {attr_enum[f"CU_DEVICE_ATTRIBUTE_{k}"]: v for k, v in attrs.items()}

    def cu_init(flags):
        if init_error:
            raise init_error
        return (init_result,)

    ok = _Result.CUDA_SUCCESS
    return SimpleNamespace(
        CUresult=_Result,
        CUdevice_attribute=attr_enum,
        cuInit=cu_init,
        cuGetErrorName=lambda err: (ok, _Result(err).name.encode()),
        cuDriverGetVersion=lambda: (ok, 13000),
        cuDeviceGetCount=lambda: (ok, len(names)),
        cuDeviceGet=lambda i: (ok, i),
        cuDeviceGetName=lambda n, dev: (ok, names[dev].encode() + b"\0" * (n - len(names[dev]))),
        cuDeviceTotalMem=lambda dev: (ok, 85520809984),
        cuDeviceGetAttribute=lambda attr, dev: (ok, values[attr]),
    )


def test_missing_driver_library_is_cpu_only():
    class DynamicLibNotFoundError(RuntimeError):
        pass

    err = DynamicLibNotFoundError('"cuda" is an NVIDIA driver library and can only be found via system search.')
    result = detect_gpus(_driver=fake_driver([], init_error=err))
    assert result.cpu_only and result.reason == "CPU only: no NVIDIA driver found (libcuda.so not found)"


def test_driver_without_devices_is_cpu_only():
    result = detect_gpus(_driver=fake_driver([], init_result=_Result.CUDA_ERROR_NO_DEVICE))
    assert result.cpu_only and "CUDA_ERROR_NO_DEVICE" in result.reason


def test_devices_are_read_and_matched():
    result = detect_gpus(_driver=fake_driver(["NVIDIA H100 80GB HBM3", "Mystery GPU"]), profiles=load_profiles())
    assert not result.cpu_only and result.driver_version == "13.0"
    h100, other = result.gpus
    assert h100.profile_id == "h100-sxm" and h100.note == ""
    assert (h100.compute_capability, h100.sm_count, h100.shared_mem_per_sm_bytes) == ("9.0", 132, 233472)
    assert h100.bandwidth_gbs == pytest.approx(3352.3, abs=0.1)  # 2 x 2619 MHz x 5120 bit / 8
    assert other.profile_id is None and "no built-in profile" in other.note
    json.dumps(result.to_dict())


def test_mig_slice_or_variant_is_noted():
    attrs = dict(H100_ATTRS, MULTIPROCESSOR_COUNT=16)
    result = detect_gpus(_driver=fake_driver(["NVIDIA H100 80GB HBM3"], attrs=attrs))
    assert "16 SMs" in result.gpus[0].note


@pytest.mark.gpu
def test_real_gpu_agrees_with_its_profile():
    result = detect_gpus()
    if result.cpu_only:
        pytest.skip(result.reason)
    profiles = load_profiles()
    for gpu in result.gpus:
        if gpu.profile_id is None:
            continue
        prof = profiles[gpu.profile_id]
        assert gpu.compute_capability == prof.compute_capability
        assert gpu.shared_mem_per_sm_bytes == prof.shared_mem_per_sm_bytes
        assert gpu.shared_mem_per_block_optin_bytes == prof.shared_mem_per_block_bytes
        assert gpu.registers_per_sm == prof.registers_per_sm
        assert gpu.max_threads_per_sm == prof.max_threads_per_sm
        assert gpu.l2_cache_bytes == prof.l2_cache_bytes
