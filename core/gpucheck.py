"""``make gpu-check``: on a machine with an NVIDIA GPU, run the ``gpu``-marked tests,
the CUDA conformance check and the benchmarks, and write one JSON report.

    GPU_REPORT_DIR=out python -m gpuforge.core.gpucheck [--budget-s 540]

Each part runs in its own process with a time limit, so one hanging part cannot eat
the whole budget (the device sessions that run this have about 10 minutes).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from gpuforge.core.safepath import python_argv, safe_env

ROOT = Path(__file__).resolve().parents[1]


def _run(name: str, cmd: list[str], timeout: float, report: dict, json_stdout: bool = False) -> None:
    t0 = time.perf_counter()
    entry: dict = {"cmd": cmd}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(5, timeout), cwd=ROOT,
                              env={**safe_env(), "PYTHONUNBUFFERED": "1"})
        entry.update(exit_code=proc.returncode, stderr_tail=proc.stderr[-4000:])
        if json_stdout:
            try:
                entry["result"] = json.loads(proc.stdout)
            except json.JSONDecodeError:
                entry["stdout_tail"] = proc.stdout[-4000:]
        else:
            entry["stdout_tail"] = proc.stdout[-4000:]
    except subprocess.TimeoutExpired as exc:
        entry.update(exit_code=None, timed_out=True, stdout_tail=(exc.stdout or b"")[-4000:].decode(errors="replace")
                     if isinstance(exc.stdout, bytes) else str(exc.stdout or "")[-4000:])
    entry["seconds"] = round(time.perf_counter() - t0, 2)
    report["parts"][name] = entry
    sys.stderr.write(f"[gpu-check] {name}: exit {entry.get('exit_code')} in {entry['seconds']} s\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=float(os.environ.get("GPU_CHECK_BUDGET_S", 540)))
    args = parser.parse_args()
    out_dir = Path(os.environ.get("GPU_REPORT_DIR") or ".gpu-report")
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + args.budget_s
    left = lambda share: max(10.0, (deadline - time.perf_counter()) * share)  # noqa: E731
    gf = [*python_argv(), "-m", "gpuforge.cli"]
    report: dict = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "parts": {}}
    _run("detect", [*gf, "--json", "hw", "detect"], 60, report, json_stdout=True)
    _run("doctor", [*gf, "--json", "doctor"], 60, report, json_stdout=True)
    _run("pytest_gpu", [*python_argv(), "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                        f"--junitxml={out_dir / 'gpu-tests.xml'}"], left(0.3), report)
    _run("kernels_check_cuda", [*gf, "--json", "kernels", "check", "--backend", "numba-cuda"], left(0.3), report, json_stdout=True)
    _run("hw_bench", [*gf, "--json", "hw", "bench"], left(0.25), report, json_stdout=True)
    _run("bench", [*gf, "--json", "--device", "cuda", "bench", "--quick"], left(0.9), report, json_stdout=True)
    report["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    path = out_dir / "gpu-report.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, path)
    sys.stderr.write(f"[gpu-check] report: {path}\n")
    failed = [k for k, v in report["parts"].items() if v.get("exit_code") not in (0,)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
