"""Bad, corrupt and impossible inputs to every quantize command (issue 18): each ends with
the documented exit code and one error line, without a traceback, writes nothing and
leaves its inputs' bytes as they were. The cases are listed in the plugin README ("Bad
input"). The CLI runs in this process (``gpuforge.cli.main.main``): a Python start per
case would cost more than the cases."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
from safetensors.numpy import save_file  # noqa: E402
from tiny_models import two_linears  # noqa: E402

from gpuforge.cli.main import main  # noqa: E402


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict:
    """Every input the cases read, in one folder whose bytes are checked after each case."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path_factory.mktemp("qinputs")
    rng = np.random.default_rng(0)
    sd = two_linears(rng, (16, 64), (8, 64))
    save_file(sd, str(d / "sd.safetensors"))
    raw = (d / "sd.safetensors").read_bytes()
    (d / "truncated.safetensors").write_bytes(raw[: len(raw) - 500])   # header intact, data cut
    (d / "junk.safetensors").write_bytes(b"\x00\x01not a safetensors file")
    (d / "notes.txt").write_text("hello")
    nan = dict(sd)
    nan["a.weight"] = sd["a.weight"].copy()
    nan["a.weight"][3, 5] = np.inf
    save_file(nan, str(d / "inf.safetensors"))
    save_file({"a.weight": rng.integers(0, 9, (16, 64)).astype(np.int32)}, str(d / "ints.safetensors"))
    save_file({"a.weight": sd["a.weight"][:, :48].copy()}, str(d / "odd.safetensors"))

    # a small Llama saved in several shards with an index
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    good = d / "sharded"
    LlamaForCausalLM(cfg).save_pretrained(str(good), max_shard_size="100KB")
    index = json.loads((good / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2

    def variant(name: str) -> Path:
        v = d / name
        v.mkdir()
        for f in good.iterdir():
            (v / f.name).write_bytes(f.read_bytes())
        return v

    cut = variant("truncated_shard")
    data = (cut / shards[-1]).read_bytes()
    (cut / shards[-1]).write_bytes(data[: len(data) // 2])
    gone = variant("missing_shard")
    (gone / shards[-1]).unlink()
    badidx = variant("bad_index")
    (badidx / "model.safetensors.index.json").write_text("{not json")
    nocfg = variant("no_config")
    (nocfg / "config.json").unlink()
    badcfg = variant("bad_config")
    (badcfg / "config.json").write_text('{"model_type": "no-such-architecture"}')
    (d / "afile").write_text("x")
    return {"dir": d, "sharded": good}


def _digest(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _cases(i: dict, out: Path) -> list[tuple[str, list[str], int, str]]:
    d = i["dir"]
    sd = str(d / "sd.safetensors")
    run = ["quantize", "run"]
    nf4 = ["--method", "nf4", "--out", str(out)]
    return [
        # usage: exit 2
        ("unknown method", run + [sd, "--method", "awq", "--out", str(out)], 2, "unknown method"),
        ("bits 7", run + [sd, "--method", "rtn", "--bits", "7", "--out", str(out)], 2, "--bits"),
        ("shard size 0", run + [sd, *nf4, "--shard-size", "0"], 2, "--shard-size"),
        ("gptq on a state dict", run + [sd, "--method", "gptq", "--out", str(out)], 2, "model folder"),
        ("sparsify 1:4", ["quantize", "sparsify", sd, "--pattern", "1:4", "--out", str(out)], 2, "2:4"),
        ("advise context -5", ["quantize", "advise", "--params", "7B", "--gpu", "a100-80gb", "--context", "-5"], 2,
         "--context"),
        # bad input: exit 3
        ("input missing", run + [str(d / "missing.safetensors"), *nf4], 3, "not found"),
        ("input a text file", run + [str(d / "notes.txt"), *nf4], 3, "notes.txt"),
        ("corrupt safetensors", run + [str(d / "junk.safetensors"), *nf4], 3, "junk.safetensors"),
        ("truncated safetensors", run + [str(d / "truncated.safetensors"), *nf4], 3, "truncated.safetensors"),
        ("inf weights", run + [str(d / "inf.safetensors"), *nf4], 3, "inf"),
        ("integer weights only", run + [str(d / "ints.safetensors"), *nf4], 3, "nothing to quantize"),
        ("block size does not divide", run + [str(d / "odd.safetensors"), *nf4], 3, "block"),
        ("truncated shard", run + [str(d / "truncated_shard"), *nf4], 3, "truncated_shard"),
        ("index names a missing shard", run + [str(d / "missing_shard"), *nf4], 3, "missing_shard"),
        ("index not JSON", run + [str(d / "bad_index"), *nf4], 3, "index"),
        ("folder without config.json", run + [str(d / "no_config"), "--method", "gptq", "--out", str(out)], 3,
         "no_config"),
        ("unknown architecture", run + [str(d / "bad_config"), *nf4], 3, "bad_config"),
        ("output is the input folder", run + [str(d / "sharded"), "--method", "nf4", "--out", str(d / "sharded"),
                                              "--force"], 3, "input"),
        ("output inside the input folder", run + [str(d / "sharded"), "--method", "nf4", "--out",
                                                  str(d / "sharded" / "q"), "--force"], 3, "inside the input"),
        ("output folder contains the input", run + [sd, "--method", "nf4", "--out", str(d), "--force"], 3,
         "contains the input"),
        ("output exists", run + [sd, "--method", "nf4", "--out", str(d / "afile")], 3, "--force"),
        ("output under a file", run + [sd, "--method", "nf4", "--out", str(d / "afile" / "q")], 3, "is a file"),
        ("eval: quantized missing", ["quantize", "eval", sd, str(d / "nope")], 3, "not found"),
        ("inspect: not a quantized output", ["quantize", "inspect", str(d / "notes.txt")], 3, "notes.txt"),
        ("kv on a state dict", ["quantize", "kv", sd], 3, "folder"),
        ("sparsify corrupt input", ["quantize", "sparsify", str(d / "junk.safetensors"), "--out", str(out)], 3,
         "junk.safetensors"),
        # unsupported hardware: exit 4
        ("--device cuda without a GPU", ["--device", "cuda", *run, sd, *nf4], 4, "CUDA"),
    ]


def test_bad_inputs_exit_code_one_line_nothing_written_inputs_unchanged(inputs, tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    outdir = tmp_path / "outputs"
    outdir.mkdir()
    cases = _cases(inputs, outdir / "q")
    assert len(cases) >= 15
    capfd.readouterr()
    failed = []
    for name, argv, code, needle in cases:
        before = _digest(inputs["dir"])
        got = main(argv)
        err = capfd.readouterr().err
        lines = [line for line in err.splitlines() if line.lower().startswith("error")]
        problems = []
        if got != code:
            problems.append(f"exit {got}, not {code}")
        if len(lines) != 1 or needle not in lines[0]:
            problems.append(f"not one error line naming {needle!r}")
        if "Traceback" in err:
            problems.append("traceback")
        if list(outdir.iterdir()):
            problems.append(f"wrote {sorted(p.name for p in outdir.iterdir())}")
        if _digest(inputs["dir"]) != before:
            problems.append("changed an input")
        if [p for p in inputs["dir"].iterdir() if p.name.startswith(".")]:
            problems.append("left a temporary file")
        if problems:
            failed.append(f"{name}: {'; '.join(problems)}; stderr: {err.strip()[-400:]}")
    assert not failed, "\n".join(failed)
