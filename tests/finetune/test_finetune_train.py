"""`gpuforge finetune lora/eval/merge` end to end on tiny random models (fast), plus
exact resume after a kill, the optimizers and SlimFit."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from gpuforge.core.safepath import python_argv

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
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002.safetensors"]
    assert not (tmp_path / "ad.checkpoints").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    # the default --optimizer auto is torch's fused step (issue 20): no registry kernel ran,
    # and the manifest says which step did
    assert manifest["device"] == "cpu" and manifest["kernels"] == {}
    assert manifest["optimizer"] == {"kind": "torch-adamw", "step": "torch.optim.AdamW(fused=True)"}
    assert res["optimizer"] == "torch-adamw"
    assert {Path(i["path"]).name for i in manifest["inputs"]} == {"tiny-bert", "train.jsonl", "test.jsonl"}
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


def _killed_after_first_checkpoint(argv: list[str], ckpt_dir: Path, env: dict, timeout: float = 300) -> None:
    """Run the CLI and SIGKILL it from outside as soon as its first resume file appears."""
    proc = subprocess.Popen([*python_argv(), "-m", "gpuforge.cli", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not any(ckpt_dir.glob("step-*.safetensors")):
            if proc.poll() is not None:
                raise AssertionError(f"exited {proc.returncode} before its first checkpoint: {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("no checkpoint appeared in time")
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL, "the run finished before the kill landed; give it more steps"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def test_killed_and_resumed_run_ends_with_the_same_adapter(run_cli, isolated_env, tiny_bert, small_data, tmp_path):
    """Killed (SIGKILL, from outside) right after its first checkpoint, then resumed: the
    adapter and head equal the uninterrupted run's bit for bit (dropout on, so the RNG
    state round trip matters)."""
    from gpuforge.core.errors import BadInputError
    from gpuforge.plugins.finetune.api import train_adapter

    opts = dict(max_steps=12, checkpoint_every=3, dropout=0.2, seed=7, batch_size=8, r=4, max_len=32)
    args = [a for k, v in opts.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    full = tmp_path / "full"
    train_adapter(tiny_bert, small_data["train"], full, **opts)
    part = tmp_path / "part"
    base = ["finetune", "lora", str(tiny_bert), "--data", str(small_data["train"]), "--out", str(part), *args]
    ckpts = tmp_path / "part.checkpoints"
    _killed_after_first_checkpoint(base, ckpts, isolated_env)
    assert not part.exists() and any(ckpts.glob("step-*.safetensors"))
    # a fresh start over a killed run's state needs --force or --resume
    with pytest.raises(BadInputError, match="resume from it"):
        train_adapter(tiny_bert, small_data["train"], part, **opts)
    resumed = run_cli(*base, "--resume", str(ckpts), "--json")
    assert resumed.code == 0, resumed
    assert "resumed_from" in json.loads((part / "manifest.json").read_text())
    a, b = load_file(str(full / "adapter_model.safetensors")), load_file(str(part / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all(), k
    ha, hb = load_file(str(full / "head.safetensors")), load_file(str(part / "head.safetensors"))
    assert all((ha[k] == hb[k]).all() for k in ha)
    losses = [[json.loads(l)["loss"] for l in (d / "train_log.jsonl").read_text().splitlines()] for d in (full, part)]
    assert losses[0] == losses[1]
    # resuming with other settings is refused
    with pytest.raises(BadInputError, match="different settings"):
        train_adapter(tiny_bert, small_data["train"], tmp_path / "x", **{**opts, "r": 8}, resume=str(part / "checkpoints"))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("extra,kernels", [
    (["--offload-optimizer", "cpu"], {"finetune.adamw_step"}),
    (["--optimizer", "adamw-8bit"], {"finetune.adamw_step", "finetune.quantize_blockwise_8bit",
                                     "finetune.dequantize_blockwise_8bit"}),
    (["--optimizer", "torch-adamw"], set())], ids=["offload-cpu", "adamw-8bit", "torch-adamw"])
def test_offloaded_8bit_and_torch_optimizers_train(run_cli, tiny_bert, small_data, tmp_path, extra, kernels):
    r = _lora(run_cli, tiny_bert, small_data["train"], tmp_path / "o", *extra)
    assert r.code == 0, r
    assert r.json()["final_loss"] > 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["kernels"] == {k: "numba-cpu" for k in kernels}


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
    from gpuforge.plugins.finetune.api import train_adapter

    ad = tmp_path / "ad"
    train_adapter(tiny_bert, small_data["pairs"], ad, max_steps=4, r=4, alpha=8, batch_size=8, max_len=32)
    assert json.loads((ad / "manifest.json").read_text())["command"] == "finetune lora"
    m = run_cli("finetune", "merge", str(tiny_bert), str(ad), "--out", str(tmp_path / "merged"), "--json")
    assert m.code == 0, m
    e1 = run_cli("finetune", "eval", str(tiny_bert), "--adapter", str(ad), "--data", str(small_data["pairs_test"]), "--json")
    e2 = run_cli("finetune", "eval", str(tmp_path / "merged"), "--data", str(small_data["pairs_test"]), "--json")
    assert e1.code == 0 and e2.code == 0, (e1, e2)
    assert e1.json()["value"] == pytest.approx(e2.json()["value"], abs=1e-4)
