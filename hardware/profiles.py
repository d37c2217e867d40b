"""GPU profiles: load the TOML facts, look a GPU up by id or by the name CUDA reports.

Loading reads ~15 small TOML files and imports nothing heavy (no torch, numba, numpy),
so ``gpuforge hw list`` and planning commands stay fast; results are cached per set of
folders.
"""
from __future__ import annotations

import difflib
import re
import sys
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from gpuforge.core.errors import BadInputError, UnknownGpuError, UnsupportedError
from gpuforge.hardware.schema import validate_profile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BUILTIN_DIR = Path(__file__).resolve().parent / "profiles"

# dtype -> (attribute, unit word for messages). Low-precision rates are Tensor Core rates.
_RATE_FIELDS = {
    "fp32": "fp32_tflops",
    "tf32": "tf32_tensor_tflops",
    "fp16": "fp16_tensor_tflops",
    "bf16": "bf16_tensor_tflops",
    "fp8": "fp8_tensor_tflops",
    "int8": "int8_tensor_tops",
}
DTYPES = tuple(_RATE_FIELDS)


@dataclass(frozen=True)
class GpuProfile:
    """Facts about one GPU model. Units are in the field names (see profiles/README.md)."""

    id: str
    name: str
    vendor: str
    architecture: str
    compute_capability: str
    match: tuple[str, ...]
    sm_count: int
    memory_gib: float
    memory_bandwidth_gbs: float
    l2_cache_mib: float
    shared_mem_per_sm_kib: int
    shared_mem_per_block_kib: int
    registers_per_sm: int
    registers_per_block: int
    max_threads_per_sm: int
    max_threads_per_block: int
    max_blocks_per_sm: int
    warp_size: int
    boost_clock_mhz: float
    fp32_tflops: float
    fp16_tensor_tflops: float
    bf16_tensor_tflops: float
    tf32_tensor_tflops: float
    int8_tensor_tops: float
    fp8_tensor_tflops: float
    sparsity_2_4: bool
    fp8: bool
    tdp_w: float
    form_factor: str
    match_exclude: tuple[str, ...] = ()
    memory_type: str = ""
    notes: str = ""
    path: str = ""
    # A dict is unhashable: keep it out of __hash__/__eq__ so profiles stay usable as keys.
    sources: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def cc(self) -> tuple[int, int]:
        """Compute capability as ``(major, minor)``, e.g. ``(9, 0)``."""
        major, minor = self.compute_capability.split(".")
        return int(major), int(minor)

    def peak_flops(self, dtype: str) -> float:
        """Dense peak rate in FLOP/s (OP/s for int8); Tensor Core rate for all but fp32."""
        key = dtype.lower()
        if key not in _RATE_FIELDS:
            raise BadInputError(f"unknown dtype {dtype!r} for peak rates; use one of {', '.join(DTYPES)}")
        rate = getattr(self, _RATE_FIELDS[key])
        if rate <= 0:
            raise UnsupportedError(f"{self.name} ({self.id}) has no {key} Tensor Core support; "
                                   f"pick another dtype or GPU")
        return rate * 1e12

    def supports(self, dtype: str) -> bool:
        return getattr(self, _RATE_FIELDS.get(dtype.lower(), ""), 0) > 0

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_gib * 2**30)

    @property
    def bandwidth_bytes_per_s(self) -> float:
        return self.memory_bandwidth_gbs * 1e9

    @property
    def shared_mem_per_block_bytes(self) -> int:
        return self.shared_mem_per_block_kib * 1024

    @property
    def shared_mem_per_sm_bytes(self) -> int:
        return self.shared_mem_per_sm_kib * 1024

    @property
    def l2_cache_bytes(self) -> int:
        return int(self.l2_cache_mib * 2**20)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["match"] = list(self.match)
        d["match_exclude"] = list(self.match_exclude)
        return d


_FIELD_NAMES = {f.name for f in fields(GpuProfile)}


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"GPU profile {path}: not valid TOML ({exc}); fix the file or remove it") from None
    except OSError as exc:
        raise BadInputError(f"GPU profile {path}: cannot read it ({exc.strerror})") from None


def _read_profile(path: Path) -> GpuProfile:
    data = _read_toml(path)
    problems = validate_profile(data, str(path))
    if problems:
        import shlex

        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise BadInputError(f"malformed GPU profile {problems[0]}{more}; "
                            f"`gpuforge hw check {shlex.quote(str(path))}` lists them all")
    values = {k: v for k, v in data.items() if k in _FIELD_NAMES}
    values["match"] = tuple(data["match"])
    values["match_exclude"] = tuple(data.get("match_exclude", ()))
    values["path"] = str(path)
    return GpuProfile(**values)


