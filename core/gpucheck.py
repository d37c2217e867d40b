"""``make gpu-check``: what a lent GPU machine can tell us, in one JSON report.

    GPU_REPORT_DIR=out python -P -m gpuforge.core.gpucheck [--budget-s 450] [--parts a,b]

Parts, in priority order (each in its own process with a time limit taken from what is
left of the budget, so one hanging part cannot eat the rest):

- ``environment``: Python, package versions, the GPU bundle that travelled, nvidia-smi;
- ``detect``: ``gpuforge hw detect``;
- ``gpu_bench``: hot kernels' bandwidth / FLOP rate as a share of the profile's peaks, and
  ratios against torch CUDA and bitsandbytes (:mod:`gpuforge.core.gpu_bench`);
- ``kernels_check_cuda``: every kernel's numba-cuda backend against its reference on the GPU;
- ``e2e``: each plugin's commands with ``--device cuda`` on small real inputs
  (:mod:`gpuforge.core.gpu_e2e`);
- ``pytest_gpu``: the tests marked ``gpu``;
- ``inspect_vs_driver``: registers per kernel as the driver loads them, next to
  ``kernels inspect``'s compile-only figures;
- ``kernels_inspect``: ``gpuforge kernels inspect`` for this GPU (H100 SXM without one);
- ``simulator:<kernel>`` (no GPU only): a few kernels' CUDA backend in Numba's simulator;
- ``hw_bench``, ``doctor``: as the commands print them.

Without a GPU the GPU parts are reported as ``"no GPU"`` and the check exits 0 when what
could run passed. The report (``gpu-report.json``) is rewritten atomically after every
part, so a time limit on the whole run keeps what finished. Exit 1 when a part failed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from gpuforge.core.safepath import python_argv, safe_env

ROOT = Path(__file__).resolve().parents[1]
REPORT = "gpu-report.json"
DEFAULT_BUDGET_S = 450.0
"""7.5 minutes: with the bundle's install (~15 s), `make gpu-check` stays under 8 minutes."""
MIN_PART_S = 15.0
SIMULATED_KERNELS = ("kernels.blockwise_absmax", "quantize.nf4_decode", "finetune.adamw_step")
"""Small, quick kernels whose CUDA backend runs in the simulator when there is no GPU."""
PACKAGES = ("torch", "numba", "numba-cuda", "cuda-bindings", "cuda-python", "nvidia-nvvm", "nvidia-nvjitlink",
            "nvidia-cuda-nvrtc", "bitsandbytes", "transformers", "peft", "structlog", "av", "hdbscan",
            "fast-hdbscan", "plyfile", "gpuforge")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_report(path: Path, report: dict) -> None:
    """Atomic rewrite: a reader (or a killed run) sees the last complete report."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, path)


def _tail(text: Any, n: int = 3000) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]


def run_part(cmd: list[str], timeout: float, env: dict | None = None, json_stdout: bool = False,
             cwd: Path | None = None) -> dict[str, Any]:
    """Run one part in its own process group; on timeout the whole group is killed."""
    t0 = time.perf_counter()
    entry: dict[str, Any] = {"cmd": cmd}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd or ROOT,
                            env={**(env or safe_env()), "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=max(1.0, timeout))
        entry.update(exit_code=proc.returncode, stderr_tail=_tail(err))
        if json_stdout:
            try:
                entry["result"] = json.loads(out)
            except json.JSONDecodeError:
                entry["stdout_tail"] = _tail(out)
        else:
            entry["stdout_tail"] = _tail(out)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
        entry.update(exit_code=None, timed_out=True, limit_s=round(timeout, 1), stdout_tail=_tail(out),
                     stderr_tail=_tail(err))
    entry["seconds"] = round(time.perf_counter() - t0, 2)
    entry["status"] = "ok" if entry["exit_code"] == 0 else ("timed out" if entry.get("timed_out") else "failed")
    return entry


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _nvidia_smi() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,"
                               "temperature.gpu,power.draw", "--format=csv"], capture_output=True, text=True,
                              timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"nvidia-smi failed: {exc}"


def environment(bundle: Path) -> dict[str, Any]:
    from gpuforge.core.gpu_bundle import read_manifest

    manifest = read_manifest(bundle)
    return {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
            "gpuforge_from": str(ROOT),
            "cpus": os.cpu_count(), "versions": _versions(), "CUDA_HOME": os.environ.get("CUDA_HOME"),
            "bundle": {"path": str(bundle), "carried": [w["name"] for w in manifest["carried"]],
                       "left_out": manifest["left_out"]} if manifest else None,
            "nvidia_smi": _nvidia_smi()}


def detect_gpu() -> dict[str, Any]:
    """The first CUDA GPU and its profile, from the driver API (no torch, no numba)."""
    try:
        from gpuforge.hardware.detect import detect_gpus

        res = detect_gpus()
    except Exception as exc:  # detection must never stop the check
        return {"present": False, "why": f"detection failed: {type(exc).__name__}: {exc}"}
    if res.cpu_only or not res.gpus:
        return {"present": False, "why": res.reason or "no CUDA GPU"}
    g = res.gpus[0]
    return {"present": True, "name": g.name, "profile": g.profile_id, "cc": g.compute_capability,
            "driver": res.driver_version}


def _find_nvvm() -> None:
    """numba-cuda looks for libnvvm in wheels (nvidia-nvvm) and CUDA_HOME; the GPU machine's
    image has the toolkit under /usr/local/cuda but no nvidia-nvvm wheel."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return
    for home in ("/usr/local/cuda", "/opt/cuda"):
        if Path(home, "nvvm").is_dir():
            os.environ["CUDA_HOME"] = home
            return


