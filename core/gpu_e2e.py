"""Each plugin's end-to-end commands on small real inputs, for ``make gpu-check``.

    python -P -m gpuforge.core.gpu_e2e --work DIR --out steps.json [--device cuda] [--only quantize,...]

Every step is a ``gpuforge --device DEVICE --json ...`` command in a fresh process; its
exit code, seconds, the JSON result's small fields and the end of stderr are recorded,
and ``--out`` is rewritten after each step (a time limit keeps what finished). A step
whose input a failed step should have made is recorded as skipped.

Inputs are made offline, in seconds: a tiny Llama and a tiny BERT (random weights from a
config; the packaged MiniLM does not fit the GPU bundle) with a WordPiece tokenizer
trained on the shipped calibration text; scikit-image's astronaut photo; the fraud
plugin's simulated click stream; the radiance plugin's analytic scene. Data files that
ship with the plugins are used as they are (finetune's negsent, quantize's calibration).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gpuforge.core.safepath import python_argv, safe_env

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"
if not PLUGINS.is_dir():  # installed from the wheel: gpuforge.plugins
    import gpuforge.plugins as _plugins

    PLUGINS = Path(list(_plugins.__path__)[0])
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def make_tokenizer(dst: Path, vocab_size: int = 2000) -> int:
    """A BERT-style WordPiece tokenizer trained on the shipped calibration and finetune
    text, saved with save_pretrained; returns its vocabulary size."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    lines = (PLUGINS / "quantize" / "data" / "calibration.txt").read_text().splitlines()
    for name in ("negsent_train.jsonl", "negsim_train.jsonl"):
        for line in (PLUGINS / "finetune" / "data" / name).read_text().splitlines():
            lines += [v for v in json.loads(line).values() if isinstance(v, str)]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    dst.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(dst))
    return tok.get_vocab_size()


def make_models(work: Path) -> dict[str, Path]:
    """A tiny Llama (causal LM) and a tiny BERT, random weights, real tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    llama, bert = work / "tiny-llama", work / "tiny-bert"
    vocab = make_tokenizer(llama)
    make_tokenizer(bert)
    LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                                 pad_token_id=0)).save_pretrained(str(llama))
    BertModel(BertConfig(vocab_size=vocab, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=256, max_position_embeddings=256)).save_pretrained(str(bert))
    return {"llama": llama, "bert": bert}


def make_photo(work: Path) -> Path:
    from PIL import Image
    from skimage import data

    path = work / "photos" / "astronaut.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(data.astronaut()).save(path)
    return path


def steps(work: Path) -> list[dict[str, Any]]:
    """(plugin, name, argv, needs): ``needs`` names the steps whose outputs it reads."""
    w, d = str(work), PLUGINS
    ft = d / "finetune" / "data"
    # Most telling first: a time limit on the whole part keeps the steps that finished.
    return [
        dict(plugin="quantize", name="nf4", argv=["quantize", "run", f"{w}/tiny-llama", "--method", "nf4",
                                                  "--out", f"{w}/q-nf4"], needs=["models"]),
        dict(plugin="quantize", name="eval-nf4", argv=["quantize", "eval", f"{w}/tiny-llama", f"{w}/q-nf4",
                                                       "--seqlen", "64"], needs=["nf4"]),
        dict(plugin="superres", name="upscale", argv=["superres", "upscale", f"{w}/photos/astronaut.png", "--scale",
                                                      "3", "--out", f"{w}/astronaut_x3.png"], needs=["photo"]),
        dict(plugin="superres", name="eval", argv=["superres", "eval", f"{w}/photos", "--scale", "3"],
             needs=["photo"]),
        dict(plugin="radiance", name="make-scene", argv=["radiance", "make-scene", "--out", f"{w}/scene", "--res",
                                                         "64", "--views", "24", "--test-views", "4", "--val-views",
                                                         "2"], needs=[]),
        # --eval-every = --steps: the test PSNR once, at the end (0 divides by zero in both trainers).
        dict(plugin="radiance", name="splat-train", argv=["radiance", "splat", "train", f"{w}/scene", "--steps",
                                                          "300", "--eval-every", "300", "--sh-degree", "1",
                                                          "--out", f"{w}/splat"], needs=["make-scene"]),
        dict(plugin="radiance", name="nerf-train", argv=["radiance", "nerf", "train", f"{w}/scene", "--steps", "300",
                                                         "--eval-every", "300", "--log2-hashmap-size", "15",
                                                         "--out", f"{w}/nerf"], needs=["make-scene"]),
        dict(plugin="finetune", name="lora", argv=["finetune", "lora", f"{w}/tiny-bert", "--data",
                                                   str(ft / "negsent_train.jsonl"), "--eval-data",
                                                   str(ft / "negsent_test.jsonl"), "--task", "classification",
                                                   "--max-steps", "40", "--out", f"{w}/lora"], needs=["models"]),
        dict(plugin="finetune", name="qlora-adamw8bit", argv=["finetune", "lora", f"{w}/tiny-llama", "--data",
                                                              str(ft / "negsent_train.jsonl"), "--task",
                                                              "classification", "--qlora", "--optimizer",
                                                              "adamw-8bit", "--max-steps", "20",
                                                              "--out", f"{w}/qlora"], needs=["models"]),
        dict(plugin="fraud", name="simulate", argv=["fraud", "simulate", "--sessions", "2000",
                                                    "--out", f"{w}/clicks.parquet"], needs=[]),
        dict(plugin="fraud", name="pipeline", argv=["fraud", "pipeline", f"{w}/clicks.parquet", "--epochs", "1",
                                                    "--out", f"{w}/fraud-report"], needs=["simulate"]),
        dict(plugin="quantize", name="gptq", argv=["quantize", "run", f"{w}/tiny-llama", "--method", "gptq",
                                                   "--group-size", "64", "--nsamples", "16", "--seqlen", "64",
                                                   "--out", f"{w}/q-gptq"], needs=["models"]),
    ]


def _small(result: Any, limit: int = 3000) -> Any:
    """The result's scalar fields (and short lists): enough to read, small enough to keep."""
    if isinstance(result, dict):
        out = {k: v for k, v in result.items()
               if isinstance(v, (int, float, str, bool, type(None))) or (isinstance(v, list) and len(str(v)) < 300)}
        text = json.dumps(out, default=str)
        return out if len(text) <= limit else text[:limit]
    return str(result)[:limit]


