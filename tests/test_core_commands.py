"""The core's own commands (bench, demo, run, plugins, doctor, hw, plan) run on the
command runtime: shared options from it, outputs through its transaction."""
from __future__ import annotations

import importlib
import json

import pytest

from gpuforge.cli import main as cli_main

CORE_MODULES = ["gpuforge.cli.bench", "gpuforge.cli.demo", "gpuforge.cli.doctor", "gpuforge.cli.jobs_cmd",
                "gpuforge.cli.plugins_cmd", "gpuforge.hardware.cli", "gpuforge.hardware.plan_cli"]
# Commands that compute nothing on a device never resolve it (`--device cuda` is no error there).
ON_A_DEVICE = {"bench", "demo", "hw bench", "hw fingerprint"}


@pytest.mark.parametrize("module", CORE_MODULES)
def test_every_core_command_is_on_the_runtime(module):
    app = importlib.import_module(module).app
    assert app.registered_commands, module
    for cmd in app.registered_commands:
        runtime = getattr(cmd.callback, "gpuforge_runtime", None)
        assert runtime is not None, f"{module}:{cmd.name} is not registered with core.run.command"
        full = ("hw " if module.endswith("hardware.cli") else "") + cmd.name
        assert runtime["device"] == (full in ON_A_DEVICE), full


def test_bench_out_needs_force_to_replace(tmp_path, monkeypatch, capsys):
    from gpuforge.cli import bench

    monkeypatch.setattr(bench, "run_benchmarks", lambda *a, **k: [{"plugin": "x", "name": "k", "seconds": 1.0}])
    out = tmp_path / "rows.json"
    assert cli_main.main(["bench", "--out", str(out)]) == 0
    assert json.loads(out.read_text())[0]["name"] == "k"
    assert json.loads((tmp_path / "rows.json.manifest.json").read_text())["command"] == "bench"
    out.write_text("earlier\n")
    capsys.readouterr()
    assert cli_main.main(["bench", "--out", str(out)]) == 3
    assert "--force" in capsys.readouterr().err and out.read_text() == "earlier\n"
    assert cli_main.main(["bench", "--out", str(out), "--force"]) == 0
    assert json.loads(out.read_text())[0]["name"] == "k"


def test_bench_out_is_checked_before_the_benchmarks_run(tmp_path, monkeypatch, capsys):
    from gpuforge.cli import bench

    ran = []
    monkeypatch.setattr(bench, "run_benchmarks", lambda *a, **k: ran.append(1) or [])
    (tmp_path / "file").write_text("x")
    assert cli_main.main(["bench", "--out", str(tmp_path / "file" / "rows.json")]) == 3
    assert ran == [] and "is a file" in capsys.readouterr().err


def test_demo_keeps_the_report_of_a_partly_failed_run_and_exits_1(tmp_path, monkeypatch, capsys):
    from gpuforge.core import plugins
    from gpuforge.core.specs import DemoSpec

    reg = plugins.Registry(demos=[("a", DemoSpec("ok", "json:dumps", order=0)),
                                  ("b", DemoSpec("bad", "gpuforge.no_such_module:run", order=1))])
    monkeypatch.setattr(plugins, "get_registry", lambda: reg)
    from gpuforge.core import lazy

    real = lazy.resolve
    demos = {"json:dumps": lambda ctx, out: "fine", "gpuforge.no_such_module:run": lambda ctx, out: 1 / 0}
    monkeypatch.setattr(lazy, "resolve", lambda target: demos.get(target) or real(target))
    out = tmp_path / "report"
    assert cli_main.main(["demo", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "1 demo(s) failed: bad" in err
    text = (out / "README.md").read_text()
    assert "fine" in text and "Demo failed" in text
    assert json.loads((out / "manifest.json").read_text())["demos"][1]["status"] == "failed"
    assert cli_main.main(["demo", "--out", str(out)]) == 3   # an existing report needs --force


def test_a_plugin_group_of_one_command_stays_a_group(monkeypatch):
    """Typer collapses an app of one command into that command: `gpuforge hello greet`
    then exited 2. Only an app whose command carries the group's own name collapses."""
    import typer

    from gpuforge.cli.main import _load_typer
    from gpuforge.core import lazy

    one = typer.Typer()

    @one.command()
    def greet():
        pass

    same = typer.Typer()

    @same.command("plan")
    def plan_():
        pass

    apps = {"x:one": one, "x:same": same}
    monkeypatch.setattr(lazy, "resolve", lambda target: apps[target])
    group = _load_typer("x:one", "hello")
    assert hasattr(group, "commands") and list(group.commands) == ["greet"]
    assert not hasattr(_load_typer("x:same", "plan"), "commands")


def test_core_command_names_are_reserved_for_plugins():
    from gpuforge.cli.main import CORE_COMMANDS
    from gpuforge.core.plugins import CORE_COMMAND_NAMES

    assert set(CORE_COMMANDS) == set(CORE_COMMAND_NAMES)
