"""``gpuforge finetune ...``: lora, merge, eval, plan. Heavy imports happen inside commands."""
from __future__ import annotations

from typing import Optional

import typer

from gpuforge.core.output import emit

app = typer.Typer(help="LoRA / QLoRA fine-tuning, SlimFit freezing, CPU-offloaded AdamW, PEFT-compatible adapters.",
                  no_args_is_help=True)


def _seed(seed: Optional[int]) -> int:
    from gpuforge.core.context import get_context

    return seed if seed is not None else (get_context().seed if get_context().seed is not None else 0)


@app.command()
def lora(
    model: str = typer.Argument(..., metavar="MODEL", help="Hugging Face model folder (config.json + weights)."),
    data: str = typer.Option(..., "--data", help="Training JSONL."),
    out: str = typer.Option(..., "--out", help="Adapter folder to write."),
    task: Optional[str] = typer.Option(None, "--task", help="causal-lm|classification|embedding (default: from the data)."),
    r: int = typer.Option(16, "--r", help="LoRA rank."),
    alpha: float = typer.Option(32.0, "--alpha", help="LoRA alpha (scaling alpha/r)."),
    dropout: float = typer.Option(0.05, "--dropout", help="Dropout on the LoRA input."),
    targets: str = typer.Option("all-linear", "--targets", help="all-linear, or a regex matching whole module paths."),
    qlora: bool = typer.Option(False, "--qlora", help="Frozen NF4 base (double-quantized scales)."),
    freeze: str = typer.Option("none", "--freeze", help="none|slimfit"),
    offload_optimizer: str = typer.Option("none", "--offload-optimizer", help="none|cpu (fused numba-cpu AdamW)."),
    optimizer: str = typer.Option("adamw", "--optimizer", help="adamw|adamw-8bit"),
    gradient_checkpointing: bool = typer.Option(False, "--gradient-checkpointing"),
    epochs: int = typer.Option(3, "--epochs"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after N optimizer steps (overrides --epochs)."),
    lr: float = typer.Option(5e-4, "--lr"),
    batch_size: int = typer.Option(16, "--batch-size"),
    grad_accum: int = typer.Option(1, "--grad-accum"),
    eval_data: Optional[str] = typer.Option(None, "--eval-data", help="Held-out JSONL for the eval metric."),
    eval_every: int = typer.Option(0, "--eval-every", help="Evaluate every N steps (0: only at the end)."),
    checkpoint_every: int = typer.Option(50, "--checkpoint-every", help="Checkpoint every N steps."),
    weight_decay: float = typer.Option(0.0, "--weight-decay"),
    slimfit_keep: float = typer.Option(0.4, "--slimfit-keep", help="Share of LoRA parameters SlimFit keeps training."),
    slimfit_warmup: float = typer.Option(0.15, "--slimfit-warmup", help="Share of steps before SlimFit freezes."),
    max_len: int = typer.Option(128, "--max-len", help="Truncate examples to this many tokens."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed (default: global --seed, else 0)."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue from a checkpoint (step folder or <OUT>.checkpoints)."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Train a LoRA (or QLoRA) adapter; writes a PEFT-compatible adapter folder."""
    from gpuforge.plugins.finetune.train import TrainArgs, train

    a = TrainArgs(model=model, data=data, out=out, task=task, r=r, alpha=alpha, dropout=dropout, targets=targets,
                  qlora=qlora, freeze=freeze, offload_optimizer=offload_optimizer, optimizer=optimizer,
                  gradient_checkpointing=gradient_checkpointing, epochs=epochs, max_steps=max_steps, lr=lr,
                  weight_decay=weight_decay, batch_size=batch_size, grad_accum=grad_accum, eval_data=eval_data,
                  eval_every=eval_every, checkpoint_every=checkpoint_every, slimfit_keep=slimfit_keep,
                  slimfit_warmup=slimfit_warmup, max_len=max_len, seed=_seed(seed), force=force, resume=resume)
    res = train(a)
    metric = f"{res['metric']} {res['eval_metric']:.4f}" if res["eval_metric"] is not None else "no --eval-data"
    emit(res, f"adapter written to {res['out']}: {res['steps']} steps, final loss {res['final_loss']:.4f}, {metric}, "
              f"trainable state {res['trainable_state_bytes'] / 2**20:.2f} MiB", as_json=json_out or None)


@app.command()
def merge(
    base: str = typer.Argument(..., metavar="BASE", help="Base model folder."),
    adapter: str = typer.Argument(..., metavar="ADAPTER", help="Adapter folder (ours or peft's)."),
    out: str = typer.Option(..., "--out", help="Merged model folder to write."),
    force: bool = typer.Option(False, "--force"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Fold an adapter into its base: a plain model folder (a QLoRA base is dequantized first)."""
    from gpuforge.plugins.finetune.evaluate import merge_to_folder

    res = merge_to_folder(base, adapter, out, force)
    emit(res, f"merged {res['merged_layers']} LoRA layers into {res['out']}", as_json=json_out or None)


@app.command("eval")
def eval_(
    model: str = typer.Argument(..., metavar="MODEL", help="Base model folder."),
    data: str = typer.Option(..., "--data", help="JSONL to evaluate on."),
    adapter: Optional[str] = typer.Option(None, "--adapter", help="Adapter folder (with its head for classification)."),
    task: Optional[str] = typer.Option(None, "--task"),
    probe_data: Optional[str] = typer.Option(None, "--probe-data",
                                             help="Classification: fit a logistic-regression probe on frozen embeddings of this JSONL (the untuned baseline)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Task metric of a model (+ adapter) on DATA: accuracy, Spearman or perplexity."""
    from gpuforge.plugins.finetune.evaluate import eval_model

    res = eval_model(model, data, adapter, task, probe_data)
    emit(res, f"{res['metric']} {res['value']:.4f} on {res['examples']} examples ({res['how']})", as_json=json_out or None)


@app.command()
def plan(
    params: str = typer.Option(..., "--params", help="Model parameters, e.g. 65e9 or 7B."),
    method: str = typer.Option("lora", "--method", help="full|lora|qlora"),
    r: int = typer.Option(16, "--r"),
    seq_len: int = typer.Option(512, "--seq-len"),
    batch: int = typer.Option(1, "--batch"),
    gpu: str = typer.Option("all", "--gpu", help="A GPU profile id, or all."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Memory breakdown of fine-tuning against the GPU profiles; what would make it fit."""
    from gpuforge.plugins.finetune.plan import plan_command

    res, text = plan_command(params, method, r, seq_len, batch, gpu)
    emit(res, text, as_json=json_out or None)
