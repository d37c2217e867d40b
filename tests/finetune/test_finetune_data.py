"""JSONL validation: every problem names the file and line."""
from __future__ import annotations

from pathlib import Path

import pytest

from gpuforge.core.errors import BadInputError
from gpuforge.plugins.finetune.dataset import load_jsonl


@pytest.mark.parametrize("text, needle", [
    ('{"text": "a", "label": 1}\n{"text": "b", "label": 0\n', "line 2: not valid JSON"),
    ('{"text": "a", "label": 1}\n[1, 2]\n', "line 2: expected a JSON object"),
    ('{"foo": 1}\n', "line 1: no known fields"),
    ('{"text": "a", "label": 1}\n{"prompt": "p", "response": "r"}\n', "line 2: fields"),
    ('{"sentence1": "a", "sentence2": "b", "score": 1.5}\n', "line 1: 'score' must be"),
    ('{"text": "", "label": 1}\n', "line 1: 'text' must be a non-empty string"),
    ('{"text": "a", "label": 1}\n{"text": "b", "label": 1}\n', "at least two distinct labels"),
    ("\n\n", "holds no examples"),
])
def test_bad_lines_are_named(tmp_path, text, needle):
    p = tmp_path / "d.jsonl"
    p.write_text(text)
    with pytest.raises(BadInputError, match=needle):
        load_jsonl(p)


def test_shapes_and_tasks(tmp_path):
    DATA = Path(__file__).resolve().parents[2] / "plugins" / "finetune" / "data"
    assert load_jsonl(DATA / "negsent_train.jsonl").task == "classification"
    assert load_jsonl(DATA / "negsim_test.jsonl").task == "embedding"
    p = tmp_path / "ab.jsonl"
    p.write_text('{"text_a": "x", "text_b": "y", "score": 0.5}\n')
    ds = load_jsonl(p)
    assert ds.task == "embedding" and ds.rows[0]["sentence1"] == "x"
    with pytest.raises(BadInputError, match="--task embedding"):
        load_jsonl(p, task="classification")
    train = [l for l in (DATA / "negsent_train.jsonl").read_text().splitlines() if l]
    test = [l for l in (DATA / "negsent_test.jsonl").read_text().splitlines() if l]
    assert len(train) == 480 and len(test) == 240 and not set(train) & set(test)
