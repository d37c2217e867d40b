"""Atomic outputs and run manifests (DESIGN.md "Data and files").

Outputs appear whole or not at all: they are written to a temporary sibling and
moved into place with ``os.replace``; an existing output is kept unless ``force``.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ContextManager, Iterator

from gpuforge.core.errors import BadInputError, OutputExistsError


@contextmanager
def timed_stage(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Add the seconds the ``with`` block takes to ``timings[stage]`` (a stage timed twice
    counts both times), rounded to 0.1 ms as manifests keep them."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round(timings.get(stage, 0.0) + time.perf_counter() - t0, 4)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _public(path: Path, directory: bool = False) -> None:
    """mkstemp/mkdtemp make owner-only entries; give the output the usual permissions."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def check_output(path: str | Path, force: bool) -> Path:
    """Refuse to overwrite ``path`` without ``force``; make sure its folder can exist."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"output {path} already exists; pass --force to overwrite it")
    return path


def require_input(path: str | Path, what: str = "input") -> Path:
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{what} not found: {path}")
    return path


@contextmanager
def atomic_file(path: str | Path, force: bool = False, mode: str = "wb") -> Iterator[Any]:
    """Yield a file object; on success the file replaces ``path`` atomically."""
    path = check_output(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _public(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (a file name the caller writes, e.g. with
    safetensors); it replaces ``path`` on success and is removed on failure."""
    path = check_output(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if Path(tmp).exists():
            _public(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it becomes ``path``
    (replacing an old one only with ``force``); on failure it is removed."""
    path = check_output(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _public(tmp, directory=True)
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: str | Path, text: str, force: bool = True) -> Path:
    with atomic_file(path, force=force, mode="w") as fh:
        fh.write(text)
    return Path(path)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_input(path: str | Path) -> dict[str, Any]:
    """Path, size and hash of an input file, or of every file in an input folder."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return {
            "path": str(path),
            "kind": "folder",
            "files": {str(p.relative_to(path)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files},
        }
    return {"path": str(path), "kind": "file", "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("gpuforge", "torch", "numba", "numba-cuda", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


class Manifest:
    """Collects what a command did and writes ``manifest.json`` into its output folder.

    ``m = Manifest("quantize run", params); m.add_input(path); with m.timed("load"): ...;
    m.write(out_dir)``.
    """

    def __init__(self, command: str, params: dict[str, Any] | None = None):
        from gpuforge.core.context import get_context

        ctx = get_context()
        self.data: dict[str, Any] = {
            "command": command,
            "argv": sys.argv[1:],
            "params": params or {},
            "inputs": [],
            "outputs": [],
            "device": ctx.device,
            "backend": ctx.backend,
            "seed": ctx.seed,
            "versions": _versions(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "timings_s": {},
        }
        self._t0 = time.perf_counter()

    def add_input(self, path: str | Path) -> None:
        self.data["inputs"].append(describe_input(path))

    def add_output(self, path: str | Path) -> None:
        self.data["outputs"].append(str(path))

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value

    def timed(self, stage: str) -> ContextManager[None]:
        return timed_stage(self.data["timings_s"], stage)

    def write(self, folder: str | Path, name: str = "manifest.json") -> Path:
        self.data["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.data["timings_s"]["total"] = round(time.perf_counter() - self._t0, 4)
        from gpuforge.core.output import to_json

        return write_text_atomic(Path(folder) / name, to_json(self.data) + "\n")


def load_json(path: str | Path, what: str = "JSON file") -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BadInputError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"malformed {what} {path}: {exc}") from None
