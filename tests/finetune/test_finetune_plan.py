"""`finetune plan` and the estimate for `gpuforge plan finetune lora` agree with published facts."""
from __future__ import annotations

from gpuforge.hardware.registry import all_profiles
from gpuforge.plugins.finetune.plan import estimate, parse_params


def _fits(est, gpu_id):
    return est.memory_bytes <= all_profiles()[gpu_id].memory_bytes


def test_qlora_65b_fits_48gb_and_full_fp16_does_not_fit_80gb():
    q = estimate(["--params", "65e9", "--qlora"])
    assert _fits(q, "rtx-a6000") and _fits(q, "l40s")  # 48 GB cards (QLoRA paper: 65B on one 48 GB GPU)
    assert q.breakdown["weights"] / 65e9 * 8 < 4.2
    full = estimate(["--params", "65e9", "--method", "full"])
    assert not any(_fits(full, g) for g in all_profiles())
    assert any("shard" in n or "QLoRA" in n or "LoRA" in n for n in full.notes)
    lora16 = estimate(["--params", "65e9", "--method", "lora"])
    assert not _fits(lora16, "a100-80gb")  # 16-bit base alone is 130 GB
    assert estimate(["--params", "7e9", "--qlora"]).memory_bytes < estimate(["--params", "7e9"]).memory_bytes


def test_parse_params_and_cli(run_cli):
    assert parse_params("7B") == 7e9 and parse_params("65e9") == 65e9
    r = run_cli("finetune", "plan", "--params", "65e9", "--method", "qlora", "--gpu", "all", "--json")
    assert r.code == 0, r
    rows = {row["gpu"]: row for row in r.json()["gpus"]}
    assert rows["rtx-a6000"]["fits"] and not rows["t4"]["fits"]
    r = run_cli("finetune", "plan", "--params", "65e9", "--method", "full", "--gpu", "a100-80gb", "--json")
    row = r.json()["gpus"][0]   # `finetune plan` is `plan finetune lora` (one planner, usable memory)
    assert not row["fits"] and row["min_gpus"] > 1 and r.json()["recommended"] is None
    bad = run_cli("finetune", "plan", "--params", "lots", "--gpu", "all")
    assert bad.code == 3 and "--params" in bad.stderr
