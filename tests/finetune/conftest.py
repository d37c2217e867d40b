"""Tiny random models (offline, built in a second) so the finetune tests stay fast;
the real MiniLM is used where the test is about it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tiny_models import make_tiny_bert, make_tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")
DATA = Path(__file__).resolve().parents[2] / "plugins" / "finetune" / "data"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def other_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("models") / "other-bert", hidden=128)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    return make_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> dict[str, Path]:
    """64 training and 32 held-out rows of the shipped task data, plus text data."""
    d = tmp_path_factory.mktemp("data")
    out = {}
    for name, src, n in [("train", "negsent_train.jsonl", 64), ("test", "negsent_test.jsonl", 32),
                         ("pairs", "negsim_train.jsonl", 32), ("pairs_test", "negsim_test.jsonl", 16)]:
        lines = (DATA / src).read_text().splitlines()[:n]
        (d / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
        out[name] = d / f"{name}.jsonl"
    rows = [json.loads(l) for l in (DATA / "negsent_train.jsonl").read_text().splitlines()[:32]]
    (d / "lm.jsonl").write_text("".join(json.dumps({"prompt": r["text"] + " Sentiment:", "response": " " + r["label"]}) + "\n"
                                        for r in rows))
    out["lm"] = d / "lm.jsonl"
    return out
