"""`gpuforge finetune lora/eval/merge` end to end on tiny random models (fast), plus
exact resume after a kill, the optimizers, SlimFit and the bad-input paths."""
from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "plugins" / "finetune" / "data"

FAST = ["--max-steps", "4", "--batch-size", "8", "--r", "4", "--alpha", "8", "--max-len", "32"]


def _lora(run_cli, model, data, out, *extra, env=None):
    return run_cli("finetune", "lora", str(model), "--data", str(data), "--out", str(out), *FAST, *extra, "--json",
                   env=env)


def test_classification_run_writes_adapter_log_manifest(run_cli, tiny_bert, small_data, tmp_path):
    out = tmp_path / "ad"
    r = _lora(run_cli, tiny_bert, small_data["train"], out, "--eval-data", str(small_data["test"]),
              "--checkpoint-every", "2")
    assert r.code == 0, r
    res = r.json()
    assert res["task"] == "classification" and res["metric"] == "accuracy" and 0 <= res["eval_metric"] <= 1
    for name in ("adapter_model.safetensors", "adapter_config.json", "manifest.json", "train_log.jsonl",
                 "head.safetensors", "gpuforge_adapter.json"):
        assert (out / name).is_file(), name
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002"]
    assert not (tmp_path / "ad.checkpoints").exists()
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3, 4]
    assert {"loss", "tokens_per_s", "peak_rss_mb", "trainable_state_bytes"} <= set(log[0])
    keys = load_file(str(out / "adapter_model.safetensors"))
    assert all(k.startswith("base_model.model.encoder.layer.") for k in keys)
    # eval with the adapter's head reproduces the training result
    e = run_cli("finetune", "eval", str(tiny_bert), "--adapter", str(out), "--data", str(small_data["test"]), "--json")
    assert e.code == 0, e
    assert e.json()["value"] == pytest.approx(res["eval_metric"])
    # refuses to overwrite
    again = _lora(run_cli, tiny_bert, small_data["train"], out)
    assert again.code == 3 and "--force" in again.stderr


