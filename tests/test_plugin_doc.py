"""docs/PLUGINS.md cannot drift: its example plugin is built from the page and every
command of its session runs as shown; the profile schema it documents is the one
hardware/schema.py checks."""
from __future__ import annotations

import subprocess
import sys

from plugin_doc import DOC, example_files, session, write_example

from gpuforge.core.safepath import python_argv


def test_the_documented_example_plugin_runs_as_documented(tmp_path, isolated_env):
    write_example(tmp_path)
    site = tmp_path / "site"
    env = {**isolated_env, "PYTHONPATH": str(site)}
    commands = session()
    assert len(commands) >= 8
    for cmd in commands:
        if cmd.argv[:2] == ["pip", "install"]:
            argv = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), *cmd.argv[2:]]
        else:
            assert cmd.argv[0] == "gpuforge", cmd.argv
            argv = [*python_argv(), "-m", "gpuforge.cli", *cmd.argv[1:]]
        proc = subprocess.run(argv, cwd=tmp_path, env={**env, **cmd.env}, capture_output=True, text=True, timeout=600)
        shown = " ".join(cmd.argv)
        assert proc.returncode == cmd.exit_code, f"{shown}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, f"{shown}\n{proc.stderr}"
        if cmd.output:
            assert proc.stdout.rstrip("\n").splitlines() == cmd.output, f"{shown}\n{proc.stdout}"
        if cmd.exit_code:
            assert len(proc.stderr.strip().splitlines()) == 1, f"{shown}: one line\n{proc.stderr}"
    assert (tmp_path / "doubled.json").read_text() == "[2.0, 5.0]\n"


def test_the_example_declares_every_part_the_page_explains():
    files = example_files()
    assert {"pyproject.toml", "gpuforge_hello/plugin.py", "gpuforge_hello/cli.py", "gpuforge_hello/kernels.py",
            "gpuforge_hello/kernels_cuda.py", "gpuforge_hello/bench.py"} <= set(files)
    assert "description = " in files["pyproject.toml"]
    assert "from gpuforge.core.specs import KernelCase" in files["gpuforge_hello/kernels.py"]
    assert "@command(" in files["gpuforge_hello/cli.py"] and "@app.command" not in files["gpuforge_hello/cli.py"]


def test_the_documented_profile_schema_is_the_checked_one():
    from gpuforge.hardware import schema

    doc = DOC.read_text()
    for key in (*schema.REQUIRED, *schema.OPTIONAL):
        shown = "[sources]" if key == "sources" else key
        assert f"`{shown}`" in doc, f"docs/PLUGINS.md does not document the profile key {key}"


def test_the_documented_benchmark_row_keys_are_the_ones_row_writes():
    from gpuforge.core.bench import BenchContext, row

    keys = row("k", "numba-cpu", 1.0, baseline="ref", baseline_seconds=2.0, bytes_moved=1e9, flops=1e9,
               ctx=BenchContext(cpu_peak={"bandwidth_gbs": 10.0, "fp32_gflops": 10.0}))
    doc = DOC.read_text()
    for key in keys:
        assert f"`{key}`" in doc, f"docs/PLUGINS.md does not document the benchmark row key {key}"
