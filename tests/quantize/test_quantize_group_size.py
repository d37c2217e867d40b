"""Issue 18 lists `--group-size -5` among the bad inputs that ended as "internal error"
(exit 1). Until 2026-12-06 `quantize run --method rtn --group-size -5` ended with
"internal error: RuntimeError: Trying to create tensor with negative dimension" (exit 1)
and `--group-size 0` was accepted (exit 0); both are usage errors now (exit 2, one line),
as is `--block-size 0`."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("option,size", [("--group-size", "-5"), ("--group-size", "0"), ("--block-size", "0")])
def test_group_size_out_of_range_is_a_usage_error(run_cli, tmp_path, option, size):
    from safetensors.numpy import save_file

    sd = tmp_path / "in" / "sd.safetensors"
    sd.parent.mkdir()
    save_file({"a.weight": np.random.default_rng(0).standard_normal((16, 128)).astype(np.float32)}, str(sd))
    before = sd.read_bytes()
    out = tmp_path / "out"
    method = "rtn" if option == "--group-size" else "nf4"
    r = run_cli("quantize", "run", str(sd), "--method", method, option, size, "--out", str(out / "q"))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.code == 2, r
    assert len(lines) == 1 and option in lines[0] and "Traceback" not in r.stderr, r
    assert not out.exists() and sd.read_bytes() == before
