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


def test_launch_config_reads_the_plugins_tuning_and_overrides(monkeypatch):
    cfg = tuning.launch_config("kernels.pairwise_topk", {"threads_per_block": 64, "tile": 8})
    # kernels/tuning.toml's [default."kernels.pairwise_topk"] wins over the wrapper's defaults
    assert (cfg.threads, cfg.get("tile")) == (128, 32)
    with tuning.override_launch("kernels.pairwise_topk", tile=4):
        assert tuning.launch_config("kernels.pairwise_topk").get("tile") == 4
    assert tuning.launch_config("kernels.pairwise_topk").get("tile") == 32
    assert tuning.launch_config("nosuchplugin.k").threads == 256
    assert cfg.blocks(129) == 2 and cfg.stride_blocks(10**12) == tuning.MAX_GRID_BLOCKS
    assert cfg.stride_blocks(0) == 1 and cfg.blocks(1000, per_block=300) == 4
    with tuning.override_launch("p.k", threads_per_block=96), pytest.raises(UnsupportedError, match="power of two"):
        tuning.launch_config("p.k", power_of_two=True)
    with tuning.override_launch("p.k", threads_per_block=2048), pytest.raises(UnsupportedError, match="1..1024"):
        tuning.launch_config("p.k")
    with pytest.raises(ValueError, match="unknown launch parameters"):
        with tuning.override_launch("p.k", threads=3):
            pass


def test_no_backend_takes_launch_parameters():
    """Every backend takes the reference's arguments: launch sizes come from tuning.toml
    through core.tuning.launch_config, never from keyword arguments (issue 19 item 2)."""
    import inspect

    from gpuforge.core.plugins import get_registry
    from gpuforge.core.lazy import resolve

    bad = []
    for name, (_, spec) in get_registry().kernels.items():
        ref = set(inspect.signature(resolve(spec.backends["reference"])).parameters)
        for backend, target in spec.backends.items():
            try:
                fn = resolve(target)
            except Exception:  # a backend whose library is missing here: nothing to read
                continue
            extra = (set(inspect.signature(fn).parameters) - ref) & tuning._KNOWN_KEYS
            if extra:
                bad.append(f"{name} [{backend}]: {sorted(extra)}")
    assert not bad, bad
