"""``gpuforge finetune ...``: train (alias lora), merge, eval, predict, on the command
runtime (:mod:`gpuforge.core.run`); ``finetune plan`` is the core's ``plan finetune lora``.
Only typer and light gpuforge.core modules are imported here; torch, transformers and
numba are imported inside the commands."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from gpuforge.core.errors import UsageError
from gpuforge.core.run import Run, command

app = typer.Typer(help="LoRA / QLoRA fine-tuning, SlimFit freezing, CPU-offloaded AdamW, PEFT-compatible adapters.",
                  no_args_is_help=True)


BaseModel = Annotated[str, typer.Argument(metavar="MODEL", help="Base model folder.")]
"""MODEL of the commands that read a base model with an adapter on top (eval, predict)."""


class Task(str, Enum):
    causal_lm = "causal-lm"
    classification = "classification"
    embedding = "embedding"


class Freeze(str, Enum):
    none = "none"
    slimfit = "slimfit"


class Offload(str, Enum):
    none = "none"
    cpu = "cpu"


class Optimizer(str, Enum):
    auto = "auto"
    adamw = "adamw"
    adamw_8bit = "adamw-8bit"
    torch_adamw = "torch-adamw"


def _positive(value: float) -> float:
    if not value > 0 or value == float("inf"):
        raise typer.BadParameter(f"{value} must be a positive number")
    return value


def _fraction(low_open: bool, high_open: bool):
    def check(value: float) -> float:
        lo_ok = value > 0 if low_open else value >= 0
        hi_ok = value < 1 if high_open else value <= 1
        if not (lo_ok and hi_ok):
            raise typer.BadParameter(f"{value} is not in {'(' if low_open else '['}0, 1{')' if high_open else ']'}")
        return value

    return check


def _val(x):
    return x.value if isinstance(x, Enum) else x


@command(app, "lora", outputs=True, seeded=True)
def lora(
    run: Run,
    model: str = typer.Argument(..., metavar="MODEL", help="Hugging Face model folder (config.json + safetensors weights)."),
    data: str = typer.Option(..., "--data", help="Training JSONL."),
    out: str = typer.Option(..., "--out", help="Adapter folder to write."),
    task: Optional[Task] = typer.Option(None, "--task", help="Default: from the data."),
    r: int = typer.Option(16, "--r", min=1, help="LoRA rank."),
    alpha: float = typer.Option(32.0, "--alpha", callback=_positive, help="LoRA alpha (scaling alpha/r)."),
    dropout: float = typer.Option(0.05, "--dropout", callback=_fraction(False, True), help="Dropout on the LoRA input, in [0, 1)."),
    targets: str = typer.Option("all-linear", "--targets", help="all-linear, or a regex matching whole module paths."),
    qlora: bool = typer.Option(False, "--qlora", help="Frozen NF4 base (double-quantized scales)."),
    freeze: Freeze = typer.Option(Freeze.none, "--freeze"),
    offload_optimizer: Offload = typer.Option(Offload.none, "--offload-optimizer",
                                              help="cpu: optimizer state in host memory, numba-cpu AdamW (ZeRO-Offload)."),
    optimizer: Optimizer = typer.Option(Optimizer.auto, "--optimizer",
                                        help="auto: torch-adamw, or adamw where --offload-optimizer cpu or --nproc "
                                             "needs it (a resumed run keeps its checkpoint's); adamw: our fused kernel "
                                             "on flat fp32 buffers; adamw-8bit: 8-bit moments (4x less state); "
                                             "torch-adamw: torch.optim.AdamW(fused=True)."),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing"),
    epochs: int = typer.Option(3, "--epochs", min=1),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", min=1, help="Stop after N optimizer steps (overrides --epochs)."),
    lr: float = typer.Option(5e-4, "--lr", callback=_positive),
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    grad_accum: int = typer.Option(1, "--grad-accum", min=1),
    eval_data: Optional[str] = typer.Option(None, "--eval-data", help="Held-out JSONL for the eval metric."),
    eval_every: int = typer.Option(0, "--eval-every", min=0, help="Evaluate every N steps (0: only at the end)."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", min=1, help="Checkpoint every N steps."),
    weight_decay: float = typer.Option(0.0, "--weight-decay", min=0.0),
    slimfit_keep: float = typer.Option(0.4, "--slimfit-keep", callback=_fraction(True, False),
                                       help="Share of LoRA parameters SlimFit keeps training, in (0, 1]."),
    slimfit_warmup: float = typer.Option(0.15, "--slimfit-warmup", callback=_fraction(False, True),
                                         help="Share of steps before SlimFit freezes, in [0, 1)."),
    max_len: int = typer.Option(128, "--max-len", min=2, help="Truncate examples to this many tokens."),
    resume: Optional[str] = typer.Option(None, "--resume",
                                         help="Continue from a checkpoint (step-N.safetensors, <OUT>.checkpoints or a finished OUT)."),
    nproc: int = typer.Option(1, "--nproc", min=1, max=256,
                              help="Data-parallel processes on this machine (torch.distributed, gloo, CPU); "
                                   "with --qlora the NF4 base is sharded over them (FSDP2)."),
) -> None:
    """Train a LoRA (or QLoRA) adapter; writes a PEFT-compatible adapter folder."""
    from gpuforge.plugins.finetune.train import TrainArgs, train

    a = TrainArgs(model=model, data=data, out=out, task=_val(task), r=r, alpha=alpha, dropout=dropout, targets=targets,
                  qlora=qlora, freeze=_val(freeze), offload_optimizer=_val(offload_optimizer), optimizer=_val(optimizer),
                  gradient_checkpointing=gradient_checkpointing, epochs=epochs, max_steps=max_steps, lr=lr,
                  weight_decay=weight_decay, batch_size=batch_size, grad_accum=grad_accum, eval_data=eval_data,
                  eval_every=eval_every, checkpoint_every=checkpoint_every, slimfit_keep=slimfit_keep,
                  slimfit_warmup=slimfit_warmup, max_len=max_len, seed=run.seed_or(0), resume=resume, nproc=nproc)
    with run.progress("fine-tuning") as bar:
        res = train(run, a, bar=bar)
    metric = f"{res['metric']} {res['eval_metric']:.4f}" if res["eval_metric"] is not None else "no --eval-data"
    run.result(res, f"adapter written to {res['out']}: {res['steps']} steps, final loss {res['final_loss']:.4f}, "
                    f"{metric}, trainable state {res['trainable_state_bytes'] / 2**20:.2f} MiB")


@command(app, "merge", outputs=True)
def merge(
    run: Run,
    base: str = typer.Argument(..., metavar="BASE", help="Base model folder."),
    adapter: str = typer.Argument(..., metavar="ADAPTER", help="Adapter folder (ours or peft's)."),
    out: str = typer.Option(..., "--out", help="Merged model folder to write."),
) -> None:
    """Fold an adapter into its base: a plain model folder (a QLoRA base is dequantized first)."""
    run.input(base, "BASE")
    run.input(adapter, "ADAPTER")
    folder = run.output(out, kind="dir")
    from gpuforge.plugins.finetune.evaluate import merge_into

    res = {"out": out, **merge_into(folder.tmp, base, adapter)}
    run.result(res, f"merged {res['merged_layers']} LoRA layers into {res['out']}")


@command(app, "eval", outputs=True)
def eval_(
    run: Run,
    model: BaseModel,
    data: str = typer.Option(..., "--data", help="JSONL to evaluate on."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="Adapter folder (with its head for classification)."),
    task: Optional[Task] = typer.Option(None, "--task", help="causal-lm, classification or embedding. Default: the adapter's task, else from the data."),
    probe_data: Optional[str] = typer.Option(None, "--probe-data",
                                             help="Classification: fit a logistic-regression probe on frozen embeddings of this JSONL (the untuned baseline)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the result as JSON here (with a manifest)."),
) -> None:
    """Task metric of a model (+ adapter) on DATA: accuracy, Spearman or perplexity."""
    run.input(model, "MODEL")
    run.input(data, "--data file")
    for path, what in ((adapter, "--adapter folder"), (probe_data, "--probe-data file")):
        if path is not None:
            run.input(path, what)
    report = run.output(out, kind="file") if out is not None else None
    from gpuforge.plugins.finetune.evaluate import eval_model

    res = eval_model(model, data, adapter, _val(task), probe_data, run.torch_device)
    if report is not None:
        from gpuforge.core.output import to_json

        report.tmp.write_text(to_json(res) + "\n")
    run.result(res, f"{res['metric']} {res['value']:.4f} on {res['examples']} examples ({res['how']})")


@command(app, "predict", outputs=True)
def predict(
    run: Run,
    model: BaseModel,
    adapter: str = typer.Option(..., "--adapter", help="Classification adapter folder (finetune lora --task classification)."),
    data: Optional[str] = typer.Option(None, "--data", help="JSONL of {\"text\": ...} rows (a \"label\" is kept for accuracy)."),
    text: Optional[List[str]] = typer.Option(None, "--text", help="A text to classify (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write one JSON line per text here (.jsonl)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
) -> None:
    """Labels and probabilities of the adapter's classification head for new texts."""
    if (data is None) == (not text):
        raise UsageError("give the texts with --data FILE.jsonl or with --text (one or more), not both")
    run.input(model, "MODEL")
    run.input(adapter, "--adapter folder")
    if data is not None:
        run.input(data, "--data file")
    dst = run.output(out, kind="file") if out is not None else None
    from gpuforge.plugins.finetune.api import load_adapter
    from gpuforge.plugins.finetune.evaluate import read_texts

    texts, gold = read_texts(Path(data)) if data is not None else (list(text), None)
    ft = load_adapter(model, adapter, run.torch_device)
    preds = ft.predict(texts, batch_size)
    rows = [{"text": t, **p} for t, p in zip(texts, preds)]
    res = {"examples": len(rows), "labels": ft.labels,
           "counts": {l: sum(r["label"] == l for r in rows) for l in ft.labels}}
    if gold is not None:
        res["accuracy"] = sum(r["label"] == g for r, g in zip(rows, gold)) / len(rows)
    if dst is not None:
        import json

        dst.tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        res["out"] = str(out)
    else:
        res["predictions"] = rows

    def human() -> None:
        if dst is not None:
            acc = f", accuracy {res['accuracy']:.4f}" if "accuracy" in res else ""
            print(f"{len(rows)} predictions -> {out} ({', '.join(f'{l}: {n}' for l, n in res['counts'].items())}{acc})")
            return
        from gpuforge.core.output import print_table

        print_table([{"label": r["label"], "p": f"{r['scores'][r['label']]:.3f}", "text": r["text"]} for r in rows],
                    ["label", "p", "text"])

    run.result(res, human)
