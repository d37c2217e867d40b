"""Fixtures of the superres tests: a folder of small images, the in-process CLI."""
from __future__ import annotations

from pathlib import Path

import pytest
from superres_media import _photo


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    from PIL import Image

    d = tmp_path_factory.mktemp("imgs")
    Image.fromarray(_photo()).save(d / "a.png")
    Image.fromarray(_photo(26, 33, 1)).save(d / "b.jpg", quality=95)
    (d / "sub").mkdir()
    Image.fromarray(_photo(20, 20, 2)).save(d / "sub" / "c.png")
    return d


class _Result:
    def __init__(self, code, out, err):
        self.code, self.stdout, self.stderr = code, out, err

    def json(self):
        import json

        return json.loads(self.stdout)

    def __repr__(self):
        return f"<exit {self.code}\nstdout: {self.stdout[-1500:]}\nstderr: {self.stderr[-1500:]}>"


@pytest.fixture
def gf(capsys):
    """The CLI in this process (saves torch/numba start-up per call): gf(*args) -> result."""
    from gpuforge.cli.main import main

    def _run(*args):
        capsys.readouterr()
        code = main(["--log-format", "json", *args])
        out, err = capsys.readouterr()
        # structlog lines are JSON on stderr; the error line is the plain "error: ..." one
        err = "\n".join(ln for ln in err.splitlines() if not ln.startswith("{"))
        return _Result(code, out, err)

    return _run
