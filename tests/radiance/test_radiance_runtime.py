"""The radiance commands on the command runtime: `--device cuda` without a GPU exits 4
with one line before any work, and the runtime (not the plugin) owns the shared options."""
from __future__ import annotations

import pytest

PRODUCT = [
    ["splat", "train", "SCENE", "--out", "OUT"],
    ["splat", "render", "RUN", "--out", "OUT"],
    ["splat", "eval", "RUN"],
    ["splat", "import", "FILE.ply", "--out", "OUT"],
    ["nerf", "train", "SCENE", "--out", "OUT"],
    ["nerf", "render", "RUN", "--out", "OUT"],
    ["nerf", "eval", "RUN"],
]


@pytest.mark.parametrize("args", PRODUCT, ids=[" ".join(a[:2]) for a in PRODUCT])
def test_cuda_without_gpu_exits_4_with_one_line(run_cli, tmp_path, args):
    r = run_cli("--device", "cuda", "radiance", *args, cwd=tmp_path)
    assert r.code == 4, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cuda" in lines[0] and "Traceback" not in r.stderr, r
    assert list(tmp_path.iterdir()) == []


def test_the_runtime_owns_the_shared_options():
    import typer

    from gpuforge.plugins.radiance.cli import app

    cmd = typer.main.get_command(app)
    for group in ("splat", "nerf"):
        for name, sub in cmd.commands[group].commands.items():
            flags = {o for p in sub.params for o in p.opts}
            assert "--json" in flags and "--device" not in flags, (group, name)
            assert getattr(sub.callback, "gpuforge_runtime", None) is not None, (group, name)
    train = cmd.commands["splat"].commands["train"]
    assert {"--force", "--seed", "--threads", "--steps", "--minutes", "--cpu-minutes"} <= {
        o for p in train.params for o in p.opts}


# What the lead removes from the plugins' reach once every plugin is on the runtime:
# outputs, manifests, results, devices and seeds go through `Run`, never these.
LEGACY = {"gpuforge.core.device": None, "gpuforge.core.context": {"get_context"},
          "gpuforge.core.output": {"emit"},
          "gpuforge.core.files": {"atomic_file", "atomic_path", "atomic_dir", "write_text_atomic", "Manifest"}}


def legacy_uses(folder) -> list[str]:
    import ast

    found = []
    for f in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.ImportFrom) and node.module in LEGACY:
                names = {a.name for a in node.names}
                banned = LEGACY[node.module]
                if banned is None or names & banned:
                    found.append(f"{f.name}: from {node.module} import {', '.join(sorted(names))}")
            elif isinstance(node, ast.Import):
                found += [f"{f.name}: import {a.name}" for a in node.names if a.name in LEGACY]
    return found


def test_radiance_uses_only_the_runtime_for_outputs_devices_and_results():
    from pathlib import Path

    import gpuforge.plugins.radiance as pkg

    assert legacy_uses(Path(pkg.__file__).parent) == []


def test_the_legacy_check_sees_a_use(tmp_path):
    (tmp_path / "a.py").write_text("from gpuforge.core.device import torch_device\n"
                                   "from gpuforge.core.files import load_json, Manifest\n"
                                   "from gpuforge.core.output import print_table\n")
    assert legacy_uses(tmp_path) == ["a.py: from gpuforge.core.device import torch_device",
                                     "a.py: from gpuforge.core.files import Manifest, load_json"]
