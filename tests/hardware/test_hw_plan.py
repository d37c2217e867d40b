"""`gpuforge plan PLUGIN VERB ...` and the planner behind it, with a fake estimate
registered in place of the real registry, plus the finetune expectations of issue 8
through the real registry when the finetune plugin provides its estimate."""
from __future__ import annotations

import dataclasses
import json
import textwrap

import pytest

from gpuforge.cli.main import main
from gpuforge.core.specs import EstimateSpec
from gpuforge.hardware import plan_cli
from gpuforge.hardware.estimates import Estimate
from gpuforge.hardware.planner import plan_estimate, reserve_bytes, usable_memory_bytes
from gpuforge.hardware.pricing import load_pricing
from gpuforge.hardware.profiles import get_profile, load_profiles

GIB = 2**30

FAKE = textwrap.dedent('''
    import argparse
    from gpuforge.core.errors import BadInputError
    from gpuforge.hardware.estimates import Estimate

    def estimate(args):
        """A finetune-like estimate: QLoRA ~ 0.63 B/param (4-bit base + constants + adapters +
        paged optimizer, about 41 GB for 65B as in the QLoRA paper), full fine-tuning 16 B/param
        (bf16 weights and grads, fp32 Adam moments and master weights)."""
        p = argparse.ArgumentParser(prog="fake job")
        p.add_argument("--params", type=float, required=True)
        p.add_argument("--qlora", action="store_true")
        p.add_argument("--method", default="lora")
        p.add_argument("--tokens", type=float, default=1e6)
        a = p.parse_args(args)
        if a.params <= 0:
            raise BadInputError(f"--params must be positive, got {a.params}")
        per = 0.63 if a.qlora else (16.0 if a.method == "full" else 2.2)
        mem = a.params * per
        return Estimate(what=f"fake fine-tune of {a.params:g} params", memory_bytes=mem,
                        flops=6 * a.params * a.tokens, bytes_moved=mem * 10, dtype="bf16",
                        breakdown={"weights": mem * 0.8, "other": mem * 0.2},
                        notes=["use --qlora to fit a 48 GB GPU"] if not a.qlora else [])

    def not_an_estimate(args):
        return {"memory_bytes": 1}
''')


@pytest.fixture
def fake_registry(tmp_path, monkeypatch):
    (tmp_path / "fake_estimates_hw.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    estimates = {
        ("fake", "job"): ("fakeplugin", EstimateSpec("fake", "job", "fake_estimates_hw:estimate")),
        ("fake", "broken"): ("fakeplugin", EstimateSpec("fake", "broken", "fake_estimates_hw:not_an_estimate")),
        ("fake", "missing"): ("fakeplugin", EstimateSpec("fake", "missing", "no_such_module_hw:estimate")),
    }
    monkeypatch.setattr(plan_cli, "registered_estimates", lambda: dict(estimates))
    return estimates


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_reserve_is_five_percent_at_least_half_a_gib():
    assert usable_memory_bytes(get_profile("h100-sxm")) == 76 * GIB
    assert usable_memory_bytes(get_profile("rtx-a6000")) == pytest.approx(48 * GIB * 0.95, abs=1)
    assert reserve_bytes(get_profile("jetson-agx-orin")) == int(0.05 * 64 * GIB)
    for p in load_profiles().values():
        assert 0 < reserve_bytes(p) <= 0.1 * p.memory_bytes
    small = dataclasses.replace(get_profile("t4"), memory_gib=4)
    assert reserve_bytes(small) == GIB // 2  # 5% would be 0.2 GiB


def test_planner_picks_the_cheapest_gpu_that_fits():
    profiles = list(load_profiles().values())
    pricing = load_pricing()
    est = Estimate("x", memory_bytes=30 * GIB, flops=1e15, bytes_moved=1e12)
    plan = plan_estimate(est, profiles, pricing)
    fits = [g for g in plan.gpus if g.fits]
    assert fits and all(g.usable_gib >= 30 for g in fits)
    assert all(not g.fits for g in plan.gpus if g.usable_gib < 30)
    # Recommended: the cheapest that can be rented (owned, amortized cards are named after it).
    cheapest = min((g for g in fits if not g.provider.startswith("owned")), key=lambda g: g.cost_usd)
    assert plan.recommended == cheapest.gpu
    owned = [g for g in fits if g.provider.startswith("owned") and g.cost_usd < cheapest.cost_usd]
    if owned:
        assert "cheaper if you own one" in plan.recommendation
    for g in plan.gpus:
        assert g.cost_usd == pytest.approx(g.usd_per_hour * g.time_s / 3600)


def test_planner_without_any_fit_says_so():
    plan = plan_estimate(Estimate("huge", memory_bytes=1000 * GIB), list(load_profiles().values()), load_pricing())
    assert plan.recommended is None
    assert plan.recommendation.startswith("no single GPU fits")
    assert "8 x h200" in plan.recommendation  # 1000 / 134 usable GiB -> 8


