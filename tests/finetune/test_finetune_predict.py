"""`finetune predict` and the Python API (gpuforge.plugins.finetune.api): the adapter's
classification head gives the same answers as `finetune eval` scores."""
from __future__ import annotations

import json

import pytest
import torch


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_bert, small_data):
    from gpuforge.plugins.finetune.api import train_adapter

    out = tmp_path_factory.mktemp("pred") / "cls"
    res = train_adapter(tiny_bert, small_data["train"], out, max_steps=6, batch_size=8, r=4, alpha=8, max_len=32,
                        eval_data=small_data["test"], lr=2e-3)
    return out, res


def test_api_predict_matches_eval(adapter, tiny_bert, small_data):
    from gpuforge.plugins.finetune.api import load_adapter
    from gpuforge.plugins.finetune.evaluate import eval_model

    path, res = adapter
    ft = load_adapter(tiny_bert, path)
    assert ft.task == "classification" and ft.labels == ["negative", "positive"]
    assert isinstance(ft.model, torch.nn.Module) and ft.model.head is not None and not ft.model.training
    rows = [json.loads(l) for l in small_data["test"].read_text().splitlines()]
    preds = ft.predict([r["text"] for r in rows])
    assert len(preds) == len(rows)
    for p in preds:
        assert p["label"] in ft.labels and abs(sum(p["scores"].values()) - 1) < 1e-5
        assert p["label"] == max(p["scores"], key=p["scores"].get)
    accuracy = sum(p["label"] == r["label"] for p, r in zip(preds, rows)) / len(rows)
    assert accuracy == pytest.approx(res["eval_metric"])
    assert accuracy == pytest.approx(eval_model(str(tiny_bert), str(small_data["test"]), str(path), None, None)["value"])
    emb = ft.embed(["one text", "another"])
    assert emb.shape == (2, 64) and torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert ft.predict([]) == []


def test_cli_predict_file_and_texts(run_cli, adapter, tiny_bert, small_data, tmp_path):
    path, res = adapter
    out = tmp_path / "preds.jsonl"
    r = run_cli("finetune", "predict", str(tiny_bert), "--adapter", str(path), "--data", str(small_data["test"]),
                "--out", str(out), "--json")
    assert r.code == 0, r
    got = r.json()
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert got["examples"] == len(rows) == 32 and got["accuracy"] == pytest.approx(res["eval_metric"])
    assert set(rows[0]) == {"text", "label", "scores"}
    manifest = json.loads((tmp_path / "preds.jsonl.manifest.json").read_text())
    assert manifest["command"] == "finetune predict" and manifest["device"] == "cpu"
    r = run_cli("finetune", "predict", str(tiny_bert), "--adapter", str(path), "--text", "The hike was far from boring.",
                "--text", "The app was bad.", "--json")
    assert r.code == 0, r
    preds = r.json()["predictions"]
    assert [p["text"] for p in preds] == ["The hike was far from boring.", "The app was bad."]
    assert all(p["label"] in ("negative", "positive") for p in preds)
