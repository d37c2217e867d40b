"""``make gpu-check`` without a GPU: the GPU parts say "no GPU", what can run here runs,
the report is valid JSON after every part, and the bare-machine path installs the bundle
offline."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpuforge.core import gpu_bundle, gpucheck
from gpuforge.core.safepath import python_argv

ROOT = Path(__file__).resolve().parents[1]


def _no_gpu() -> bool:
    return not gpucheck.detect_gpu()["present"]


def test_a_part_over_its_limit_is_killed_with_its_children():
    code = ("import subprocess, sys, time\n"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print('started', flush=True)\n"
            "time.sleep(60)\n")
    t0 = time.perf_counter()
    entry = gpucheck.run_part([sys.executable, "-c", code], timeout=2)
    assert time.perf_counter() - t0 < 20
    assert entry["status"] == "timed out" and entry["exit_code"] is None
    assert "started" in entry["stdout_tail"]


def test_report_is_rewritten_atomically(tmp_path):
    path = tmp_path / "r.json"
    gpucheck.write_report(path, {"parts": {"a": {"status": "ok"}}})
    gpucheck.write_report(path, {"parts": {"a": {"status": "ok"}, "b": {"status": "failed"}}})
    assert json.loads(path.read_text())["parts"]["b"]["status"] == "failed"
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.skipif(not _no_gpu(), reason="checks the no-GPU report")
def test_without_a_gpu_the_gpu_parts_say_so_and_it_exits_0(tmp_path):
    env = {**os.environ, "GPU_REPORT_DIR": str(tmp_path), "PYTHONSAFEPATH": "1",
           "GPU_CHECK_PARTS": "detect,gpu_bench,e2e,pytest_gpu,kernels_check_cuda,simulator:kernels.blockwise_absmax"}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([*python_argv(), "-m", "gpuforge.core.gpucheck"], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / gpucheck.REPORT).read_text())
    parts = report["parts"]
    assert report["gpu"]["present"] is False
    for name in ("gpu_bench", "e2e", "pytest_gpu", "kernels_check_cuda"):
        assert parts[name]["status"] == "no GPU", name
    assert parts["detect"]["status"] == "ok" and parts["detect"]["result"]["cpu_only"] is True
    sim = parts["simulator:kernels.blockwise_absmax"]
    assert sim["status"] == "ok" and sim["result"]["summary"]["fail"] == 0 and sim["result"]["summary"]["pass"] > 0
    env_part = parts["environment"]["result"]
    assert env_part["versions"]["numba"] and env_part["python"]
    assert set(report["summary"]) <= {"ok", "no GPU"}


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("unshare") or subprocess.run(["unshare", "-n", "true"]).returncode != 0,
                    reason="needs `unshare -n` to cut the network")
@pytest.mark.skipif(not shutil.which("make"), reason="needs make")
def test_bare_machine_path_installs_the_bundle_offline_and_runs(tmp_path):
    """`make gpu-check` where there is no venv: the bundle (here: gpuforge's own wheel)
    goes into a target folder with pip --no-index --no-deps, inside `unshare -n`."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    gpu_bundle.project_wheel(bundle, ROOT)
    (bundle / gpu_bundle.MANIFEST).write_text(json.dumps({"carried": [{"name": "gpuforge"}], "left_out": []}))
    env = {**os.environ, "GPU_CHECK_PARTS": "detect,gpu_bench"}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run(["unshare", "-n", "make", "--no-print-directory", "gpu-check", f"VENV={tmp_path / 'no-venv'}",
                           f"PYTHON={sys.executable}", f"GPU_BUNDLE={bundle}", f"GPU_SITE={tmp_path / 'site'}",
                           f"GPU_REPORT_DIR={tmp_path / 'report'}"], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--no-index --no-deps" in proc.stdout
    report = json.loads((tmp_path / "report" / gpucheck.REPORT).read_text())
    assert report["parts"]["environment"]["result"]["bundle"]["carried"] == ["gpuforge"]
    assert report["parts"]["detect"]["status"] == "ok"
    assert report["parts"]["environment"]["result"]["executable"] == sys.executable
    # gpuforge came from the target folder, not from the venv's editable install
    assert report["parts"]["environment"]["result"]["gpuforge_from"].startswith(str(tmp_path / "site"))


def test_bare_machine_without_a_bundle_says_what_to_do(tmp_path):
    if not shutil.which("make"):
        pytest.skip("needs make")
    proc = subprocess.run(["make", "--no-print-directory", "gpu-check", f"VENV={tmp_path / 'no-venv'}",
                           f"GPU_BUNDLE={tmp_path / 'none'}"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode != 0 and "make gpu-bundle" in proc.stdout + proc.stderr
