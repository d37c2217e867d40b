"""tuning.toml lookup order (gpu id > compute capability > architecture > default)
and validation against the device's limits."""
from __future__ import annotations

import pytest

from gpuforge.core import tuning
from gpuforge.core.errors import BadInputError, UnsupportedError
from gpuforge.hardware.profiles import get_profile, load_profiles

TOML = """
[default."k.a"]
threads_per_block = 128
tile = 16

[arch.hopper."k.a"]
tile = 32

[cc."9.0"."k.a"]
threads_per_block = 256

[gpu.h200."k.a"]
threads_per_block = 512

[default."k.big"]
threads_per_block = 2048

[default."k.smem"]
shared_mem_bytes = 200000
"""


@pytest.fixture()
def path(tmp_path):
    p = tmp_path / "tuning.toml"
    p.write_text(TOML)
    tuning._read.cache_clear()
    return str(p)


def test_lookup_order(path):
    profiles = load_profiles()
    assert tuning.lookup(path, "k.a") == {"threads_per_block": 128, "tile": 16}
    assert tuning.lookup(path, "k.a", get_profile("a100-80gb", profiles)) == {"threads_per_block": 128, "tile": 16}
    assert tuning.lookup(path, "k.a", get_profile("h100-sxm", profiles)) == {"threads_per_block": 256, "tile": 32}
    assert tuning.lookup(path, "k.a", get_profile("h200", profiles)) == {"threads_per_block": 512, "tile": 32}


def test_limits_are_checked(path):
    profiles = load_profiles()
    with pytest.raises(UnsupportedError, match="threads_per_block=2048"):
        tuning.lookup(path, "k.big", get_profile("h100-sxm", profiles))
    # 200 000 bytes of shared memory fit an H100 block (227 KiB) but not an A10G (99 KiB).
    assert tuning.lookup(path, "k.smem", get_profile("h100-sxm", profiles))["shared_mem_bytes"] == 200000
    with pytest.raises(UnsupportedError, match="shared_mem_bytes"):
        tuning.lookup(path, "k.smem", get_profile("a10g", profiles))


def test_bad_tuning_files(tmp_path):
    p = tmp_path / "t.toml"
    p.write_text('[defaults."k"]\nthreads_per_block = 1\n')
    tuning._read.cache_clear()
    with pytest.raises(BadInputError, match="unknown section"):
        tuning.lookup(str(p), "k")
    p.write_text('[default."k"]\nthreads = 1\n')
    tuning._read.cache_clear()
    with pytest.raises(BadInputError, match="unknown parameters"):
        tuning.lookup(str(p), "k")


def test_shipped_tuning_files_are_valid_for_every_profile():
    from gpuforge.core.plugins import get_registry

    profiles = load_profiles()
    for plugin, spec in get_registry().tuning.items():
        data = tuning._read(spec.path)
        kernels = set(data.get("default", {}))
        for section in ("arch", "cc", "gpu"):
            for layer in data.get(section, {}).values():
                kernels |= set(layer)
        assert kernels, f"{plugin}: empty tuning file"
        for prof in profiles.values():
            for kernel in kernels:
                tuning.lookup(spec.path, kernel, prof)