@lru_cache(maxsize=16)
def _load(dirs: tuple[str, ...]) -> dict[str, GpuProfile]:
    profiles: dict[str, GpuProfile] = {}
    for folder in dirs:
        root = Path(folder)
        if not root.is_dir():
            raise BadInputError(f"GPU profile folder {root} does not exist or is not a folder")
        for path in sorted(root.glob("*.toml")):
            profile = _read_profile(path)
            if profile.id in profiles:
                # Silently preferring one would make plans depend on plugin load order.
                raise BadInputError(f"two GPU profiles define id {profile.id!r}: "
                                    f"{profiles[profile.id].path} and {path}; rename one")
            profiles[profile.id] = profile
    return profiles


def check_profiles(paths: Iterable[str | Path]) -> tuple[int, list[str]]:
    """Every problem of every profile in ``paths`` (TOML files or folders of them), ids
    clashing across them included: ``(profiles read, problems)``. Never raises."""
    problems: list[str] = []
    seen: dict[str, Path] = {}
    count = 0
    for given in paths:
        given = Path(given)
        if given.is_dir():
            files = sorted(given.glob("*.toml"))
        elif given.is_file():
            files = [given]
        else:
            problems.append(f"{given}: no such file or folder")
            continue
        for path in files:
            count += 1
            try:
                data = _read_toml(path)
            except BadInputError as exc:
                problems.append(str(exc))
                continue
            problems += validate_profile(data, str(path))
            pid = data.get("id") if isinstance(data, dict) else None
            if isinstance(pid, str):
                if pid in seen and seen[pid].resolve() != path.resolve():
                    problems.append(f"{path}: id: {pid!r} is also defined by {seen[pid]}; rename one")
                seen.setdefault(pid, path)
    return count, problems


def load_profiles(extra_dirs: Iterable[str] = ()) -> dict[str, GpuProfile]:
    """Built-in profiles plus those in ``extra_dirs`` (plugins, user folders), by id.

    Raises :class:`BadInputError` naming the file when a profile is malformed.
    """
    dirs = (str(BUILTIN_DIR),) + tuple(str(Path(d).expanduser().resolve()) for d in extra_dirs)
    return dict(_load(dirs))  # a copy: callers may filter it without touching the cache


def _known() -> dict[str, GpuProfile]:
    """Built-in profiles and those the loaded plugins registered."""
    from gpuforge.hardware.registry import all_profiles

    return all_profiles()


def clear_cache() -> None:
    """Forget loaded profiles (tests, or after editing a profile in a long-lived process)."""
    _load.cache_clear()


def get_profile(gpu_id: str, profiles: dict[str, GpuProfile] | None = None) -> GpuProfile:
    """The profile with this id (case-insensitive), or :class:`UnknownGpuError`."""
    profiles = _known() if profiles is None else profiles
    key = gpu_id.strip().lower()
    if key in profiles:
        return profiles[key]
    # Ids that contain what was typed first ("h100" -> h100-sxm, h100-pcie), then spelling.
    close = sorted(i for i in profiles if key and key in i)[:3]
    close += [i for i in difflib.get_close_matches(key, list(profiles), n=3, cutoff=0.5) if i not in close]
    close = close[:3]
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownGpuError(f"unknown GPU {gpu_id!r}: {hint}run `gpuforge hw list` to see the "
                          f"{len(profiles)} known GPU ids")


def _contains_word(haystack: str, needle: str) -> bool:
    # Whole-token match, so that "L4" does not match "L40S" nor "T4" "T400".
    pattern = r"(?<![A-Za-z0-9])" + re.escape(needle) + r"(?![A-Za-z0-9])"
    return re.search(pattern, haystack, flags=re.IGNORECASE) is not None


def match_device_name(name: str, profiles: dict[str, GpuProfile] | None = None) -> GpuProfile | None:
    """The profile whose ``match`` strings appear in a CUDA device name, or None.

    The longest matching string wins, so a specific pattern beats a generic one.
    """
    profiles = _known() if profiles is None else profiles
    best: tuple[int, str] | None = None
    for profile in profiles.values():
        if any(_contains_word(name, ex) for ex in profile.match_exclude):
            continue
        for pattern in profile.match:
            if _contains_word(name, pattern):
                candidate = (len(pattern), profile.id)
                if best is None or candidate[0] > best[0] or (candidate[0] == best[0] and candidate[1] < best[1]):
                    best = candidate
    return profiles[best[1]] if best else None


def select(gpu: str, profiles: dict[str, GpuProfile] | None = None) -> list[GpuProfile]:
    """Profiles named by ``gpu``: an id, a comma-separated list of ids, or ``all``."""
    profiles = _known() if profiles is None else profiles
    if gpu.strip().lower() == "all":
        return [profiles[k] for k in sorted(profiles)]
    ids = [part for part in (p.strip() for p in gpu.split(",")) if part]
    if not ids:
        raise BadInputError("no GPU given; name a GPU id or 'all' (see `gpuforge hw list`)")
    return [get_profile(i, profiles) for i in ids]
