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
