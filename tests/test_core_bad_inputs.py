"""Bad input to the core's commands (bench, demo, run, plugins, hw, plan and the CLI
itself): the documented exit code, one line, no traceback, nothing written, inputs
untouched; and every command an error message suggests runs."""
from __future__ import annotations

import os
import re
import shlex

import pytest

ROOT_SKIP = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                               reason="root writes into read-only folders")


def _setup(folder):
    (folder / "afile").write_text("not a folder\n")
    (folder / "ro").mkdir()
    (folder / "ro" / "keep.txt").write_text("x\n")
    (folder / "ro").chmod(0o555)
    (folder / "malformed.toml").write_text("[[step]\nargs = ")
    (folder / "nosteps.toml").write_text("[job]\nname = 'x'\n")
    (folder / "recursive.toml").write_text('[[step]]\nargs = ["--seed", "1", "run", "recursive.toml"]\n')
    (folder / "bad-workload.toml").write_text("name = 'w'\n")


def _snapshot(folder):
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None, p.stat().st_mode)
            for p in sorted(folder.rglob("*"))}


CASES = [
    # (args, env, exit code, fragment of the one error line)
    (["bench", "--out", "afile/rows.json"], {}, 3, "afile is a file"),
    pytest.param(["bench", "--out", "ro/rows.json"], {}, 3, "no permission", marks=ROOT_SKIP),
    (["bench", "nosuchplugin"], {}, 2, "pip install gpuforge-nosuchplugin"),
    (["bench", "--out", "malformed.toml"], {}, 3, "already exists"),
    (["demo", "--out", "afile/report"], {}, 3, "afile is a file"),
    pytest.param(["demo", "--out", "ro/report"], {}, 3, "no permission", marks=ROOT_SKIP),
    (["demo", "--only", "nosuchplugin"], {}, 2, "no demos registered by nosuchplugin"),
    (["run", "missing.toml"], {}, 3, "not found"),
    (["run", "malformed.toml"], {}, 3, "malformed job file"),
    (["run", "nosteps.toml"], {}, 3, "no [[step]] entries"),
    (["run", "recursive.toml"], {}, 3, "runs another job"),
    (["run", "afile/job.toml"], {}, 3, "not found"),
    (["plugins", "info", "nope"], {}, 2, "pip install gpuforge-nope"),
    (["hw", "show", "h100-sxn"], {}, 3, "did you mean h100-sxm"),
    (["hw", "roofline", "--flops", "abc", "--bytes", "1"], {}, 2, "--flops"),
    (["hw", "roofline", "--flops", "-1", "--bytes", "1"], {}, 3, "--flops"),
    (["hw", "check", "missing-folder"], {}, 3, "problem(s)"),
    (["hw", "plan-serving", "missing.toml"], {}, 3, "missing.toml"),
    (["hw", "plan-serving", "bad-workload.toml"], {}, 3, "bad-workload.toml"),
    (["--device", "gpu", "hw", "list"], {}, 2, "--device"),
    (["--device", "cuda", "hw", "bench", "--quick", "--no-fingerprint"], {}, 4, "gpuforge --device cpu hw bench"),
    (["--device", "cuda", "bench", "hardware", "--quick"], {}, 4, "gpuforge --device cpu bench hardware"),
    (["plan", "nosuch", "verb"], {}, 2, "no estimate for `nosuch verb`"),
    (["plan", "finetune", "lora", "--gpu", "nosuch"], {}, 3, "unknown GPU 'nosuch'"),
    (["plan", "fraud", "cluster", "--rows", "1e12"], {}, 2, "argument --rows: invalid int value: '1e12'"),
    (["plan", "quantize", "run", "--bits", "7"], {}, 2, "--bits: invalid choice: 7"),
    (["hw", "list"], {"NUMBA_NUM_THREADS": "abc"}, 2, "NUMBA_NUM_THREADS='abc'"),
    (["hw", "list"], {"NUMBA_NUM_THREADS": "0"}, 2, "NUMBA_NUM_THREADS='0'"),
    (["finetune", "plan", "--params", "1e9"], {"GPUFORGE_DISABLE_PLUGINS": "finetune"}, 2,
     "plugin 'finetune' is disabled"),
    (["--json", "true", "hw", "list"], {}, 2, "--json is a flag and takes no value"),
]


@pytest.fixture
def bad_env(tmp_path_factory):
    # hw bench caches its measurements: not in the user's cache, not in the checked folder.
    return {"XDG_CACHE_HOME": str(tmp_path_factory.mktemp("cache"))}


@pytest.mark.parametrize("args, env, code, fragment", CASES)
def test_bad_input_is_one_line_with_the_documented_code_and_touches_nothing(run_cli, tmp_path, bad_env, args, env,
                                                                              code, fragment):
    _setup(tmp_path)
    before = _snapshot(tmp_path)
    try:
        r = run_cli(*args, env={**bad_env, **env}, cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.code == code, r
        assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], r
        assert "Traceback" not in r.stderr
        if args[:2] != ["hw", "check"]:
            assert r.stdout == "", r
        assert _snapshot(tmp_path) == before, "a bad input wrote or changed something"
        suggested = re.findall(r"`((?:[A-Z_]+=\S* )*gpuforge [^`]*)`", lines[0])
        for cmd in suggested:  # a suggested command must run
            words = shlex.split(cmd)
            extra = {}
            while "=" in words[0] and not words[0].startswith("gpuforge"):
                k, _, v = words.pop(0).partition("=")
                extra[k] = v
            fixed = run_cli(*words[1:], env={**bad_env, **env, **extra}, cwd=tmp_path)
            assert fixed.code == 0, (cmd, fixed)
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_every_documented_exit_code_is_in_the_readme():
    from pathlib import Path

    from gpuforge.core import errors
    from gpuforge.core.run import EXIT_TERMINATED

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("Exit codes")[1].split("\n\n")[0]
    for code in (errors.EXIT_OK, errors.EXIT_INTERNAL, errors.EXIT_USAGE, errors.EXIT_BAD_INPUT,
                 errors.EXIT_UNSUPPORTED, errors.EXIT_INTERRUPTED, EXIT_TERMINATED):
        assert re.search(rf"\b{code}\b", section), f"README's exit codes do not mention {code}"
