"""Shared fixtures: run the CLI in a fresh process, install the fixture plugins.

Two pytest processes run the suite (see the Makefile): the main one (no CUDA
simulator) and one with ``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported,
which runs only tests marked ``cudasim`` (files named ``*cuda_sim*``/``*cudasim*``
are marked automatically).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpuforge.core.safepath import python_argv
from gpuforge.core.threads import prefer_passive_openmp

prefer_passive_openmp()   # as the CLI does, before torch or numba load
# Every Python the tests start leaves the current folder off sys.path (core/safepath.py):
# from the repository root, kernels/ would shadow Hugging Face's `kernels`.
os.environ["PYTHONSAFEPATH"] = "1"

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

if SIMULATOR:
    # syncthreads-heavy kernels run 2-3.5x faster in the simulator (FIELD-NOTES.md).
    sys.setswitchinterval(1e-4)
    from gpuforge.core.cudasim import patch_shared_array_race

    patch_shared_array_race()


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        if "cuda_sim" in name or "cudasim" in name:
            item.add_marker(pytest.mark.cudasim)
        if item.get_closest_marker("cudasim") and not SIMULATOR:
            item.add_marker(pytest.mark.skip(reason="runs in the simulator process (NUMBA_ENABLE_CUDASIM=1)"))
        if item.get_closest_marker("gpu") and not _gpu_present():
            item.add_marker(pytest.mark.skip(reason="needs a real NVIDIA GPU"))


def pytest_configure(config):
    config.addinivalue_line("markers", "cudasim: runs CUDA kernels in Numba's simulator (own pytest process)")
    _ctrl_c_reaches_children()


def _ctrl_c_reaches_children() -> None:
    """A shell starts background jobs (``make test &``, ``nohup``) with SIGINT ignored, and an
    ignored signal stays ignored across exec: the commands the Ctrl-C tests start would then
    never see their SIGINT. Those tests stand for a user pressing Ctrl-C at a terminal, so
    give this process a SIGINT handler again (a handler, unlike SIG_IGN, is reset to the
    default on exec, and Python turns the default into KeyboardInterrupt)."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


_GPU = None


def _gpu_present() -> bool:
    global _GPU
    if _GPU is None:
        if SIMULATOR:
            _GPU = False
        else:
            from gpuforge.hardware.detect import detect_gpus

            _GPU = not detect_gpus().cpu_only
    return _GPU


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.code, self.stdout, self.stderr = proc.returncode, proc.stdout, proc.stderr

    def json(self):
        return json.loads(self.stdout)

    def __repr__(self):
        return f"<exit {self.code}\nstdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}>"


@pytest.fixture(scope="session")
def isolated_env(tmp_path_factory) -> dict[str, str]:
    """Environment for CLI subprocesses: an empty user config, no plugin switches."""
    cfg = tmp_path_factory.mktemp("xdg-config")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUFORGE_")}
    env["XDG_CONFIG_HOME"] = str(cfg)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    return env


@pytest.fixture(scope="session")
def run_cli(isolated_env):
    """``run_cli("hw", "list", env={...}, cwd=...) -> CliResult`` in a fresh process."""

    def _run(*args: str, env: dict | None = None, cwd: str | Path | None = None, timeout: float = 300) -> CliResult:
        full_env = {**isolated_env, **(env or {})}
        proc = subprocess.run(
            [*python_argv(), "-m", "gpuforge.cli", *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
        )
        return CliResult(proc)

    return _run


@pytest.fixture(scope="session")
def fixture_plugins(tmp_path_factory) -> Path:
    """The example plugin of docs/PLUGINS.md and the deliberately broken third-party plugins, installed with pip
    into a folder of their own (put it on PYTHONPATH to "install" them)."""
    from plugin_doc import write_example

    hello = write_example(tmp_path_factory.mktemp("doc-example"))  # the example of docs/PLUGINS.md
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
         str(hello), *(str(FIXTURES / name) for name in ("gpuforge-broken", "gpuforge-extra-gpu", "gpuforge-steps"))],
        check=True, capture_output=True, text=True,
    )
    return target
