"""What users read: tables show plugin text as written, flags show no value in help,
and `--json true` says that the flag takes no value."""
from __future__ import annotations

import re
import shlex

import pytest


def test_tables_show_text_not_markup(capsys):
    from gpuforge.core.output import print_table

    print_table([{"summary": "y[i] = sqrt(sum_j x[i, j]^2)", "odd": "[bold]x[/bold] [/]"}], title="plan [x] y")
    out = capsys.readouterr().out
    assert "y[i] = sqrt(sum_j x[i, j]^2)" in out
    assert "[bold]x[/bold] [/]" in out and "plan [x] y" in out


@pytest.mark.parametrize("args", [["--help"], ["hw", "list", "--help"], ["plugins", "list", "--help"],
                                  ["superres", "eval", "--help"], ["plan", "--help"]])
def test_flags_show_no_value_placeholder(run_cli, args):
    r = run_cli(*args)
    assert r.code == 0, r
    assert "<bool>" not in r.stdout, r.stdout
    for line in r.stdout.splitlines():
        if "--verbose" in line or "--quiet" in line:
            assert "<int>" not in line, line


@pytest.mark.parametrize("args, word", [(["--json", "true", "hw", "list"], "true"),
                                        (["hw", "list", "--json", "true"], "true"),
                                        (["--debug", "no", "plugins", "list"], "no")])
def test_a_value_after_a_flag_is_named_and_the_fix_runs(run_cli, args, word):
    r = run_cli(*args)
    assert r.code == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a flag and takes no value" in lines[0] and repr(word) in lines[0], r
    assert "pip install" not in r.stderr and r.stdout == ""
    fixed = re.search(r"`(gpuforge [^`]+)`", lines[0]).group(1)
    r = run_cli(*shlex.split(fixed)[1:])
    assert r.code == 0, (fixed, r)
