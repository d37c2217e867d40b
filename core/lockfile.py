"""``requirements.lock``: the exact dependency set `make demo`, `make test` and CI install.

``pyproject.toml`` keeps ranges for users; the lock pins what was tested, so a fresh
machine next month installs the same versions (an unpinned dependency moving is what
broke `make test` on 2026-12-06). Its first lines record a digest of the dependency
declarations it was made from; :func:`check` fails when ``pyproject.toml``'s
dependencies changed and the lock was not refreshed with ``make lock``.

    python -P -m gpuforge.core.lockfile write FREEZE_FILE   # used by `make lock`
    python -P -m gpuforge.core.lockfile check                # exit 1 when stale

The lock carries versions, not hashes: torch is the local CPU build (``2.13.0+cpu``),
installed first from the machine's wheel, and PyPI's hash for ``torch==2.13.0`` is the
CUDA build's, so a hash-checked install could not use it.
"""
from __future__ import annotations

import hashlib
import json
import platform
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = "requirements.lock"
DIGEST_LINE = "# pyproject-deps-sha256: "
# Not constraints: pip's own tooling, and gpuforge itself (installed editable).
SKIP = {"pip", "setuptools", "wheel", "gpuforge"}


def deps_digest(pyproject: Path) -> str:
    """sha256 of what decides the dependency set: requires-python, dependencies,
    optional dependencies and build requirements (other edits need no new lock)."""
    from gpuforge.core.tomlread import read_toml

    data = read_toml(pyproject)
    project = data.get("project", {})
    relevant = {
        "requires-python": project.get("requires-python"),
        "dependencies": project.get("dependencies", []),
        "optional-dependencies": project.get("optional-dependencies", {}),
        "build-system": data.get("build-system", {}).get("requires", []),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def recorded_digest(lock: Path) -> str | None:
    for line in lock.read_text().splitlines():
        if line.startswith(DIGEST_LINE):
            return line[len(DIGEST_LINE):].strip()
    return None


def pins(lock: Path) -> dict[str, str]:
    """{normalized name: version} of the lock's ``name==version`` lines."""
    out = {}
    for line in lock.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def render(freeze_lines: list[str], digest: str) -> str:
    """The lock text from ``pip freeze`` output: sorted pins, local version labels
    dropped (``torch==2.13.0+cpu`` -> ``torch==2.13.0``, which the CPU build satisfies)."""
    body = []
    for line in freeze_lines:
        line = line.strip()
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#+]+)", line)
        if not m or re.sub(r"[-_.]+", "-", m.group(1)).lower() in SKIP:
            continue
        body.append(f"{m.group(1)}=={m.group(2)}")
    head = [
        "# The exact dependency set `make demo`, `make test` and CI install (pip -c).",
        "# Made by `make lock` from pyproject.toml's ranges; rerun it after changing them.",
        f"# Made with CPython {platform.python_version()} on {sys.platform}-{platform.machine()}.",
        DIGEST_LINE + digest,
    ]
    return "\n".join(head + sorted(body, key=str.lower)) + "\n"


def check(root: Path = ROOT) -> str | None:
    """None when the lock matches ``pyproject.toml``, else the reason it does not."""
    lock = root / LOCK
    if not lock.exists():
        return f"{LOCK} is missing; run `make lock`"
    want, have = deps_digest(root / "pyproject.toml"), recorded_digest(lock)
    if have != want:
        return (f"{LOCK} was made from other dependency declarations than pyproject.toml's "
                f"(digest {have} != {want}); run `make lock` and commit the result")
    return None


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Write or check requirements.lock.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write", help="write the lock from a `pip freeze` file")
    w.add_argument("freeze")
    sub.add_parser("check", help="exit 1 when the lock is stale")
    a = ap.parse_args(argv)
    if a.cmd == "write":
        text = render(Path(a.freeze).read_text().splitlines(), deps_digest(ROOT / "pyproject.toml"))
        tmp = ROOT / (LOCK + ".tmp")
        tmp.write_text(text)
        tmp.replace(ROOT / LOCK)
        print(f"wrote {LOCK}: {len(pins(ROOT / LOCK))} pins")
        return 0
    problem = check()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    print(f"{LOCK} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
