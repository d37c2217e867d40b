"""``gpuforge kernels inspect``: CUDA kernels compiled for a GPU profile without a GPU
(NVVM + nvJitLink from numba-cuda[cu13]); registers, shared/local memory, spills and
occupancy at the tuned launch."""
from __future__ import annotations

import os

import pytest

from gpuforge.core.errors import GpuforgeError
from gpuforge.core.kernel_inspect import compile_resources, cubin_regcounts, parse_info_log
from gpuforge.core.lazy import resolve

COMPILES = pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                              reason="compile_ptx does not work under the simulator")
# The compute capabilities the issue names: A100, L4/RTX 4090, H100.
CCS = [(8, 0), (8, 9), (9, 0)]

# What nvJitLink -verbose printed for a copy kernel (sm_90, nvJitLink 13.5), shortened.
LOG = """ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function '_Z4copy' for 'sm_90'
ptxas info    : Function properties for _Z4copy
ptxas         .     16 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 28 registers, used 0 barriers
ptxas info    : Compile time = 15.850 ms
info    : 8 bytes gmem
info    : Function properties for '_Z4copy':
info    : used 30 registers, used 5 barriers, 16 stack, 5120 bytes smem, 640 bytes cmem[0], 16 bytes lmem
"""


def test_parse_info_log():
    r = parse_info_log(LOG, "_Z4copy")
    # Registers from the linker (it counts the 64-bit division routine the entry calls).
    assert (r.registers, r.shared_bytes, r.local_bytes) == (30, 5120, 16)
    assert (r.spill_store_bytes, r.spill_load_bytes) == (8, 4)
    with pytest.raises(GpuforgeError, match="no report"):
        parse_info_log(LOG, "_Z5other")
    with pytest.raises(GpuforgeError, match="cannot read"):
        parse_info_log(LOG.replace("bytes smem", "smem"), "_Z4copy")


def _entry(target: str, index: int = 0):
    fn, sig, *_ = resolve(target)()[index]
    return fn, sig


@COMPILES
@pytest.mark.parametrize("cc", CCS, ids=lambda cc: f"sm_{cc[0]}{cc[1]}")
def test_compiled_resources_agree_with_the_cubin(cc):
    # blockwise absmax: a 1024-float shared reduction buffer, no local arrays.
    fn, sig = _entry("gpuforge.kernels.blockwise_cuda:blockwise_absmax_ptx")
    res, cubin = compile_resources(fn, sig, cc)
    assert cubin_regcounts(cubin)[res.entry] == res.registers
    assert 0 < res.registers <= 255
    # 4096 bytes; ptxas sets 1 KiB more aside on sm_90 once a kernel uses shared memory.
    assert res.shared_bytes == (5120 if cc == (9, 0) else 4096)
    assert res.local_bytes == 0 and res.spill_store_bytes == res.spill_load_bytes == 0
    # pairwise top-k, k <= 256 and 256-row tiles: 256 accumulators + 256 distances (f32)
    # + 256 indices (i64) live in local memory = 4096 bytes; the tile is 256 x 32 floats.
    fn, sig = _entry("gpuforge.kernels.pairwise_cuda:pairwise_topk_ptx", 1)
    res, cubin = compile_resources(fn, sig, cc)
    assert cubin_regcounts(cubin)[res.entry] == res.registers
    assert res.local_bytes >= 256 * (4 + 4 + 8)
    assert res.shared_bytes >= 256 * 32 * 4


@COMPILES
def test_spills_are_reported():
    # The rasterizer's backward pass needs ~80 registers; capped at 32 it must spill.
    fn, sig = _entry("gpuforge.plugins.radiance.rasterize_cuda:gs_rasterize_bwd_ptx")
    free, _ = compile_resources(fn, sig, (9, 0))
    capped, _ = compile_resources(fn, sig, (9, 0), max_registers=32)
    assert free.spill_store_bytes == 0 and free.registers > 32
    assert capped.registers <= 32 and capped.spill_store_bytes > 0 and capped.spill_load_bytes > 0


@COMPILES
@pytest.mark.parametrize("gpu", ["a100-80gb", "l4"])
def test_inspect_rows_at_cc_8_0_and_8_9(gpu):
    from gpuforge.core.kernel_inspect import inspect_kernels
    from gpuforge.hardware.occupancy import occupancy
    from gpuforge.hardware.profiles import get_profile

    profile = get_profile(gpu)
    rows = inspect_kernels(["quantize.absmax_dq_encode", "radiance.gs_rasterize_fwd"], gpu)
    by_fn = {r["function"]: r for r in rows}
    assert set(by_fn) == {"dq_encode_kernel", "raster_fwd_kernel"}
    for r in rows:
        assert r["cc"] == profile.compute_capability
        occ = occupancy(profile, r["threads_per_block"], r["registers"], r["shared_bytes"])
        assert r["occupancy"] == pytest.approx(occ.occupancy, abs=1e-4)
        assert r["limited_by"] == occ.limited_by
    # Launch sizes: tuning.toml's default for the encoder (128), fixed ones from the ptx() list.
    assert (by_fn["dq_encode_kernel"]["threads_per_block"], by_fn["dq_encode_kernel"]["launch_source"]) == (128, "tuning.toml")
    assert (by_fn["raster_fwd_kernel"]["threads_per_block"], by_fn["raster_fwd_kernel"]["launch_source"]) == (256, "fixed")
    assert not any(r["flags"] for r in rows)


