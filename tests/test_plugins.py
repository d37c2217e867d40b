"""The plugin system: third-party plugins through entry points, isolation of broken
ones, strict mode, and the enable/disable switches."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuforge.core.safepath import python_argv

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def with_plugins(fixture_plugins):
    return {"PYTHONPATH": os.pathsep.join([str(fixture_plugins), os.environ.get("PYTHONPATH", "")])}


def _status(result):
    return {p["name"]: p for p in result.json()}


def test_builtin_plugins_load(run_cli):
    r = run_cli("plugins", "list", "--json")
    assert r.code == 0, r
    plugins = _status(r)
    assert plugins["hardware"]["status"] == "loaded"
    assert plugins["hardware"]["source"] == "builtin"
    assert plugins["kernels"]["status"] == "loaded", plugins["kernels"]["reason"]


def test_third_party_plugin_adds_a_command_that_runs(run_cli, with_plugins):
    r = run_cli("--json", "hello", "greet", "gpu", "--times", "2", env=with_plugins)
    assert r.code == 0, r
    assert r.json() == {"greeting": "hello gpu", "times": 2}
    info = run_cli("plugins", "info", "hello", "--json", env=with_plugins).json()
    assert info["source"] == "entrypoint"
    assert info["distribution"] == "gpuforge-hello" and info["version"] == "0.2.0"
    # A third-party plugin's description is its distribution's summary (pyproject's description).
    assert info["description"] == "Say hello and double numbers on the CPU or a GPU (example plugin)."
    assert info["commands"] == ["hello"] and info["kernels"] == ["hello.scale"]


def test_third_party_kernel_goes_through_the_registry(run_cli, with_plugins):
    r = run_cli("--json", "hello", "twice", "1", "2.5", env=with_plugins)
    assert r.code == 0, r
    assert r.json() == {"result": [2.0, 5.0], "kernels": {"hello.scale": "numba-cpu"}}
    check = run_cli("kernels", "check", "hello.scale", "--json", env=with_plugins)
    assert check.code == 0, check
    assert check.json()["summary"]["pass"] == 5
    # The shared verb: `gpuforge hello bench` is `gpuforge bench hello`, for any plugin.
    rows = run_cli("--json", "hello", "bench", "--quick", env=with_plugins)
    assert rows.code == 0, rows
    assert {(r["plugin"], r["bench"], r["name"]) for r in rows.json()} == {("hello", "scale", "hello.scale")}
    # Plugin text is shown as written, not parsed as rich markup ("[i]" is no style tag).
    listing = run_cli("kernels", "list", env=with_plugins)
    assert "y[i] = 2 * x[i] (float32)" in listing.stdout, listing


def test_broken_plugins_are_isolated_and_reported(run_cli, with_plugins):
    r = run_cli("plugins", "list", "--json", env=with_plugins)
    assert r.code == 0, r
    plugins = _status(r)
    expect = {
        "broken_import": "ModuleNotFoundError",
        "bad_signature": "extra_argument",
        "unknown_hook": "register_comands",
        "raising": "this hook raises on purpose",
        "wrong_type": "expected KernelSpec",
    }
    for name, fragment in expect.items():
        assert plugins[name]["status"] == "failed", (name, plugins[name])
        assert fragment in plugins[name]["reason"], (name, plugins[name]["reason"])
    # What a failing plugin registered before it failed is dropped.
    assert plugins["raising"]["registered"] == {}
    # Reported once each, as a warning on stderr.
    for name in expect:
        assert r.stderr.count(f"plugin={name}") == 1, r.stderr
    # Every other command keeps working.
    assert run_cli("hello", "greet", env=with_plugins).code == 0
    assert run_cli("hw", "list", "--json", env=with_plugins).code == 0
    assert run_cli("raising", env=with_plugins).code == 2


def test_contributions_that_cannot_work_fail_their_plugin_at_load(run_cli, with_plugins):
    """A profile with one inconsistent number made `hw list` and `plan` exit 3 while its
    plugin showed "loaded"; a kernel whose module is missing gave an internal error."""
    r = run_cli("plugins", "list", "--json", env=with_plugins)
    plugins = _status(r)
    expect = {
        "bad_profile": ["fp32_tflops", "l4-bad.toml", "gpuforge hw check"],
        "missing_module": ["kernel 'missing_module.scale' backend reference", "gpuforge_broken.no_such_module"],
        "core_name": ["'run' is one of gpuforge's own commands"],
        "bad_tuning": ["threads_per_blok"],
    }
    for name, fragments in expect.items():
        assert plugins[name]["status"] == "failed", (name, plugins[name])
        for fragment in fragments:
            assert fragment in plugins[name]["reason"], (name, plugins[name]["reason"])
        assert plugins[name]["registered"] == {}
    # Everything else keeps working, without the failed plugins' contributions.
    r = run_cli("--json", "hw", "list", env=with_plugins)
    assert r.code == 0, r
    ids = {p["id"] for p in r.json()}
    assert "l4-bad" not in ids and "example-l4x" in ids
    r = run_cli("plan", "finetune", "lora", "--params", "1e9", "--gpu", "example-l4x", "--json", env=with_plugins)
    assert r.code == 0, r
    r = run_cli("kernels", "check", "missing_module.scale", env=with_plugins)
    assert r.code == 2 and "unknown kernel" in r.stderr, r
    r = run_cli("badprofile", env=with_plugins)
    assert r.code == 2 and "bad_profile" not in r.stdout, r
    # The hint in the reason runs, and lists the problem.
    folder = plugins["bad_profile"]["reason"].split("`gpuforge hw check ")[1].split("`")[0]
    r = run_cli("hw", "check", folder)
    assert r.code == 3 and "fp32_tflops: 33.3" in r.stdout and len(r.stderr.strip().splitlines()) == 1, r


def _one_gpu_driver(name: str):
    """cuda.bindings.driver as detection sees it, for one device called ``name``."""
    import enum
    from types import SimpleNamespace

    Result = enum.IntEnum("CUresult", {"CUDA_SUCCESS": 0})
    ok = Result.CUDA_SUCCESS
    return SimpleNamespace(
        CUresult=Result, CUdevice_attribute=SimpleNamespace(), cuInit=lambda flags: (ok,),
        cuGetErrorName=lambda err: (ok, b"CUDA_SUCCESS"), cuDriverGetVersion=lambda: (ok, 13000),
        cuDeviceGetCount=lambda: (ok, 1), cuDeviceGet=lambda i: (ok, i),
        cuDeviceGetName=lambda n, dev: (ok, name.encode() + b"\0"), cuDeviceTotalMem=lambda dev: (ok, 24 << 30),
        cuDeviceGetAttribute=lambda attr, dev: (ok, 0))


def test_a_plugins_profiles_serve_detection_and_tuning(monkeypatch, fixture_plugins):
    """Profiles a plugin adds are used by detection and tuning, not only listed."""
    import sys

    sys.path.insert(0, str(fixture_plugins))
    try:
        from gpuforge.core import plugins, tuning
        from gpuforge.hardware.detect import detect_gpus
        from gpuforge.hardware.profiles import clear_cache, match_device_name

        plugins.reset_registry()
        monkeypatch.setenv("GPUFORGE_LOAD_PLUGINS", "hardware,extra_gpu")
        reg = plugins.get_registry()
        assert reg.plugins["extra_gpu"].status == "loaded", reg.plugins["extra_gpu"].reason
        found = detect_gpus(_driver=_one_gpu_driver("Example L4X PCIe"))
        assert found.gpus[0].profile_id == "example-l4x"
        prof = match_device_name("Example L4X PCIe")
        assert prof is not None and prof.id == "example-l4x"
        path = tuning.plugin_tuning_path("extra_gpu")
        assert tuning.lookup(path, "extra_gpu.kernel", prof) == {"threads_per_block": 512}
        assert tuning.lookup(path, "extra_gpu.kernel", None) == {"threads_per_block": 128}
    finally:
        sys.path.remove(str(fixture_plugins))
        plugins.reset_registry()
        clear_cache()


def test_strict_plugins_makes_a_failure_fatal(run_cli, with_plugins):
    r = run_cli("--strict-plugins", "plugins", "list", env=with_plugins)
    assert r.code == 2, r
    assert "broken_import" in r.stderr and r.stderr.count("\nerror:") + r.stderr.startswith("error:") >= 1
    r = run_cli("plugins", "list", env={**with_plugins, "GPUFORGE_STRICT_PLUGINS": "1"})
    assert r.code == 2, r


def test_disable_and_load_switches(run_cli, with_plugins, tmp_path):
    env = {**with_plugins, "GPUFORGE_DISABLE_PLUGINS": "hello,broken_import"}
    plugins = _status(run_cli("plugins", "list", "--all", "--json", env=env))
    assert plugins["hello"]["status"] == "disabled" and plugins["broken_import"]["status"] == "disabled"
    r = run_cli("hello", "greet", env=env)
    assert r.code == 2 and "disabled" in r.stderr, r

    env = {**with_plugins, "GPUFORGE_LOAD_PLUGINS": "hello"}
    plugins = _status(run_cli("plugins", "list", "--all", "--json", env=env))
    # the core libraries stay loaded whatever the switches say
    assert [n for n, p in plugins.items() if p["status"] == "loaded"] == ["hardware", "kernels", "hello"]

    cfg = tmp_path / "cfg"
    (cfg / "gpuforge").mkdir(parents=True)
    (cfg / "gpuforge" / "config.toml").write_text('[plugins]\ndisabled = ["hello"]\n')
    plugins = _status(run_cli("plugins", "list", "--all", "--json", env={**with_plugins, "XDG_CONFIG_HOME": str(cfg)}))
    assert plugins["hello"]["status"] == "disabled"
    assert "user config" in plugins["hello"]["reason"]


def test_malformed_user_config_is_one_clear_line(run_cli, tmp_path):
    (tmp_path / "gpuforge").mkdir()
    (tmp_path / "gpuforge" / "config.toml").write_text("[plugins\ndisabled = \n")
    r = run_cli("plugins", "list", env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert r.code == 3, r
    assert "config.toml" in r.stderr and "Traceback" not in r.stderr


def test_missing_plugin_names_the_package(run_cli):
    r = run_cli("plugins", "info", "radiancex")
    assert r.code == 2, r
    assert "pip install gpuforge-radiancex" in r.stderr
    r = run_cli("radiancex", "train")
    assert r.code == 2 and "pip install gpuforge-radiancex" in r.stderr, r


def test_trace_switch_prints_hook_calls(run_cli):
    r = run_cli("plugins", "list", env={"GPUFORGE_TRACE_PLUGINS": "1"})
    assert r.code == 0
    assert "hardware.register_commands()" in r.stderr


def test_every_hook_is_documented():
    """The contract cannot drift: every hook spec has a docstring and a row in docs."""
    from pathlib import Path

    from gpuforge.core import hookspecs

    doc = (Path(__file__).resolve().parents[1] / "docs" / "PLUGINS.md").read_text()
    for name in hookspecs.HOOKS:
        fn = getattr(hookspecs, name)
        assert fn.__doc__ and fn.__doc__.strip(), name
        assert f"`{name}`" in doc, f"docs/PLUGINS.md does not document {name}"


def test_core_libraries_cannot_be_disabled(run_cli):
    """hardware and kernels are libraries other plugins import: disabling them is refused
    with a notice, and their commands keep working."""
    r = run_cli("--json", "hw", "list", env={"GPUFORGE_DISABLE_PLUGINS": "hardware,kernels"})
    assert r.code == 0, r
    assert "core library" in r.stderr
    r = run_cli("--json", "plugins", "list", "--all", env={"GPUFORGE_LOAD_PLUGINS": "superres"})
    status = {p["name"]: p["status"] for p in r.json()}
    assert status["hardware"] == status["kernels"] == "loaded" and status["quantize"] == "disabled"


@pytest.fixture(scope="module")
def toy_backend(tmp_path_factory, isolated_env) -> dict:
    """The toy-backend fixture plugin installed in a folder of its own."""
    target = tmp_path_factory.mktemp("toy-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(target), str(FIXTURES / "gpuforge-toybackend")], check=True, capture_output=True, text=True)
    return {"PYTHONPATH": str(target)}


def test_a_plugin_adds_a_backend_to_another_plugins_kernel(run_cli, toy_backend, tmp_path):
    listing = run_cli("--json", "kernels", "list", env=toy_backend)
    rows = {r["name"]: r for r in listing.json()}
    assert rows["kernels.blockwise_absmax"]["backends"] == ["reference", "numba-cpu", "numba-cuda", "toy-cpu"]
    check = run_cli("--json", "kernels", "check", "kernels.blockwise_absmax", "--backend", "toy-cpu", env=toy_backend)
    assert check.code == 0, check
    assert check.json()["summary"]["pass"] > 0 and check.json()["summary"]["fail"] == 0
    # without the plugin the name is unknown: one line, exit 2
    r = run_cli("--backend", "toy-cpu", "hw", "list")
    assert r.code == 2 and "toy-cpu" in r.stderr


def test_automatic_choice_takes_the_higher_priority_backend_and_records_it(toy_backend):
    code = ("import numpy as np, json\n"
            "from gpuforge.core.kernels import call\n"
            "from gpuforge.core.run import Device, Run, execute\n"
            "r = Run('t', device=Device('cpu'), backend=None, seed=None, json=False, force=False, threads=None, params={})\n"
            "x = np.arange(10, dtype=np.float32)\n"
            "out = execute(r, lambda run: call('kernels.blockwise_absmax', x, 4))\n"
            "print(json.dumps({'kernels': r.kernels, 'out': out.tolist()}))\n")
    env = {**os.environ, **toy_backend}
    proc = subprocess.run([*python_argv(), "-c", code], capture_output=True, text=True, env=env, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res == {"kernels": {"kernels.blockwise_absmax": "toy-cpu"}, "out": [3.0, 7.0, 9.0]}
