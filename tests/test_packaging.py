"""The wheel holds every package directory; a forgotten one fails here."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gpuforge.core.tomlread import read_toml

ROOT = Path(__file__).resolve().parents[1]


def declared_packages(pyproject: Path) -> tuple[list[str], dict[str, str]]:
    data = read_toml(pyproject)
    tool = data["tool"]["setuptools"]
    return list(tool["packages"]), dict(tool["package-dir"])


def package_dirs(root: Path, package_dir: dict[str, str]) -> dict[str, Path]:
    """Every folder with an __init__.py under a mapped root, by its import name."""
    found: dict[str, Path] = {}
    for import_name, folder in package_dir.items():
        base = root / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            if any(part.startswith((".", "__")) or part in ("data",) for part in rel.parts):
                continue
            found[".".join([import_name, *rel.parts]) if rel.parts else import_name] = init.parent
    return found


def missing_packages(root: Path) -> list[str]:
    packages, package_dir = declared_packages(root / "pyproject.toml")
    return sorted(set(package_dirs(root, package_dir)) - set(packages))


def test_every_package_directory_is_declared():
    assert missing_packages(ROOT) == []


def test_a_forgotten_package_is_detected(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackages = ["gpuforge.plugins"]\n[tool.setuptools.package-dir]\n"gpuforge.plugins" = "plugins"\n'
    )
    (tmp_path / "plugins" / "newplugin").mkdir(parents=True)
    (tmp_path / "plugins" / "__init__.py").write_text("")
    (tmp_path / "plugins" / "newplugin" / "__init__.py").write_text("")
    assert missing_packages(tmp_path) == ["gpuforge.plugins.newplugin"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    return next(out.glob("gpuforge-*.whl"))


def test_wheel_contains_every_package_and_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    _, package_dir = declared_packages(ROOT / "pyproject.toml")
    for import_name, folder in package_dirs(ROOT, package_dir).items():
        path = import_name.replace(".", "/") + "/__init__.py"
        assert path in names, f"{path} missing from the wheel"
    assert "gpuforge/plugins/plugins.toml" in names
    assert "gpuforge/hardware/pricing.toml" in names
    assert "gpuforge/kernels/tuning.toml" in names
    profiles = {p.name for p in (ROOT / "hardware" / "profiles").glob("*.toml")}
    assert {n.rsplit("/", 1)[-1] for n in names if n.startswith("gpuforge/hardware/profiles/")} >= profiles
    # Nothing of the repository root lands in site-packages under a generic name.
    assert not any(n.startswith(("core/", "cli/", "tests/", "hardware/")) for n in names)
    entry = [n for n in names if n.endswith("entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry[0]).decode()
    assert "gpuforge = gpuforge.cli.main:main" in text
