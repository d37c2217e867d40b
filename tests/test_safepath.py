"""The repository root never shadows installed packages (core/safepath.py).

``kernels/``, ``core/``, ``cli/``, ``hardware/`` and ``plugins/`` sit at the root but
install as ``gpuforge.*``. If the root folder gets onto ``sys.path`` (``python -m pytest``
or ``python -c`` without safe-path mode), ``import kernels`` finds ours instead of
Hugging Face's and transformers fails to import. These tests fail when that comes back:
in this pytest process (started by ``make test``) and in the processes tests start.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gpuforge.core.safepath import SHIM, python_argv, safe_env

ROOT = Path(__file__).resolve().parents[1]
ROOT_PACKAGES = ("kernels", "core", "cli", "hardware", "plugins")

PROBE = (
    "import importlib.util, json\n"
    f"names = {ROOT_PACKAGES!r}\n"
    "out = {}\n"
    "for n in names:\n"
    "    s = importlib.util.find_spec(n)\n"
    "    out[n] = None if s is None else (s.origin or str(list(s.submodule_search_locations or [])))\n"
    "print(json.dumps(out))\n"
)


def shadowed(resolved: dict) -> dict:
    """The names that resolve to the repository's own root folders (``<root>/kernels``...).
    pytest puts ``tests/`` on sys.path, where ``tests/kernels`` can only ever be a
    namespace package, which an installed package always wins over."""
    return {n: where for n, where in resolved.items() if where and str(ROOT / n) in where}


def test_this_process_does_not_import_root_folders():
    resolved = {}
    for name in ROOT_PACKAGES:
        spec = importlib.util.find_spec(name)
        resolved[name] = None if spec is None else (spec.origin or str(list(spec.submodule_search_locations or [])))
    assert shadowed(resolved) == {}, (
        f"the repository root is on sys.path ({sys.path[:3]}): run pytest through `make test`, "
        "`.venv/bin/pytest` or with PYTHONSAFEPATH=1 / python -P")


def test_huggingface_kernels_resolves_to_site_packages():
    spec = importlib.util.find_spec("kernels")
    if spec is None:
        pytest.skip("Hugging Face's kernels package is not installed")
    assert "site-packages" in (spec.origin or "")


@pytest.mark.parametrize("native", [True, False], ids=["-P", "3.10-shim"])
def test_started_processes_do_not_import_root_folders(native):
    if native and sys.version_info < (3, 11):
        pytest.skip("-P needs Python 3.11")
    proc = subprocess.run([*python_argv(native=native), "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                          env=safe_env(), check=True)
    assert shadowed(json.loads(proc.stdout)) == {}


def test_the_probe_sees_shadowing_without_safe_path():
    """The check above can fail: a plain ``python -c`` from the root does see kernels/."""
    env = {k: v for k, v in safe_env().items() if k != "PYTHONSAFEPATH"}
    proc = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, env=env, check=True)
    assert "kernels" in shadowed(json.loads(proc.stdout))


def test_shim_runs_modules_with_arguments(tmp_path):
    proc = subprocess.run([*python_argv(native=False), "-m", "gpuforge.cli", "--version"], cwd=ROOT,
                          capture_output=True, text=True, env=safe_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("gpuforge ")
    proc = subprocess.run([*python_argv(native=False), "-c", "import sys; print(sys.argv[1:])", "a", "b"],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "['a', 'b']"


def _python310() -> str | None:
    for cand in sorted(Path.home().glob(".pyenv/versions/3.10*/bin/python3.10")):
        return str(cand)
    found = shutil.which("python3.10")
    if found and subprocess.run([found, "-c", "pass"], capture_output=True).returncode == 0:
        return found
    return None


def test_shim_protects_python_310():
    """Python 3.10 has no -P and ignores PYTHONSAFEPATH: only the shim keeps the root out."""
    py310 = _python310()
    if py310 is None:
        pytest.skip("no Python 3.10 interpreter on this machine")
    plain = subprocess.run([py310, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "kernels" in shadowed(json.loads(plain.stdout))
    shimmed = subprocess.run([py310, "-c", SHIM, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True)
    assert shadowed(json.loads(shimmed.stdout)) == {}


def test_makefile_exports_safe_path_and_runs_pytest_through_its_script():
    text = (ROOT / "Makefile").read_text()
    assert "export PYTHONSAFEPATH = 1" in text
    recipes = [ln.strip() for ln in text.splitlines() if ln.startswith("\t")]
    for line in recipes:
        if "python -m" in line or "$(PY) -m" in line or "python -c" in line:
            raise AssertionError(f"Makefile starts Python without $(SAFE) (-P): {line}")
        if "pytest" in line and "-m pytest" in line:
            raise AssertionError(f"run pytest through its console script, not python -m: {line}")
