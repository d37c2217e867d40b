"""Issue 18 for fraud: every bad input ends with its documented exit code and one line,
no traceback, nothing written, and the inputs' bytes unchanged; a model file is never
unpickled; an absurd `simulate --sessions` is refused before any work. The cases and
exit codes are listed in plugins/fraud/README.md ("Bad input")."""
from __future__ import annotations

import hashlib
import json
import pickle
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


class _Marker:
    """Unpickling this creates a file: the proof that a loader ran code from its input."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _clicks(d: Path) -> Path:
    from gpuforge.plugins.fraud.simulate import simulate

    p = d / "clicks.parquet"
    simulate(40, 0.1, seed=1).to_parquet(p, index=False)
    return p


def _model(d: Path, **change) -> Path:
    """A small `fraud embed` model file (untrained), with ``change`` applied."""
    import torch

    from gpuforge.plugins.fraud.embed import build_model, save_model

    hp = dict(n_pages=12, dim=4, hidden=8, page_dim=4, objective="reconstruct", max_len=16)
    m = build_model(hp["n_pages"], hp["dim"], hp["hidden"], hp["page_dim"], hp["objective"])
    if change.get("nan"):
        with torch.no_grad():
            m.proj.weight[0, 0] = float("nan")
    hp.update(change.get("hp", {}))
    p = d / "m.model.safetensors"
    save_model(p, m, {"home": 2, "search": 3}, hp)
    return p


def _case(kind: str, d: Path, out: Path, marker: Path) -> tuple[list[str], int]:
    """Make the inputs of one case in ``d``; (arguments after `gpuforge`, documented exit code)."""
    if kind.startswith("simulate"):
        o = ["--out", str(out / "c.parquet")]
        return {"simulate_absurd_size": (["fraud", "simulate", "--sessions", "3000000000", *o], 3),
                "simulate_zero": (["fraud", "simulate", "--sessions", "0", *o], 2),
                "simulate_rate": (["fraud", "simulate", "--fraud-rate", "1.5", *o], 2),
                "simulate_seed_negative": (["fraud", "simulate", "--seed", "-1", *o], 2),
                "simulate_txt": (["fraud", "simulate", "--out", str(out / "c.txt")], 3)}[kind]
    clicks = _clicks(d)
    e = ["fraud", "embed", str(clicks), "--out", str(out / "e.parquet"), "--dim", "4", "--epochs", "1"]
    if kind == "features_missing":
        return ["fraud", "features", str(d / "nope.parquet"), "--out", str(out / "f.parquet")], 3
    if kind == "features_no_timestamp":
        pd.read_parquet(clicks).drop(columns="timestamp").to_csv(d / "c.csv", index=False)
        return ["fraud", "features", str(d / "c.csv"), "--out", str(out / "f.parquet")], 3
    if kind == "features_truncated_parquet":
        (d / "cut.parquet").write_bytes(clicks.read_bytes()[:200])
        return ["fraud", "features", str(d / "cut.parquet"), "--out", str(out / "f.parquet")], 3
    if kind == "embed_pickle_model":
        (d / "evil.pt").write_bytes(pickle.dumps({"state": _Marker(marker)}, protocol=4))
        return [*e, "--model", str(d / "evil.pt")], 3
    if kind == "embed_torch_save_model":
        import torch

        torch.save({"state": _Marker(marker)}, d / "evil.pt")
        return [*e, "--model", str(d / "evil.pt")], 3
    if kind == "embed_plain_safetensors":
        from safetensors.numpy import save_file

        save_file({"w": np.zeros((2, 2), np.float32)}, str(d / "w.safetensors"))
        return [*e, "--model", str(d / "w.safetensors")], 3
    if kind == "embed_truncated_model":
        p = _model(d)
        p.write_bytes(p.read_bytes()[:100])
        return [*e, "--model", str(p)], 3
    if kind == "embed_nan_model":
        return [*e, "--model", str(_model(d, nan=True))], 3
    if kind == "embed_config_mismatch":
        return [*e, "--model", str(_model(d, hp={"hidden": 16}))], 3
    if kind == "embed_objective":
        return [*e, "--objective", "guess"], 2
    if kind == "embed_threads_env":
        return e, 2
    x = d / "x.npy"
    np.save(x, np.random.default_rng(0).normal(size=(60, 3)))
    c = ["fraud", "cluster", str(x)]
    if kind == "cluster_output_exists":
        (out / "c.parquet").write_bytes(b"earlier result")
        return [*c, "--out", str(out / "c.parquet")], 3
    if kind == "cluster_parent_is_file":
        (out / "afile").write_text("x")
        return [*c, "--out", str(out / "afile" / "c.parquet")], 3
    if kind == "cluster_object_npy":
        np.save(d / "o.npy", np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
        return ["fraud", "cluster", str(d / "o.npy"), "--out", str(out / "c.parquet")], 3
    if kind == "cluster_all_nan":
        np.save(d / "n.npy", np.full((30, 2), np.nan))
        return ["fraud", "cluster", str(d / "n.npy"), "--out", str(out / "c.parquet")], 3
    if kind == "cluster_min_cluster_size_1":
        return [*c, "--out", str(out / "c.parquet"), "--min-cluster-size", "1"], 2
    if kind == "cluster_epsilon_negative":
        return [*c, "--out", str(out / "c.parquet"), "--epsilon", "-1"], 2
    if kind == "cluster_device_cuda_without_gpu":
        return ["--device", "cuda", *c, "--out", str(out / "c.parquet")], 4
    if kind == "explain_clicks_as_features":
        cl = pd.DataFrame({"session_id": ["s1"], "label": [0], "outlier_score": [0.1]})
        cl.to_parquet(d / "cl.parquet", index=False)
        return ["fraud", "explain", str(d / "cl.parquet"), "--features", str(clicks), "--out", str(out / "rep")], 3
    if kind == "pipeline_pca_zero":
        return ["fraud", "pipeline", str(clicks), "--out", str(out / "rep"), "--pca", "0"], 2
    raise AssertionError(kind)


CASES = ["simulate_absurd_size", "simulate_zero", "simulate_rate", "simulate_seed_negative", "simulate_txt",
         "features_missing", "features_no_timestamp", "features_truncated_parquet", "embed_pickle_model",
         "embed_torch_save_model", "embed_plain_safetensors", "embed_truncated_model", "embed_nan_model",
         "embed_config_mismatch", "embed_objective", "embed_threads_env", "cluster_output_exists",
         "cluster_parent_is_file", "cluster_object_npy", "cluster_all_nan", "cluster_min_cluster_size_1",
         "cluster_epsilon_negative", "cluster_device_cuda_without_gpu", "explain_clicks_as_features",
         "pipeline_pca_zero"]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


@pytest.mark.parametrize("kind", CASES)
def test_bad_input(run_cli, tmp_path, kind):
    d, out = tmp_path / "in", tmp_path / "out"
    d.mkdir()
    out.mkdir()
    marker = tmp_path / "pwned"
    args, code = _case(kind, d, out, marker)
    before_in, before_out = _snapshot(d), _snapshot(out)
    env = {"GPUFORGE_FRAUD_TORCH_THREADS": "two"} if kind == "embed_threads_env" else {}
    t0 = time.perf_counter()
    r = run_cli(*args, env=env)
    assert r.code == code, r
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert _snapshot(d) == before_in  # inputs untouched, nothing written beside them
    assert _snapshot(out) == before_out  # nothing written, not even a temporary file
    assert not marker.exists()  # no model file was unpickled
    if kind == "simulate_absurd_size":
        assert "--sessions" in lines[0] and "at most" in lines[0]
        assert time.perf_counter() - t0 < 60  # refused before any work, not after an OOM
    if "pickle" in kind or "torch_save" in kind:
        assert "pickle files are not read" in lines[0]


def test_output_that_is_the_input_is_refused(run_cli, tmp_path):
    """--force replaces an earlier output, never an input (the table itself)."""
    t = tmp_path / "t.csv"
    pd.DataFrame({"a": np.arange(50.0), "b": np.arange(50.0) % 7}).to_csv(t, index=False)
    before = t.read_bytes()
    r = run_cli("fraud", "cluster", str(t), "--out", str(t), "--force")
    assert r.code == 3 and "is the input" in r.stderr, r
    assert t.read_bytes() == before


def test_model_round_trip_is_safetensors_with_json_config(tmp_path):
    from safetensors import safe_open

    from gpuforge.plugins.fraud.embed import MODEL_FORMAT, load_model

    p = _model(tmp_path)
    with safe_open(str(p), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == MODEL_FORMAT and json.loads(meta["config"])["dim"] == 4
    model, vocab, hp = load_model(p)
    assert vocab == {"home": 2, "search": 3} and hp["hidden"] == 8
