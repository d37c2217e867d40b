"""Bad, hostile and impossible inputs to every finetune command (issue 18): each ends with
the documented exit code and one error line, without a traceback, writes nothing and
leaves its inputs' bytes as they were. The cases are listed in the plugin README
("Bad input"). The CLI runs in this process (``gpuforge.cli.main.main``) so the 40-odd
cases cost seconds, not a Python start each."""
from __future__ import annotations

import hashlib
import json
import pickle  # only to craft the hostile checkpoint that gpuforge must never open
from pathlib import Path

import pytest

from gpuforge.cli.main import main

FAST = ["--max-steps", "1", "--batch-size", "8", "--r", "4", "--max-len", "16"]


class Hostile:
    """Unpickling this creates a marker file: proof that a checkpoint ran code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, tiny_bert, other_bert, small_data):
    """Every input the cases read, in one folder whose bytes are checked after each case."""
    from safetensors.torch import load_file, save_file

    from gpuforge.plugins.finetune.api import train_adapter

    d = tmp_path_factory.mktemp("inputs")
    rows = small_data["train"].read_text().splitlines()
    (d / "train.jsonl").write_text("\n".join(rows[:16]) + "\n")
    (d / "bad.jsonl").write_text(rows[0] + "\n" + rows[1] + "\n{\"text\": oops}\n")
    (d / "one_label.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "label": "a"}) + "\n" for i in range(4)))
    (d / "texts.jsonl").write_text('{"text": "The hike was far from boring."}\n{"txt": "no text field"}\n')
    pick = d / "pickle_model"
    pick.mkdir()
    (pick / "config.json").write_text((tiny_bert / "config.json").read_text())
    (pick / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    nan = d / "nan_model"
    nan.mkdir()
    for f in tiny_bert.iterdir():
        if f.suffix != ".safetensors":
            (nan / f.name).write_bytes(f.read_bytes())
    weights = load_file(str(tiny_bert / "model.safetensors"))
    key = sorted(k for k in weights if k.endswith("attention.self.query.weight"))[0]
    weights[key][0, 0] = float("nan")
    save_file(weights, str(nan / "model.safetensors"), metadata={"format": "pt"})
    (d / "not_a_model").mkdir()
    legacy = d / "legacy.checkpoints" / "step-000003"
    legacy.mkdir(parents=True)
    (legacy / "state.pt").write_bytes(pickle.dumps(Hostile(d.parent / "PICKLE_RAN")))
    (d / "old.pt").write_bytes((legacy / "state.pt").read_bytes())
    (d / "truncated.safetensors").write_bytes((tiny_bert / "model.safetensors").read_bytes()[:1000])
    (d / "empty_ckpts").mkdir()
    (d / "afile").write_text("x")
    opts = dict(max_steps=1, batch_size=8, r=4, max_len=16)
    train_adapter(tiny_bert, d / "train.jsonl", d / "cls_adapter", **opts)
    train_adapter(tiny_bert, small_data["pairs"], d / "emb_adapter", **opts)
    bin_ad = d / "bin_adapter"
    bin_ad.mkdir()
    (bin_ad / "adapter_config.json").write_text((d / "cls_adapter" / "adapter_config.json").read_text())
    (bin_ad / "adapter_model.bin").write_bytes(b"\x80\x04not really")
    nan_ad = d / "nan_adapter"
    nan_ad.mkdir()
    for f in (d / "cls_adapter").iterdir():
        if f.is_file() and f.name != "adapter_model.safetensors":
            (nan_ad / f.name).write_bytes(f.read_bytes())
    t = load_file(str(d / "cls_adapter" / "adapter_model.safetensors"))
    next(iter(t.values()))[0, 0] = float("inf")
    save_file(t, str(nan_ad / "adapter_model.safetensors"))
    return {"dir": d, "model": tiny_bert, "other": other_bert, "marker": d.parent / "PICKLE_RAN"}


def test_every_finetune_command_is_on_the_runtime():
    """Shared options, outputs and manifests come from core.run, never from the plugin."""
    from gpuforge.plugins.finetune.cli import app

    names = set()
    for cmd in app.registered_commands:
        runtime = getattr(cmd.callback, "gpuforge_runtime", None)
        assert runtime is not None, f"finetune {cmd.name} is not registered with core.run.command"
        assert runtime["device"], f"finetune {cmd.name} computes: --device cuda must be checked before it starts"
        names.add(cmd.name)
    assert names == {"lora", "merge", "eval", "predict"}
    source = "".join(p.read_text() for p in Path(__file__).resolve().parents[2].joinpath("plugins", "finetune")
                     .glob("*.py"))
    for own in ("atomic_dir", "atomic_file", "Manifest(", "emit(", "get_context", "check_output", "os._exit"):
        assert own not in source, own


def _digest(paths: list[Path]) -> dict[str, str]:
    out = {}
    for root in paths:
        for p in sorted([root] if root.is_file() else root.rglob("*")):
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


LORA_REFUSED = [("--r", "0"), ("--dropout", "1"), ("--lr", "0"), ("--lr", "nan"), ("--optimizer", "sgd"),
                ("--task", "regression"), ("--eval-every", "-1"), ("--checkpoint-every", "0"),
                ("--slimfit-keep", "0"), ("--max-len", "0"), ("--seed", "-1"), ("--nproc", "0")]
"""(option, value) that `finetune lora` refuses as usage: exit 2, the error names the option."""


def _cases(i: dict, out: Path) -> list[tuple[str, list[str], int, str]]:
    d, m = i["dir"], str(i["model"])

    def lora_on(model: str = m, data: str = "train.jsonl", *more: str) -> list[str]:
        return ["finetune", "lora", model, "--data", str(d / data), "--out", str(out), *more]

    lora = lora_on(m, "train.jsonl", *FAST)
    pred = ["finetune", "predict", m, "--adapter", str(d / "cls_adapter")]
    return [
        # usage: exit 2, from the option parser or the runtime
        *((f"{opt} {value}", lora + [opt, value], 2, opt) for opt, value in LORA_REFUSED),
        ("device gpu", ["--device", "gpu"] + lora, 2, "--device"),
        ("torch-adamw offloaded", lora + ["--optimizer", "torch-adamw", "--offload-optimizer", "cpu"], 2,
         "--offload-optimizer cpu needs"),
        ("predict: --data and --text", pred + ["--data", str(d / "texts.jsonl"), "--text", "hi"], 2, "not both"),
        ("predict: no texts", pred, 2, "--text"),
        ("plan: batch 0", ["finetune", "plan", "--params", "7B", "--batch", "0"], 2, "--batch"),
        # bad input: exit 3
        ("data missing", lora_on(m, "missing.jsonl"), 3, "not found"),
        ("data malformed", lora_on(m, "bad.jsonl"), 3, "line 3"),
        ("data one label", lora_on(m, "one_label.jsonl"), 3, "two distinct labels"),
        ("model pickle only", lora_on(str(d / "pickle_model")), 3, "pickle files are not read; convert to safetensors"),
        ("model not a folder", lora_on(str(d / "not_a_model")), 3, "no config.json"),
        ("model NaN", lora_on(str(d / "nan_model"), "train.jsonl", *FAST), 3, "NaN or inf"),
        ("eval: model NaN", ["finetune", "eval", str(d / "nan_model"), "--data", str(d / "train.jsonl"), "--probe-data",
                             str(d / "train.jsonl")], 3, "NaN or inf"),
        ("out parent is a file", lora[:5] + ["--out", str(d / "afile" / "x")] + FAST, 3, "is a file"),
        ("out is the model folder", lora[:5] + ["--out", m, "--force"] + FAST, 3, "input"),
        ("out inside the model folder", lora[:5] + ["--out", str(i["model"] / "ad")] + FAST, 3, "inside the input"),
        ("out exists", lora[:5] + ["--out", str(d / "cls_adapter")] + FAST, 3, "--force"),
        ("resume: earlier version's pickle", lora + ["--resume", str(d / "legacy.checkpoints")], 3,
         "earlier gpuforge version"),
        ("resume: a .pt file", lora + ["--resume", str(d / "old.pt")], 3, "pickle files are not read"),
        ("resume: not a resume file", lora + ["--resume", str(i["model"] / "model.safetensors")], 3,
         "not a finetune resume file"),
        ("resume: truncated", lora + ["--resume", str(d / "truncated.safetensors")], 3, "cannot read"),
        ("resume: no checkpoint", lora + ["--resume", str(d / "empty_ckpts")], 3, "no checkpoint found"),
        ("targets match nothing", lora + ["--targets", "no_such_layer"], 3, "matches no linear layer"),
        ("rank above the layer", lora + ["--r", "100000"], 3, "larger than layer"),
        ("eval: adapter of another base", ["finetune", "eval", str(i["other"]), "--adapter", str(d / "cls_adapter"),
                                           "--data", str(d / "train.jsonl")], 3, "different base"),
        ("eval: adapter with inf", ["finetune", "eval", m, "--adapter", str(d / "nan_adapter"), "--data",
                                    str(d / "train.jsonl")], 3, "NaN or inf"),
        ("merge: pickle adapter", ["finetune", "merge", m, str(d / "bin_adapter"), "--out", str(out)], 3,
         "pickle files are not read"),
        ("predict: embedding adapter", ["finetune", "predict", m, "--adapter", str(d / "emb_adapter"), "--text", "hi"],
         3, "no classification head"),
        ("predict: a row without text", pred + ["--data", str(d / "texts.jsonl"), "--out", str(out / "p.jsonl")], 3,
         "line 2"),
    ]


def test_bad_inputs_exit_code_one_line_nothing_written_inputs_unchanged(inputs, tmp_path, capfd):
    outdir = tmp_path / "outputs"
    outdir.mkdir()
    out = outdir / "o"
    watched = [inputs["dir"], inputs["model"], inputs["other"]]
    cases = _cases(inputs, out)
    assert len(cases) >= 15
    capfd.readouterr()
    for name, argv, code, needle in cases:
        before = _digest(watched)
        got = main(argv)
        err = capfd.readouterr().err
        lines = [l for l in err.splitlines() if l.lower().startswith("error")]
        assert got == code, (name, got, err[-1500:])
        assert len(lines) == 1 and needle in lines[0], (name, err[-1500:])
        assert "Traceback" not in err, (name, err)
        assert sorted(p.name for p in outdir.iterdir()) == [], (name, list(outdir.iterdir()))
        assert _digest(watched) == before, name
        assert not any(p.name.endswith(".checkpoints") for p in inputs["dir"].parent.iterdir()), name
    assert not inputs["marker"].exists(), "a checkpoint's pickle ran"


def test_cuda_without_a_gpu_exits_4(tmp_path, capfd, small_data, tiny_bert):
    from gpuforge.hardware.detect import detect_gpus

    if not detect_gpus().cpu_only:
        pytest.skip("this machine has a GPU")
    out = tmp_path / "o"
    for argv in (["finetune", "lora", str(tiny_bert), "--data", str(small_data["train"]), "--out", str(out)],
                 ["finetune", "eval", str(tiny_bert), "--data", str(small_data["train"]), "--probe-data",
                  str(small_data["train"])]):
        capfd.readouterr()
        assert main(["--device", "cuda", *argv]) == 4
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no CUDA GPU" in err[0], err
    assert not out.exists()
