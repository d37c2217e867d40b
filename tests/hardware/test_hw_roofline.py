"""Roofline model and `gpuforge hw roofline`."""
from __future__ import annotations

import subprocess

import pytest

from gpuforge.core.safepath import python_argv
from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.hardware.profiles import get_profile, load_profiles
from gpuforge.hardware.roofline import format_seconds, parse_number, peak_rate, roofline

HEAVY = ("torch", "numba", "numpy", "scipy", "cuda")


def test_bf16_gemm_8192_on_h100_sxm_is_2n3_over_the_profile_peak():
    h100 = get_profile("h100-sxm")
    n = 8192
    r = roofline(h100, 2 * n**3, 3 * n * n * 2, "bf16")
    # The profile holds the dense datasheet rate 989.4 TFLOPS (1,979 with sparsity / 2).
    assert h100.bf16_tensor_tflops == 989.4
    assert r.time_s == pytest.approx(2 * 8192**3 / 989.4e12, rel=1e-12)
    assert r.time_s == pytest.approx(2 * 8192**3 / 989e12, rel=1e-3)  # the rounded figure
    assert r.bound == "compute"
    assert r.intensity == pytest.approx(2 * n**3 / (6 * n * n))
    assert r.ridge == pytest.approx(989.4e12 / 3.35e12)


def test_memory_bound_and_no_work():
    h100 = get_profile("h100-sxm")
    r = roofline(h100, 1e9, 1e10, "fp32")  # intensity 0.1 << ridge
    assert r.bound == "memory" and r.time_s == pytest.approx(1e10 / 3.35e12)
    z = roofline(h100, 0, 0)
    assert z.time_s == 0 and z.bound == "none" and z.intensity is None


def test_unsupported_dtype_falls_back_to_fp32_with_a_note():
    v100 = get_profile("v100")
    rate, used, note = peak_rate(v100, "bf16")
    assert used == "fp32" and rate == v100.fp32_tflops * 1e12 and "no bf16" in note
    assert peak_rate(get_profile("a100-80gb"), "bf16")[1] == "bf16"


@pytest.mark.parametrize("text,value", [("1.1e12", 1.1e12), ("2*8192**3", 2 * 8192**3), ("65e9", 65e9),
                                        ("(1+2)*3", 9.0), ("0", 0.0), ("1_000", 1000.0)])
def test_parse_number(text, value):
    assert parse_number(text, "--flops") == value


@pytest.mark.parametrize("text,err", [("-5", BadInputError), ("-2*3", BadInputError), ("nan", BadInputError),
                                      ("inf", BadInputError), ("abc", UsageError), ("__import__('os')", UsageError),
                                      ("2**100000", UsageError), ("1/0", UsageError)])
def test_parse_number_rejects(text, err):
    with pytest.raises(err):
        parse_number(text, "--flops")


def test_format_seconds():
    assert format_seconds(0.00111) == "1.11 ms"
    assert format_seconds(4.2) == "4.2 s"
    assert format_seconds(600) == "10 min"
    assert format_seconds(36000) == "10 h"
    assert format_seconds(None) == "-"


def test_cli_roofline_all_gpus(run_cli):
    r = run_cli("hw", "roofline", "--flops", "2*8192**3", "--bytes", "402653184", "--dtype", "bf16", "--gpu", "all", "--json")
    assert r.code == 0, r
    data = r.json()
    assert {g["gpu"] for g in data["gpus"]} == set(load_profiles())
    h100 = next(g for g in data["gpus"] if g["gpu"] == "h100-sxm")
    assert h100["time_s"] == pytest.approx(2 * 8192**3 / 989.4e12)
    assert h100["bound"] == "compute"


@pytest.mark.parametrize("args,code,needle", [
    (["--flops", "-1", "--bytes", "1"], 3, "non-negative"),
    (["--flops", "1", "--bytes", "-1e9"], 3, "--bytes"),
    (["--flops", "lots", "--bytes", "1"], 2, "not a number"),
    (["--flops", "1", "--bytes", "1", "--gpu", "h1000"], 3, "unknown GPU"),
    (["--flops", "1", "--bytes", "1", "--dtype", "fp4"], 2, "unknown dtype"),
])
def test_cli_roofline_bad_inputs(run_cli, args, code, needle):
    r = run_cli("hw", "roofline", *args)
    assert r.code == code, r
    errors = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], r
    assert r.stdout == ""


@pytest.mark.parametrize("args", [["hw", "--help"], ["hw", "roofline", "--help"], ["plan", "--help"],
                                  ["hw", "roofline", "--flops", "1e12", "--bytes", "1e9", "--gpu", "all"],
                                  ["hw", "llm", "--params", "7e9", "--layers", "32", "--kv-heads", "8",
                                   "--head-dim", "128", "--context", "4096", "--gpu", "all"]])
def test_planning_commands_import_nothing_heavy(args, isolated_env):
    code = ("import sys; from gpuforge.cli.main import main; rc = main(%r); "
            "print('MODULES=' + ','.join(sorted(m for m in sys.modules if m.split('.')[0] in %r)))" % (args, HEAVY))
    proc = subprocess.run([*python_argv(), "-c", code], capture_output=True, text=True, env=isolated_env)
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MODULES=")][-1]
    assert line == "MODULES=", f"{args} imported {line}"
