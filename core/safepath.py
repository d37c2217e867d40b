"""Start Python without the current folder on ``sys.path``.

The repository keeps ``core/``, ``cli/``, ``kernels/``, ``hardware/`` and ``plugins/`` at
its root (DESIGN.md "Layout"); installed as ``gpuforge.*``. ``python -m``, ``python -c``
and ``python -`` put the current folder first on ``sys.path``, so from the repository
root those folders shadow installed packages of the same name (transformers 5 imports
Hugging Face's ``kernels``). Safe-path mode (``-P`` / ``PYTHONSAFEPATH=1``, Python 3.11+)
leaves the folder out; on Python 3.10, which has neither, :data:`SHIM` drops it by hand.

Every Python process gpuforge starts goes through :func:`python_argv`:

    subprocess.run([*python_argv(), "-m", "gpuforge.cli", "hw", "list"], env=safe_env())
"""
from __future__ import annotations

import os
import sys

# ``python -c SHIM -m MODULE ARGS`` / ``python -c SHIM -c CODE ARGS``: the interpreter
# stops parsing at the first ``-c``, so the rest is ``sys.argv`` for the shim, which
# removes the current folder ('' at sys.path[0]) and runs what -m / -c would have run.
SHIM = (
    "import runpy, sys\n"
    "del sys.path[0]\n"
    "flag, target, rest = sys.argv[1], sys.argv[2], sys.argv[3:]\n"
    "if flag == '-m':\n"
    "    sys.argv = [target, *rest]\n"
    "    runpy.run_module(target, run_name='__main__', alter_sys=True)\n"
    "elif flag == '-c':\n"
    "    sys.argv = ['-c', *rest]\n"
    "    exec(compile(target, '<string>', 'exec'), {'__name__': '__main__'})\n"
    "else:\n"
    "    raise SystemExit('safe-path shim: expected -m MODULE or -c CODE, got ' + flag)\n"
)


def python_argv(executable: str | None = None, native: bool | None = None) -> list[str]:
    """The interpreter argv prefix, to be followed by ``-m MODULE ...`` or ``-c CODE ...``.

    ``native`` (default: Python >= 3.11) picks ``-P``; otherwise the 3.10 shim."""
    executable = executable or sys.executable
    if native is None:
        native = sys.version_info >= (3, 11)
    return [executable, "-P"] if native else [executable, "-c", SHIM]


def safe_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with ``PYTHONSAFEPATH=1``, so grandchildren that
    start Python their own way are safe too (3.11+)."""
    out = dict(os.environ if env is None else env)
    out["PYTHONSAFEPATH"] = "1"
    return out