def plan(gpu: dict, out_dir: Path, work: Path) -> list[tuple[str, bool | None, float, Callable[[], dict]]]:
    """(name, needs a GPU (None: runs either way), cap seconds, runner(timeout))."""
    gf = [*python_argv(), "-m", "gpuforge.cli"]
    py = python_argv()
    inspect_gpu = gpu.get("profile") or "h100-sxm"

    def part(cmd, json_stdout=False, env=None):
        return lambda timeout: run_part(cmd, timeout, env=env, json_stdout=json_stdout)

    def with_file(cmd, path: Path):
        """A part that writes its own JSON file as it goes: read it back even after a timeout."""
        def runner(timeout):
            entry = run_part(cmd, timeout)
            try:
                entry["result"] = json.loads(path.read_text())
            except (OSError, ValueError):
                pass
            return entry
        return runner

    sim_env = {**safe_env(), "NUMBA_ENABLE_CUDASIM": "1"}
    parts: list = [
        ("detect", None, 60, part([*gf, "--json", "hw", "detect"], json_stdout=True)),
        ("gpu_bench", True, 150, with_file([*py, "-m", "gpuforge.core.gpu_bench", "--out",
                                            str(out_dir / "gpu-bench.json")], out_dir / "gpu-bench.json")),
        ("kernels_check_cuda", True, 150, part([*gf, "--json", "kernels", "check", "--backend", "numba-cuda"],
                                               json_stdout=True)),
        ("e2e", True, 200, with_file([*py, "-m", "gpuforge.core.gpu_e2e", "--work", str(work / "e2e"), "--out",
                                      str(out_dir / "e2e.json"), "--device", "cuda"], out_dir / "e2e.json")),
        ("pytest_gpu", True, 90, part([*py, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                                       f"--junitxml={out_dir / 'gpu-tests.xml'}", str(ROOT / "tests")])),
        ("inspect_vs_driver", True, 90, part([*py, "-m", "gpuforge.core.kernel_inspect", "--driver", inspect_gpu],
                                             json_stdout=True)),
        ("kernels_inspect", None, 120, part([*gf, "--json", "kernels", "inspect", "--gpu", inspect_gpu],
                                            json_stdout=True)),
        *[(f"simulator:{k}", False, 120, part([*gf, "--json", "kernels", "check", k, "--backend", "numba-cuda"],
                                               json_stdout=True, env=sim_env)) for k in SIMULATED_KERNELS],
        ("hw_bench", True, 60, part([*gf, "--json", "hw", "bench"], json_stdout=True)),
        ("doctor", None, 60, part([*gf, "--json", "doctor"], json_stdout=True)),
    ]
    return parts


def _summary(parts: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, entry in parts.items():
        out.setdefault(entry.get("status", "?"), []).append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpuforge.core.gpucheck", description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=float(os.environ.get("GPU_CHECK_BUDGET_S", DEFAULT_BUDGET_S)))
    parser.add_argument("--parts", default=os.environ.get("GPU_CHECK_PARTS", ""),
                        help="comma-separated part names to run (default: all)")
    args = parser.parse_args(argv)
    t_start = time.perf_counter()
    deadline = t_start + args.budget_s
    out_dir = Path(os.environ.get("GPU_REPORT_DIR") or ".gpu-report").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / REPORT
    bundle = Path(os.environ.get("GPU_BUNDLE") or ROOT / ".gpu-bundle")
    wanted = {p for p in args.parts.split(",") if p}
    _find_nvvm()

    gpu = detect_gpu()
    report: dict[str, Any] = {"started": _now(), "budget_s": args.budget_s, "gpu": gpu, "parts": {}}
    report["parts"]["environment"] = {"status": "ok", "result": environment(bundle)}
    write_report(path, report)
    work = Path(tempfile.mkdtemp(prefix="gpuforge-gpucheck-"))
    try:
        for name, needs_gpu, cap, runner in plan(gpu, out_dir, work):
            if wanted and name not in wanted and name.split(":")[0] not in wanted:
                continue
            left = deadline - time.perf_counter()
            if needs_gpu is True and not gpu["present"]:
                entry = {"status": "no GPU", "why": gpu.get("why", "")}
            elif needs_gpu is False and gpu["present"]:
                continue  # the simulator stands in for a GPU only where there is none
            elif left < MIN_PART_S:
                entry = {"status": "skipped", "why": f"budget spent ({left:.0f} s left of {args.budget_s:.0f})"}
            else:
                sys.stderr.write(f"[gpu-check] {name} (limit {min(cap, left):.0f} s) ...\n")
                entry = runner(min(cap, left))
                sys.stderr.write(f"[gpu-check] {name}: {entry['status']} in {entry['seconds']} s\n")
            report["parts"][name] = entry
            report["summary"] = _summary(report["parts"])
            write_report(path, report)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["finished"] = _now()
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    report["summary"] = _summary(report["parts"])
    write_report(path, report)
    sys.stderr.write(f"[gpu-check] report: {path}\n[gpu-check] {json.dumps(report['summary'])}\n")
    failed = [n for n, e in report["parts"].items() if e.get("status") in ("failed", "timed out")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