def test_killed_and_resumed_run_ends_with_the_same_adapter(run_cli, tiny_bert, small_data, tmp_path):
    args = ["--max-steps", "6", "--checkpoint-every", "3", "--dropout", "0.2", "--seed", "7"]
    full = tmp_path / "full"
    r = run_cli("finetune", "lora", str(tiny_bert), "--data", str(small_data["train"]), "--out", str(full),
                "--batch-size", "8", "--r", "4", "--max-len", "32", *args)
    assert r.code == 0, r
    part = tmp_path / "part"
    base = ["finetune", "lora", str(tiny_bert), "--data", str(small_data["train"]), "--out", str(part),
            "--batch-size", "8", "--r", "4", "--max-len", "32", *args]
    killed = run_cli(*base, env={"GPUFORGE_FINETUNE_KILL_AFTER_STEP": "3"})
    assert killed.code == 137
    assert not part.exists() and (tmp_path / "part.checkpoints" / "step-000003" / "state.pt").is_file()
    resumed = run_cli(*base, "--resume", str(tmp_path / "part.checkpoints"))
    assert resumed.code == 0, resumed
    a, b = load_file(str(full / "adapter_model.safetensors")), load_file(str(part / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), k
    ha, hb = load_file(str(full / "head.safetensors")), load_file(str(part / "head.safetensors"))
    assert all((ha[k] == hb[k]).all() for k in ha)
    # resuming with other settings is refused
    other = run_cli("finetune", "lora", str(tiny_bert), "--data", str(small_data["train"]), "--out",
                    str(tmp_path / "x"), "--batch-size", "8", "--r", "8", "--max-len", "32", *args,
                    "--resume", str(part / "checkpoints"))
    assert other.code == 3 and "different settings" in other.stderr


@pytest.mark.parametrize("extra", [["--offload-optimizer", "cpu"], ["--optimizer", "adamw-8bit"]],
                         ids=["offload-cpu", "adamw-8bit"])
def test_offloaded_and_8bit_optimizers_train(run_cli, tiny_bert, small_data, tmp_path, extra):
    r = _lora(run_cli, tiny_bert, small_data["train"], tmp_path / "o", *extra)
    assert r.code == 0, r
    assert r.json()["final_loss"] > 0


def test_slimfit_cuts_trainable_state_at_least_2x(run_cli, tiny_bert, small_data, tmp_path):
    r = run_cli("finetune", "lora", str(tiny_bert), "--data", str(small_data["train"]), "--out", str(tmp_path / "s"),
                "--max-steps", "6", "--batch-size", "8", "--r", "4", "--max-len", "32", "--freeze", "slimfit",
                "--slimfit-warmup", "0.34", "--json")
    assert r.code == 0, r
    res = r.json()
    assert res["slimfit_frozen"]
    assert res["trainable_state_bytes_before_freeze"] / res["trainable_state_bytes"] >= 2.0, res


def test_embedding_and_causal_lm_tasks(run_cli, tiny_bert, tiny_llama, small_data, tmp_path):
    r = _lora(run_cli, tiny_bert, small_data["pairs"], tmp_path / "emb", "--eval-data", str(small_data["pairs_test"]))
    assert r.code == 0, r
    assert r.json()["task"] == "embedding" and -1 <= r.json()["eval_metric"] <= 1
    r = _lora(run_cli, tiny_llama, small_data["lm"], tmp_path / "lm", "--eval-data", str(small_data["lm"]),
              "--gradient-checkpointing")
    assert r.code == 0, r
    assert r.json()["task"] == "causal-lm" and r.json()["eval_metric"] > 1
    m = run_cli("finetune", "merge", str(tiny_llama), str(tmp_path / "lm"), "--out", str(tmp_path / "merged"), "--json")
    assert m.code == 0, m
    assert (tmp_path / "merged" / "config.json").is_file() and (tmp_path / "merged" / "manifest.json").is_file()


def test_merge_then_eval_matches_adapter(run_cli, tiny_bert, small_data, tmp_path):
    from gpuforge.plugins.finetune.train import TrainArgs, train

    ad = tmp_path / "ad"
    train(TrainArgs(model=str(tiny_bert), data=str(small_data["pairs"]), out=str(ad), max_steps=4, r=4, alpha=8,
                    batch_size=8, max_len=32))
    m = run_cli("finetune", "merge", str(tiny_bert), str(ad), "--out", str(tmp_path / "merged"), "--json")
    assert m.code == 0, m
    e1 = run_cli("finetune", "eval", str(tiny_bert), "--adapter", str(ad), "--data", str(small_data["pairs_test"]), "--json")
    e2 = run_cli("finetune", "eval", str(tmp_path / "merged"), "--data", str(small_data["pairs_test"]), "--json")
    assert e1.code == 0 and e2.code == 0, (e1, e2)
    assert e1.json()["value"] == pytest.approx(e2.json()["value"], abs=1e-4)


def test_bad_inputs_one_line_exit_code_nothing_written(run_cli, tiny_bert, other_bert, small_data, tmp_path):
    from gpuforge.core.errors import BadInputError
    from gpuforge.plugins.finetune.train import TrainArgs, train

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine", "label": "positive"}\n{"text": "also fine", "label": "negative"}\n{"text": oops}\n')
    out = tmp_path / "never"
    # through the CLI: one "error:" line, exit code 3 (bad input) / 2 (usage)
    r = run_cli("finetune", "lora", str(tiny_bert), "--out", str(out), "--max-steps", "1", "--data", str(bad))
    err = [l for l in r.stderr.strip().splitlines() if l.startswith("error")]
    assert r.code == 3 and len(err) == 1 and "line 3" in err[0], r
    r = run_cli("finetune", "lora", str(tiny_bert), "--data", str(small_data["train"]), "--out", str(out),
                "--optimizer", "sgd")
    assert r.code == 2 and "--optimizer" in r.stderr
    # the same paths in-process (faster): targets, rank, missing file
    cases = [({"targets": "no_such_layer"}, "matches no linear layer"), ({"r": 100000}, "larger than layer"),
             ({"data": str(DATA / "missing.jsonl")}, "not found")]
    for change, needle in cases:
        kw = {"model": str(tiny_bert), "data": str(small_data["train"]), "out": str(out), "max_steps": 1, **change}
        with pytest.raises(BadInputError, match=needle):
            train(TrainArgs(**kw))
    assert not out.exists() and not (tmp_path / "never.checkpoints").exists()
    # an adapter for a different base
    ad = tmp_path / "ad"
    train(TrainArgs(model=str(tiny_bert), data=str(small_data["pairs"]), out=str(ad), max_steps=1, r=4, max_len=32))
    r = run_cli("finetune", "merge", str(other_bert), str(ad), "--out", str(tmp_path / "m"))
    assert r.code == 3 and "different base" in r.stderr and not (tmp_path / "m").exists()
