"""``gpuforge doctor``: what works here, what is missing, and how to fix it."""
from __future__ import annotations

import platform
import sys

import typer

from gpuforge.core.output import print_table
from gpuforge.core.run import Run, command

app = typer.Typer(help="Check Python, torch, Numba, CUDA, devices and plugins.")


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def core_checks() -> list[dict]:
    rows: list[dict] = []

    def add(name, ok, detail, fix=""):
        rows.append({"check": name, "ok": ok, "detail": detail, "fix": fix if ok is False else ""})

    add("python", sys.version_info >= (3, 10), platform.python_version(), "use Python 3.10 or newer")
    try:
        import torch

        add("torch", True, f"{torch.__version__} (CUDA build: {torch.version.cuda or 'no'})")
    except Exception as exc:
        add("torch", False, f"not importable: {exc}", "pip install torch==2.13.0 (CPU build) before gpuforge")
    try:
        import numba

        add("numba", True, numba.__version__)
    except Exception as exc:
        add("numba", False, f"not importable: {exc}", "pip install numba")
    ncuda = _dist_version("numba-cuda")
    if ncuda is None:
        add("numba-cuda", False, "not installed (numba's built-in CUDA target is deprecated)", "pip install 'numba-cuda[cu13]'")
    else:
        try:
            from numba import cuda

            impl = getattr(cuda, "implementation", "built-in")
            add("numba-cuda", impl == "NVIDIA", f"{ncuda} (implementation: {impl})", "reinstall 'numba-cuda[cu13]'")
        except Exception as exc:
            add("numba-cuda", False, f"{ncuda} but import fails: {exc}", "reinstall 'numba-cuda[cu13]'")
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        load_nvidia_dynamic_lib("nvrtc")
        add("nvrtc (PTX compiler)", True, "found: CUDA kernels compile to PTX without a GPU")
    except Exception as exc:
        add("nvrtc (PTX compiler)", False, f"not found ({type(exc).__name__})", "pip install 'numba-cuda[cu13]'")
    from gpuforge.hardware.detect import detect_gpus

    det = detect_gpus()
    if det.cpu_only:
        add("GPU", None, det.reason)
    else:
        for g in det.gpus:
            d = g.to_dict() if hasattr(g, "to_dict") else dict(g)
            prof = d.get("profile_id")
            add(f"GPU {d.get('index')}", True, f"{d.get('name')} (cc {d.get('compute_capability')}), profile: {prof or 'none'}",
                "" if prof else "add a profile under hardware/profiles")
    from gpuforge.core.plugins import get_registry

    reg = get_registry()
    for p in reg.plugins.values():
        if p.status == "failed":
            add(f"plugin {p.name}", False, p.reason, f"reinstall or disable it: GPUFORGE_DISABLE_PLUGINS={p.name}")
    loaded = [p.name for p in reg.plugins.values() if p.status == "loaded"]
    add("plugins", True, f"{len(loaded)} loaded: {', '.join(loaded)}")
    return rows


@command(app, "doctor", device=False)
def doctor(run: Run) -> None:
    """Check the installation; exits 0 even when optional parts (a GPU) are missing."""
    from gpuforge.core.lazy import resolve
    from gpuforge.core.plugins import get_registry

    rows = core_checks()
    for plugin, check in get_registry().doctor_checks:
        try:
            ok, detail, fix = resolve(check.run)()
        except Exception as exc:
            ok, detail, fix = False, f"check raised {type(exc).__name__}: {exc}", ""
        rows.append({"check": f"{plugin}: {check.name}", "ok": ok, "detail": detail, "fix": fix if ok is False else ""})

    def human() -> None:
        mark = {True: "ok", False: "MISSING", None: "n/a"}
        print_table([{**r, "ok": mark[r["ok"]]} for r in rows], columns=["check", "ok", "detail", "fix"], title="gpuforge doctor")

    run.result({"checks": rows, "ok": all(r["ok"] is not False for r in rows)}, human)
