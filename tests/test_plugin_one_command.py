"""Issue 17 item 7 in the shape that broke: a third-party plugin whose typer app has ONE
command (the shape of the earlier docs/PLUGINS.md example). Typer collapses such an app
into its command, so `gpuforge greeter greet gpu` exited 2 ("unexpected extra argument");
and an entry-point plugin showed no description. tests/test_plugin_doc.py runs today's
example, which has two commands and so never meets the collapse; this test keeps the
one-command shape covered through the real CLI."""
from __future__ import annotations

import os
import subprocess
import sys

FILES = {
    "pyproject.toml": '''[build-system]
requires = ["setuptools>=69"]
build-backend = "setuptools.build_meta"

[project]
name = "gpuforge-greeter"
version = "0.1.0"
description = "Greets you (one-command test plugin)."

[project.entry-points.gpuforge]
greeter = "gpuforge_greeter.plugin"

[tool.setuptools]
packages = ["gpuforge_greeter"]
''',
    "gpuforge_greeter/__init__.py": "",
    "gpuforge_greeter/plugin.py": '''from gpuforge.core.hookspecs import hookimpl
from gpuforge.core.specs import CommandSpec


@hookimpl
def register_commands(register):
    register(CommandSpec("greeter", "gpuforge_greeter.cli:app", "Greets you."))
''',
    "gpuforge_greeter/cli.py": '''import typer

app = typer.Typer(help="Greets you.", no_args_is_help=True)


@app.command()
def greet(name: str = typer.Argument("world"), times: int = typer.Option(1, "--times")) -> None:
    """Print a greeting."""
    typer.echo("\\n".join([f"hello {name}"] * times))
''',
}


def test_a_one_command_plugin_is_a_group_and_has_its_description(tmp_path, run_cli):
    src = tmp_path / "gpuforge-greeter"
    for rel, body in FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(body)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(src)], check=True, capture_output=True, text=True)
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}

    r = run_cli("greeter", "greet", "gpu", "--times", "2", env=env)
    assert r.code == 0, r
    assert r.stdout.splitlines() == ["hello gpu", "hello gpu"], r

    r = run_cli("plugins", "list", "--json", env=env)
    assert r.code == 0, r
    info = {p["name"]: p for p in r.json()}["greeter"]
    assert info["status"] == "loaded", info
    assert info["description"] == "Greets you (one-command test plugin).", info
