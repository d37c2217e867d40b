"""CLI conventions: nothing heavy at start-up, exit codes, one-line errors, --json."""
from __future__ import annotations

import json
import subprocess

import pytest

from gpuforge.core.safepath import python_argv

HEAVY = ("torch", "numba", "numpy", "cuda")


@pytest.mark.parametrize("args", [["--help"], ["plugins", "list"], ["hw", "list"], ["kernels", "list"], ["hw", "show", "h100-sxm"]])
def test_light_commands_import_nothing_heavy(args, isolated_env):
    code = (
        "import sys; from gpuforge.cli.main import main; rc = main(%r); "
        "print('MODULES=' + ','.join(sorted(m for m in sys.modules if m.split('.')[0] in %r)))" % (args, HEAVY)
    )
    proc = subprocess.run([*python_argv(), "-c", code], capture_output=True, text=True, env=isolated_env)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MODULES=")][-1]
    assert line == "MODULES=", f"{args} imported {line}"


def test_version(run_cli):
    r = run_cli("--version")
    assert r.code == 0 and r.stdout.startswith("gpuforge ")


def test_no_arguments_shows_help(run_cli):
    r = run_cli()
    assert "Usage" in r.stdout + r.stderr
    assert r.code in (0, 2)


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["--device", "gpu", "plugins", "list"], 2, "--device"),
        (["--backend", "fast", "kernels", "list"], 2, "--backend"),
        (["--log-format", "xml", "plugins", "list"], 2, "--log-format"),
        (["nosuchplugin"], 2, "pip install gpuforge-nosuchplugin"),
        (["hw", "show", "h100-sxn"], 3, "h100-sxm"),
        (["run", "does-not-exist.toml"], 3, "not found"),
        (["kernels", "check", "no.such_kernel"], 2, "unknown kernel"),
        (["kernels", "check", "--backend", "fast"], 2, "--backend"),
        (["plugins", "info", "nope"], 2, "pip install gpuforge-nope"),
    ],
)
def test_bad_inputs_give_one_clear_line(run_cli, args, code, fragment):
    r = run_cli(*args)
    assert r.code == code, r
    assert fragment in r.stderr, r
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_malformed_job_toml(run_cli, tmp_path):
    job = tmp_path / "job.toml"
    job.write_text("[[step]\nargs = ")
    r = run_cli("run", str(job))
    assert r.code == 3 and "malformed job file" in r.stderr, r
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1


def test_json_goes_to_stdout_and_logs_to_stderr(run_cli):
    r = run_cli("--log-format", "json", "--json", "hw", "detect")
    assert r.code == 0, r
    data = r.json()
    assert data["cpu_only"] is True
    for line in r.stderr.splitlines():
        json.loads(line)  # every log line is JSON


def test_hw_detect_without_driver_says_cpu_only(run_cli):
    r = run_cli("hw", "detect")
    assert r.code == 0, r
    assert r.stdout.startswith("CPU only")
    assert "Traceback" not in r.stderr


def test_internal_error_is_one_line_unless_debug(monkeypatch, capsys):
    from gpuforge.cli import main as cli_main

    def boom(*a, **k):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr("gpuforge.core.output.emit", boom)
    assert cli_main.main(["plugins", "list"]) == 1
    err = capsys.readouterr().err
    assert "internal error: ZeroDivisionError: boom" in err and "Traceback" not in err
    assert cli_main.main(["--debug", "plugins", "list"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_doctor_reports_and_exits_zero(run_cli):
    r = run_cli("doctor", "--json")
    assert r.code == 0, r
    checks = {c["check"]: c for c in r.json()["checks"]}
    assert checks["python"]["ok"] and checks["torch"]["ok"] and checks["numba"]["ok"]
    assert checks["numba-cuda"]["ok"], checks["numba-cuda"]
    assert checks["GPU"]["ok"] is None  # no GPU here: not applicable, not a failure
