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


# ------------------------------------------------ one canonical form per verb, aliases kept

def test_an_alias_and_its_canonical_name_are_one_command_whichever_the_plugin_defines():
    import typer

    from gpuforge.cli.main import apply_aliases

    for defined in ("lora", "train"):
        app = typer.Typer()

        @app.command(defined)
        def fit(steps: int = typer.Option(1, "--steps")):
            """Train an adapter."""

        @app.command("eval")
        def eval_():
            pass

        group = typer.main.get_group(app)
        apply_aliases(group, {"lora": "train"})
        assert list(group.commands)[:2] == ["train", "lora"]
        assert group.commands["train"].callback is group.commands["lora"].callback
        assert group.commands["lora"].short_help.startswith("Same as `train`")
        assert "Train an adapter" in (group.commands["train"].short_help or group.commands["train"].help)


def test_finetune_train_is_finetune_lora(capsys):
    assert cli_main.main(["finetune", "train", "--help"]) == 0
    train = capsys.readouterr().out
    assert cli_main.main(["finetune", "lora", "--help"]) == 0
    lora = capsys.readouterr().out
    assert "gpuforge finetune train" in train and "gpuforge finetune lora" in lora
    import re

    options = re.findall(r"--[a-z][a-z-]*", lora)
    assert len(options) > 5 and re.findall(r"--[a-z][a-z-]*", train) == options


def test_shared_verbs_forward_to_the_core_commands(capsys):
    from gpuforge.cli.main import shared_verb_args

    assert shared_verb_args("finetune", ["plan", "--params", "7e9"]) == ["plan", "finetune", "lora", "--params", "7e9"]
    assert shared_verb_args("finetune", ["plan", "lora", "--params", "7e9"]) == ["plan", "finetune", "lora", "--params", "7e9"]
    assert shared_verb_args("superres", ["bench", "--only", "frame"]) == ["bench", "superres", "--only", "frame"]
    assert shared_verb_args("radiance", ["plan", "splat"]) == ["plan", "radiance", "splat"]
    assert shared_verb_args("hw", ["bench"]) is None          # `hw bench` is the hardware plugin's own command
    assert shared_verb_args("finetune", ["eval"]) is None
    args = ["--params", "7e9", "--gpu", "t4,l4", "--json"]
    assert cli_main.main(["finetune", "plan", *args]) == 0
    alias = json.loads(capsys.readouterr().out)
    assert cli_main.main(["plan", "finetune", "lora", *args]) == 0
    assert json.loads(capsys.readouterr().out) == alias


def test_aliases_are_validated_when_the_plugin_loads():
    from gpuforge.core.plugins import InvalidContribution, Registry, validate
    from gpuforge.core.specs import CommandSpec

    validate(CommandSpec("x", "gpuforge.cli.bench:app", aliases={"lora": "train"}), "x", Registry())
    for bad in ({"lora": "lora"}, {"Lora": "train"}, {"lora": 3}):
        with pytest.raises(InvalidContribution, match="aliases"):
            validate(CommandSpec("x", "gpuforge.cli.bench:app", aliases=bad), "x", Registry())


def test_the_global_options_with_a_value_are_known_to_the_hints_and_jobs():
    import typer

    from gpuforge.cli.main import app
    from gpuforge.core.run import GLOBAL_OPTIONS_WITH_VALUE

    root = typer.main.get_command(app)
    with_value = {o for p in root.params if not (getattr(p, "is_flag", False) or getattr(p, "count", False))
                  for o in p.opts if o.startswith("--")}
    assert with_value == set(GLOBAL_OPTIONS_WITH_VALUE)
