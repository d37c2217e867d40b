"""Which NVIDIA GPUs this machine has, read from the CUDA driver API.

Only cuda-python's driver bindings are used (no torch, no numba): they answer in
milliseconds and report the real per-device limits. A machine without the NVIDIA
driver is a normal case, not an error: :func:`detect_gpus` then returns a result with
``cpu_only=True`` and a one-line reason, and never raises.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gpuforge.hardware.profiles import GpuProfile, match_device_name


@dataclass(frozen=True)
class DetectedGpu:
    index: int
    name: str
    compute_capability: str
    sm_count: int | None
    total_memory_bytes: int | None
    l2_cache_bytes: int | None
    shared_mem_per_block_optin_bytes: int | None
    shared_mem_per_sm_bytes: int | None
    registers_per_sm: int | None
    max_threads_per_sm: int | None
    clock_mhz: float | None
    memory_clock_mhz: float | None
    memory_bus_width_bits: int | None
    bandwidth_gbs: float | None
    """Theoretical: 2 transfers per memory clock (DDR) x bus width; matches datasheets
    for HBM and GDDR6/6X as the driver reports their clocks."""
    profile_id: str | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DetectionResult:
    gpus: list[DetectedGpu] = field(default_factory=list)
    cpu_only: bool = True
    reason: str = ""
    driver_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _short(exc: BaseException, limit: int = 120) -> str:
    if type(exc).__name__ == "DynamicLibNotFoundError":  # its message is a paragraph
        return "libcuda.so not found"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _error_name(driver: Any, err: Any) -> str:
    try:
        code, name = driver.cuGetErrorName(err)
        if name:
            return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # the error path must not raise in its turn
        pass
    return str(err)


def _cpu_only(reason: str, driver_version: str | None = None) -> DetectionResult:
    return DetectionResult(gpus=[], cpu_only=True, reason=f"CPU only: {reason}", driver_version=driver_version)


def detect_gpus(*, _driver: Any = None, profiles: dict[str, GpuProfile] | None = None) -> DetectionResult:
    """Every CUDA device with its limits and matching profile, or a CPU-only result.

    ``_driver`` replaces ``cuda.bindings.driver`` in tests.
    """
    driver = _driver
    if driver is None:
        try:
            from cuda.bindings import driver  # imported here: only commands that detect pay for it
        except ImportError as exc:
            return _cpu_only(f"no NVIDIA driver found (cuda-python is not installed: {_short(exc)})")
    try:
        (err,) = driver.cuInit(0)
    except Exception as exc:  # any failure here means "no usable driver", never a traceback
        # Usually cuda.pathfinder.DynamicLibNotFoundError (a RuntimeError): libcuda.so is absent.
        return _cpu_only(f"no NVIDIA driver found ({_short(exc)})")
    success = driver.CUresult.CUDA_SUCCESS
    if err != success:
        name = _error_name(driver, err)
        if name == "CUDA_ERROR_NO_DEVICE":
            return _cpu_only(f"the NVIDIA driver sees no GPU ({name}; check CUDA_VISIBLE_DEVICES)")
        return _cpu_only(f"no usable NVIDIA driver ({name})")

    version = None
    err, ver = driver.cuDriverGetVersion()
    if err == success:
        version = f"{ver // 1000}.{(ver % 1000) // 10}"
    err, count = driver.cuDeviceGetCount()
    if err != success or count == 0:
        reason = _error_name(driver, err) if err != success else "device count 0"
        return _cpu_only(f"the NVIDIA driver sees no GPU ({reason})", version)

    if profiles is None:
        from gpuforge.hardware.registry import all_profiles

        profiles = all_profiles()  # built-in and plugins' profiles: a plugin's GPU is matched too
    gpus = [_read_device(driver, i, profiles) for i in range(count)]
    return DetectionResult(gpus=gpus, cpu_only=False, reason=f"{count} NVIDIA GPU(s)", driver_version=version)


def _read_device(driver: Any, index: int, profiles: dict[str, GpuProfile]) -> DetectedGpu:
    success = driver.CUresult.CUDA_SUCCESS
    _, dev = driver.cuDeviceGet(index)

    def attr(name: str) -> int | None:
        enum = getattr(driver.CUdevice_attribute, f"CU_DEVICE_ATTRIBUTE_{name}", None)
        if enum is None:  # removed in some CUDA version: report unknown, do not fail
            return None
        err, value = driver.cuDeviceGetAttribute(enum, dev)
        return int(value) if err == success else None

    err, raw = driver.cuDeviceGetName(256, dev)
    name = raw.split(b"\0", 1)[0].decode(errors="replace").strip() if err == success else f"device {index}"
    err, total = driver.cuDeviceTotalMem(dev)
    total_memory = int(total) if err == success else None
    major, minor = attr("COMPUTE_CAPABILITY_MAJOR"), attr("COMPUTE_CAPABILITY_MINOR")
    cc = f"{major}.{minor}" if major is not None and minor is not None else "?"
    mem_clock_khz, bus = attr("MEMORY_CLOCK_RATE"), attr("GLOBAL_MEMORY_BUS_WIDTH")
    bandwidth = 2 * mem_clock_khz * 1e3 * bus / 8 / 1e9 if mem_clock_khz and bus else None
    clock_khz = attr("CLOCK_RATE")
    sm_count = attr("MULTIPROCESSOR_COUNT")
    smem_block = attr("MAX_SHARED_MEMORY_PER_BLOCK_OPTIN")

    profile = match_device_name(name, profiles)
    notes = []
    if profile is None:
        notes.append("no built-in profile matches this name; planning needs --gpu <id> "
                     "(see `gpuforge hw list`) or a profile of your own")
    else:
        if sm_count is not None and sm_count != profile.sm_count:
            notes.append(f"device reports {sm_count} SMs, profile {profile.id} says {profile.sm_count} "
                         "(MIG slice or a different variant?)")
        if cc != profile.compute_capability:
            notes.append(f"device is compute capability {cc}, profile {profile.id} says "
                         f"{profile.compute_capability}")
        if smem_block is not None and smem_block != profile.shared_mem_per_block_bytes:
            notes.append(f"device allows {smem_block} B shared memory per block, profile says "
                         f"{profile.shared_mem_per_block_bytes} B")
    return DetectedGpu(
        index=index,
        name=name,
        compute_capability=cc,
        sm_count=sm_count,
        total_memory_bytes=total_memory,
        l2_cache_bytes=attr("L2_CACHE_SIZE"),
        shared_mem_per_block_optin_bytes=smem_block,
        shared_mem_per_sm_bytes=attr("MAX_SHARED_MEMORY_PER_MULTIPROCESSOR"),
        registers_per_sm=attr("MAX_REGISTERS_PER_MULTIPROCESSOR"),
        max_threads_per_sm=attr("MAX_THREADS_PER_MULTIPROCESSOR"),
        clock_mhz=clock_khz / 1e3 if clock_khz else None,
        memory_clock_mhz=mem_clock_khz / 1e3 if mem_clock_khz else None,
        memory_bus_width_bits=bus,
        bandwidth_gbs=round(bandwidth, 1) if bandwidth else None,
        profile_id=profile.id if profile else None,
        note="; ".join(notes),
    )