def test_flags_one_thread_blocks_spills_and_low_occupancy(monkeypatch):
    """The flags, from given compiler figures: one thread per block is serial; 255
    registers x 256 threads leave 8 of 64 warps on an H100 (12.5%, registers); spills;
    ~80 registers x 1024 threads do not fit one block."""
    from gpuforge.core import kernel_inspect
    from gpuforge.core.kernel_inspect import Resources
    from gpuforge.core.kernels import kernel_specs
    from gpuforge.hardware.profiles import get_profile

    def fn():
        pass

    spec = kernel_specs()["radiance.gs_rasterize_bwd"]
    launches = [{"threads_per_block": 1}, {"threads_per_block": 256}, {"threads_per_block": 256},
                {"threads_per_block": 1024}]
    figures = iter([(32, 0), (255, 0), (64, 96), (82, 0)])
    monkeypatch.setattr(kernel_inspect, "_entries", lambda spec: [(fn, "void()", dict(v, variant=str(i)))
                                                                  for i, v in enumerate(launches)])

    def fake_compile(fn, sig, cc):
        regs, spill = next(figures)
        return Resources("e", regs, 0, spill, spill // 2, spill // 2), b""

    monkeypatch.setattr(kernel_inspect, "compile_resources", fake_compile)
    serial, heavy, spilling, big = kernel_inspect.inspect_spec("radiance", spec, get_profile("h100-sxm"))
    assert any(f.startswith("serial: 1 thread") for f in serial.flags)
    assert heavy.occupancy == 0.125 and heavy.flags == ["occupancy 12% < 25%, limited by registers"]
    assert spilling.spill_bytes == 96 and spilling.flags[0].startswith("spills (48 B stored")
    assert big.blocks_per_sm == 0 and any("cannot launch" in f for f in big.flags)


def test_tuned_launch_follows_the_gpu(tmp_path, monkeypatch):
    """The block size is the tuning lookup for the named GPU (gpu id > cc > arch > default)."""
    from gpuforge.core import kernel_inspect, tuning
    from gpuforge.hardware.profiles import get_profile

    toml = tmp_path / "tuning.toml"
    toml.write_text('[default."p.k"]\nthreads_per_block = 128\n[arch.hopper."p.k"]\nthreads_per_block = 512\n')
    tuning._read.cache_clear()
    monkeypatch.setattr(tuning, "plugin_tuning_path", lambda plugin: str(toml))
    assert kernel_inspect.tuned_launch("p", "p.k", get_profile("l4")) == {"threads_per_block": 128}
    assert kernel_inspect.tuned_launch("p", "p.k", get_profile("h100-sxm")) == {"threads_per_block": 512}


def _cuda_functions() -> set[tuple[str, str]]:
    from gpuforge.core.kernels import kernel_specs

    out = set()
    for name, spec in kernel_specs().items():
        if "numba-cuda" in spec.backends:
            out |= {(name, e[0].__name__) for e in resolve(spec.ptx)()}
    return out


@COMPILES
def test_cli_inspect_h100_lists_every_cuda_kernel(run_cli):
    res = run_cli("kernels", "inspect", "--gpu", "h100-sxm", "--json", timeout=600)
    assert res.code == 0, res
    rows = res.json()
    assert {(r["kernel"], r["function"]) for r in rows} == _cuda_functions()
    for r in rows:
        assert r["cc"] == "9.0" and r["gpu"] == "h100-sxm"
        assert r["registers"] > 0 and r["threads_per_block"] > 0 and 0 < r["occupancy"] <= 1
        for key in ("shared_bytes", "local_bytes", "spill_bytes"):
            assert r[key] >= 0
        low = r["occupancy"] < 0.25
        assert low == any("occupancy" in f for f in r["flags"])
        assert (r["spill_bytes"] > 0) == any(f.startswith("spills") for f in r["flags"])


def test_cli_inspect_errors(run_cli):
    # CUDA 13 cannot target Volta (cc 7.0): exit 4 with one line.
    res = run_cli("kernels", "inspect", "fraud.knn", "--gpu", "v100")
    assert res.code == 4 and "7.0" in res.stderr, res
    res = run_cli("kernels", "inspect", "--gpu", "h1000")
    assert res.code == 3, res
    res = run_cli("kernels", "inspect", "no.such", "--gpu", "l4")
    assert res.code == 2, res


def test_cli_inspect_under_the_simulator_compiles_in_a_child(run_cli):
    res = run_cli("kernels", "inspect", "fraud.knn", "--gpu", "l4", "--json",
                  env={"NUMBA_ENABLE_CUDASIM": "1"})
    assert res.code == 0, res
    (row,) = res.json()
    assert row["function"] == "knn_kernel" and row["cc"] == "8.9"