def _write(path: Path, doc: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str))
    os.replace(tmp, path)


def run(work: Path, out: Path, device: str, only: list[str] | None = None, step_timeout: float = 300) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {"device": device, "work": str(work), "steps": []}
    done: dict[str, bool] = {}

    def setup(name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            fn(work)
            done[name] = True
            doc["steps"].append({"plugin": "setup", "name": name, "exit_code": 0,
                                 "seconds": round(time.perf_counter() - t0, 2)})
        except Exception as exc:
            done[name] = False
            doc["steps"].append({"plugin": "setup", "name": name, "exit_code": None,
                                 "error": f"{type(exc).__name__}: {exc}"[:1000]})
        _write(out, doc)

    wanted = [s for s in steps(work) if not only or s["plugin"] in only]
    if any("models" in s["needs"] for s in wanted):
        setup("models", make_models)
    if any("photo" in s["needs"] for s in wanted):
        setup("photo", make_photo)
    env = {**safe_env(), "PYTHONUNBUFFERED": "1"}
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    for step in wanted:
        entry: dict[str, Any] = {"plugin": step["plugin"], "name": step["name"],
                                 "cmd": ["gpuforge", "--device", device, "--json", *step["argv"]]}
        missing = [n for n in step["needs"] if not done.get(n)]
        if missing:
            entry.update(exit_code=None, skipped=f"needs {', '.join(missing)}, which did not finish")
            done[step["name"]] = False
        else:
            t0 = time.perf_counter()
            try:
                proc = subprocess.run([*python_argv(), "-m", "gpuforge.cli", "--device", device, "--json",
                                       *step["argv"]], capture_output=True, text=True, env=env, cwd=work,
                                      timeout=step_timeout)
                entry.update(exit_code=proc.returncode, stderr_tail=proc.stderr[-1500:])
                try:
                    entry["result"] = _small(json.loads(proc.stdout))
                except json.JSONDecodeError:
                    entry["stdout_tail"] = proc.stdout[-1500:]
            except subprocess.TimeoutExpired:
                entry.update(exit_code=None, timed_out=True)
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            done[step["name"]] = entry.get("exit_code") == 0
        doc["steps"].append(entry)
        _write(out, doc)
        sys.stderr.write(f"[gpu-e2e] {step['plugin']} {step['name']}: exit {entry.get('exit_code')}"
                         f"{' (' + entry['skipped'] + ')' if 'skipped' in entry else ''}\n")
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpuforge.core.gpu_e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="scratch folder for inputs and outputs")
    parser.add_argument("--out", required=True, help="JSON file, rewritten after each step")
    parser.add_argument("--device", default="cuda", help="the global --device of every command (default cuda)")
    parser.add_argument("--only", default="", help="comma-separated plugins (default: all)")
    parser.add_argument("--step-timeout", type=float, default=300)
    args = parser.parse_args(argv)
    doc = run(Path(args.work), Path(args.out), args.device, [s for s in args.only.split(",") if s] or None,
              args.step_timeout)
    return 0 if all(s.get("exit_code") == 0 for s in doc["steps"]) else 1


if __name__ == "__main__":
    sys.exit(main())
