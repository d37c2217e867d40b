"""Packages use each other through public names only (issue 19): no module imports a
``_private`` name from another gpuforge package (core, cli, kernels, hardware, or another
plugin). Inside one package, private names are that package's own business."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROOTS = {"core": "gpuforge.core", "cli": "gpuforge.cli", "kernels": "gpuforge.kernels",
         "hardware": "gpuforge.hardware", "plugins": "gpuforge.plugins"}


def package_of(module: str) -> str:
    parts = module.split(".")
    if parts[:2] == ["gpuforge", "plugins"] and len(parts) > 2:
        return ".".join(parts[:3])
    return ".".join(parts[:2])


def private_imports(root: Path) -> list[str]:
    found = []
    for folder, base in ROOTS.items():
        for f in sorted((root / folder).rglob("*.py")):
            rel = f.relative_to(root / folder).with_suffix("")
            module = ".".join([base, *rel.parts]).removesuffix(".__init__")
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("gpuforge."):
                    for alias in node.names:
                        if alias.name.startswith("_") and not alias.name.startswith("__") \
                                and package_of(node.module) != package_of(module):
                            found.append(f"{f.relative_to(root)}: from {node.module} import {alias.name}")
    return found


def test_no_private_names_across_packages():
    assert private_imports(ROOT) == []


def test_the_check_sees_a_private_import(tmp_path):
    for folder in ROOTS:
        (tmp_path / folder).mkdir()
    (tmp_path / "plugins" / "foo").mkdir()
    (tmp_path / "plugins" / "foo" / "bad.py").write_text("from gpuforge.kernels.blockwise import _secret\n")
    (tmp_path / "kernels" / "ok.py").write_text("from gpuforge.kernels.blockwise import _secret\n")
    assert private_imports(tmp_path) == ["plugins/foo/bad.py: from gpuforge.kernels.blockwise import _secret"]
