"""Issue 13: every command of every built-in plugin and core group is registered with
core.run.command, and no plugin assembles shared options, outputs or manifests itself."""
from __future__ import annotations

import re
from pathlib import Path

import typer.main

ROOT = Path(__file__).resolve().parents[1]
OWN = ("atomic_dir(", "atomic_file(", "atomic_path(", "Manifest(", "import emit", "output.emit", "get_context",
       "check_output(", "core.device", "os._exit")


def _context(root):
    from gpuforge.cli.clickcompat import click

    return click.Context(root)


def _leaf_commands(group, ctx, prefix: str = ""):
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        cmd = cmd.real() if hasattr(cmd, "real") else cmd  # the lazily loaded group itself
        if hasattr(cmd, "list_commands"):  # a group (typer vendors its own click)
            yield from _leaf_commands(cmd, type(ctx)(cmd, parent=ctx), f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


def test_every_command_is_on_the_runtime():
    from gpuforge.cli.main import app

    root = typer.main.get_command(app)
    missing = []
    for path, cmd in _leaf_commands(root, _context(root)):
        callback = cmd.callback
        if callback is None and path.split()[-1] in ("bench", "plan"):
            continue  # `gpuforge <plugin> bench` forwards to the core's `gpuforge bench <plugin>`
        if getattr(callback, "gpuforge_runtime", None) is None:
            missing.append(path)
    assert not missing, missing


def test_no_plugin_writes_outputs_or_options_itself():
    offenders = []
    for folder in ("plugins", "hardware", "kernels"):
        for p in sorted((ROOT / folder).rglob("*.py")):
            text = p.read_text()
            offenders += [f"{p.relative_to(ROOT)}: {own}" for own in OWN if own in text]
            for flag in re.findall(r'Option\([^()]*?"(--json|--force|--seed|--device)"', text):
                offenders.append(f"{p.relative_to(ROOT)}: declares {flag}")
    assert not offenders, offenders