def test_plan_cli_fake_qlora_fits_48gb_and_full_fits_nothing(capsys, fake_registry):
    code, out, _ = run(capsys, "plan", "fake", "job", "--params", "65e9", "--qlora", "--gpu", "all", "--json")
    assert code == 0
    data = json.loads(out)
    fits = {g["gpu"] for g in data["gpus"] if g["fits"]}
    assert {"rtx-a6000", "l40s"} <= fits  # the 48 GB cards
    assert data["recommended"] in fits
    assert data["args"] == ["--params", "65e9", "--qlora"]
    code, out, _ = run(capsys, "plan", "fake", "job", "--params", "65e9", "--method", "full", "--gpu", "all", "--json")
    assert code == 0
    data = json.loads(out)
    assert not any(g["fits"] for g in data["gpus"]) and data["recommended"] is None
    assert "no single GPU fits" in data["recommendation"]
    assert data["notes"] == ["use --qlora to fit a 48 GB GPU"]


def test_plan_cli_human_output(capsys, fake_registry):
    code, out, _ = run(capsys, "plan", "fake", "job", "--params", "7e9", "--gpu", "l4,a100-80gb")
    assert code == 0
    assert "recommendation:" in out and "a100-80gb" in out and "usable memory" in out


@pytest.mark.parametrize("args,code,needle", [
    (["plan", "fake", "nope"], 2, "registered: fake broken, fake job, fake missing"),
    (["plan", "nope", "job"], 2, "no estimate for `nope job`"),
    (["plan", "fake", "job", "--params", "7e9", "--gpu", "h1000"], 3, "unknown GPU"),
    (["plan", "fake", "job", "--params=-7e9"], 3, "--params must be positive"),
    (["plan", "fake", "job", "--params", "7e9", "--bogus"], 2, "`plan fake job`: unrecognized arguments: --bogus"),
    (["plan", "fake", "job"], 2, "`plan fake job`: the following arguments are required: --params"),
    (["plan", "fake", "missing"], 1, "does not load"),
])
def test_plan_cli_bad_inputs(capsys, fake_registry, args, code, needle):
    rc, out, err = run(capsys, *args)
    assert rc == code, err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], err
    assert len(err.strip().splitlines()) == 1, err   # argparse's usage lines are not repeated
    assert out == ""


def test_plan_cli_rejects_a_malformed_estimate(capsys, fake_registry):
    rc, out, err = run(capsys, "plan", "fake", "broken")
    assert rc == 1 and "expected gpuforge.hardware.estimates.Estimate" in err


def test_unknown_estimate_lists_the_real_registry(run_cli):
    r = run_cli("plan", "nosuchplugin", "verb")
    assert r.code == 2, r
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(line) == 1 and "no estimate for `nosuchplugin verb`" in line[0]


def _real_finetune_estimate():
    from gpuforge.core.lazy import resolve
    from gpuforge.core.plugins import get_registry

    entry = get_registry().estimates.get(("finetune", "lora"))
    if entry is None:
        pytest.skip("the finetune plugin registers no ('finetune', 'lora') estimate yet (issue 8 contract: "
                    "hardware/README.md, 'Estimates for gpuforge plan')")
    try:
        resolve(entry[1].run)
    except (ImportError, AttributeError) as exc:
        pytest.skip(f"finetune registers {entry[1].run} but it does not load yet: {exc}")


def test_real_finetune_65b_qlora_fits_a_48gb_gpu(run_cli):
    _real_finetune_estimate()
    r = run_cli("plan", "finetune", "lora", "--params", "65e9", "--qlora", "--gpu", "all", "--json")
    assert r.code == 0, r
    data = r.json()
    fits48 = [g["gpu"] for g in data["gpus"] if g["fits"] and 40 <= g["memory_gib"] <= 50]
    assert fits48, f"no 48 GB GPU fits: needs {data['gpus'][0]['needs_gib']} GiB"


def test_real_finetune_65b_full_fits_no_single_gpu(run_cli):
    _real_finetune_estimate()
    r = run_cli("plan", "finetune", "lora", "--params", "65e9", "--method", "full", "--gpu", "all", "--json")
    assert r.code == 0, r
    data = r.json()
    assert not any(g["fits"] for g in data["gpus"])
    assert data["recommended"] is None and "no single GPU fits" in data["recommendation"]


def test_measured_shares_scale_the_time():
    h100 = get_profile("h100-sxm")
    est = Estimate("x", memory_bytes=GIB, flops=1e15, bytes_moved=1e9)
    base = plan_estimate(est, [h100]).gpus[0]
    slow = plan_estimate(est, [h100], efficiencies={"h100-sxm": {"compute_efficiency": 0.5}}).gpus[0]
    assert slow.time_s == pytest.approx(2 * base.time_s) and "hw bench" in slow.note
