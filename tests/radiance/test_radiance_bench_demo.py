"""The benchmark rows are well-formed (quick sizes), the plan estimates answer, and the
plugin registers its demo; ratios are not asserted (timings on a shared machine are noise)."""
from __future__ import annotations


def test_bench_quick_rows():
    from gpuforge.core.bench import BenchContext
    from gpuforge.plugins.radiance.bench import run

    rows = run(BenchContext(quick=True))
    names = {r["name"].split()[0] for r in rows}
    assert {"hash_encode", "rasterize", "composite", "nerf", "splat"} <= names
    ratios = [r for r in rows if "ratio" in r]
    assert len(ratios) == 3 and all(r["ratio"] > 0 for r in ratios)
    assert all(r["rays_per_s"] > 0 for r in rows if r["name"].startswith(("nerf", "splat")))


def test_estimates():
    from gpuforge.plugins.radiance.estimate import nerf, splat

    e = splat(["--gaussians", "1000", "--res", "128"])
    assert e.memory_bytes > 1000 * 59 * 4 and e.flops > 0
    n = nerf(["--log2-hashmap-size", "19"])
    assert n.breakdown["hash table"] == 16 * 2 ** 19 * 2 * 4


def test_plugin_registers_everything():
    from gpuforge.plugins.radiance import plugin

    got = {}
    for hook in ("register_commands", "register_kernels", "register_benchmarks", "register_demos",
                 "register_estimates", "register_hardware"):
        items = []
        getattr(plugin, hook)(items.append)
        got[hook] = items
    assert len(got["register_kernels"]) == 9
    assert all(k.name.startswith("radiance.") and set(k.backends) == {"reference", "numba-cpu", "numba-cuda"}
               for k in got["register_kernels"])
    assert got["register_demos"][0].run.endswith("demo:run")
