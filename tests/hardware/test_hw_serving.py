"""Mélange serving planner: the integer program against exhaustive search, a large
instance, the saving against one GPU type, and `gpuforge hw plan-serving`."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from gpuforge.core.errors import BadInputError
from gpuforge.hardware.llm import LlmShape
from gpuforge.hardware.profiles import get_profile
from gpuforge.hardware.serving import (ServingProblem, bucket_throughput, counts_for, load_workload, plan_serving,
                                       single_type_costs, solve, solve_exhaustive)

EXAMPLE = Path(__file__).resolve().parents[2] / "hardware" / "examples" / "serving-chat.toml"


def random_problem(seed: int, buckets: int, gpus: int, slices: int, zero_share: float = 0.2) -> ServingProblem:
    rng = np.random.default_rng(seed)
    T = rng.uniform(0.5, 20.0, (buckets, gpus))
    T[rng.random((buckets, gpus)) < zero_share] = 0.0  # this GPU misses the SLO on this bucket
    for b in range(buckets):
        if not (T[b] > 0).any():
            T[b, rng.integers(gpus)] = rng.uniform(0.5, 20.0)
    return ServingProblem(gpus=[f"g{i}" for i in range(gpus)], prices=list(rng.uniform(0.3, 4.0, gpus)),
                          rates=list(rng.uniform(0.5, 15.0, buckets)), throughput=T, slices=slices)


@pytest.mark.parametrize("seed", range(8))
def test_milp_matches_exhaustive_search(seed):
    slices = 2 if seed % 2 else 3
    problem = random_problem(seed, buckets=3, gpus=3, slices=slices)
    milp_sol = solve(problem)
    brute = solve_exhaustive(problem)
    assert milp_sol.status == "optimal"
    assert milp_sol.cost_per_hour == pytest.approx(brute.cost_per_hour, rel=1e-9, abs=1e-9)
    # The MILP's assignment is complete and its GPU counts carry the load.
    z = np.array([[a.get(g, 0) for g in problem.gpus] for a in milp_sol.assignment])
    assert (z.sum(axis=1) == slices).all()
    assert not (z[problem.throughput == 0]).any()
    counts, cost = counts_for(problem, z)
    assert cost == pytest.approx(milp_sol.cost_per_hour)


def test_ten_gpu_types_fifty_buckets_solve_in_seconds():
    problem = random_problem(123, buckets=50, gpus=10, slices=4)
    problem.throughput[:, 0] = np.random.default_rng(7).uniform(0.5, 5.0, 50)  # one type serves every bucket
    t0 = time.perf_counter()
    result = plan_serving(problem)
    seconds = time.perf_counter() - t0
    assert seconds < 30, seconds  # 1-4 s on a loaded 2-core machine
    assert result["status"] == "optimal" and result["cost_per_hour"] > 0
    assert result["best_single"] == "g0"
    assert result["cost_per_hour"] <= result["best_single_cost_per_hour"] + 1e-9
    assert result["saving"] == pytest.approx(1 - result["cost_per_hour"] / result["best_single_cost_per_hour"])
    assert result["saving"] > 0


def test_mix_saves_against_the_best_single_type():
    # g0 is cheap and good at short requests only; g1 serves everything at a higher price.
    T = np.array([[10.0, 12.0], [0.0, 4.0]])
    problem = ServingProblem(gpus=["g0", "g1"], prices=[1.0, 4.0], rates=[30.0, 4.0], throughput=T, slices=4)
    result = plan_serving(problem)
    assert result["mix"] == {"g0": 3, "g1": 1}
    assert result["cost_per_hour"] == pytest.approx(7.0)
    assert result["best_single"] == "g1"
    assert result["best_single_cost_per_hour"] == pytest.approx(4.0 * 4)  # 30/12 + 4/4 = 3.5 -> 4 GPUs
    assert result["saving"] == pytest.approx(1 - 7.0 / 16.0)
    assert single_type_costs(problem)["g0"] is None
    assert solve_exhaustive(problem).cost_per_hour == pytest.approx(7.0)


def test_infeasible_bucket_is_one_clear_error():
    problem = ServingProblem(gpus=["g0"], prices=[1.0], rates=[1.0, 1.0], throughput=np.array([[1.0], [0.0]]))
    with pytest.raises(BadInputError, match="infeasible SLO: bucket 2"):
        solve(problem)


def test_roofline_throughput_grows_with_a_looser_slo_and_respects_memory():
    shape = LlmShape(params=6.7e9, layers=32, kv_heads=32, head_dim=128, context=1)
    h100 = get_profile("h100-sxm")
    tight = bucket_throughput(shape, h100, 1000, 250, 0.02)
    loose = bucket_throughput(shape, h100, 1000, 250, 0.2)
    assert 0 < tight[0] < loose[0] and tight[1] < loose[1]
    assert tight[2] <= 0.02 and loose[2] <= 0.2
    # A 34B bf16 model does not fit on an L4 at all.
    big = LlmShape(params=34e9, layers=60, kv_heads=8, head_dim=128, context=1)
    assert bucket_throughput(big, get_profile("l4"), 100, 100, 1.0)[0] == 0


def test_example_workload_loads_and_plans():
    problem, info = load_workload(EXAMPLE)
    assert problem.gpus == ["l4", "a10g", "a100-80gb", "h100-sxm"]
    assert sum(problem.rates) == pytest.approx(info["rate_rps"])
    result = plan_serving(problem)
    assert result["saving"] is not None and result["saving"] >= -1e-9


def test_measured_throughput_table_overrides_the_roofline(tmp_path):
    text = EXAMPLE.read_text().replace("# [throughput]\n# l4 = [3.1, 0.9, 0.2, 0.0]",
                                       "[throughput]\nl4 = [50.0, 10.0, 2.0, 0.5]")
    path = tmp_path / "w.toml"
    path.write_text(text)
    problem, info = load_workload(path)
    assert list(problem.throughput[:, 0]) == [50.0, 10.0, 2.0, 0.5]
    assert info["throughput_source"]["l4"].startswith("measured")
    result = plan_serving(problem)
    assert result["mix"].get("l4", 0) > 0  # cheap and (by measurement) fast: it carries load


def _bad(tmp_path, old, new):
    text = EXAMPLE.read_text()
    assert old in text
    path = tmp_path / "bad.toml"
    path.write_text(text.replace(old, new, 1))
    return str(path)


def test_cli_plan_serving_json(run_cli):
    r = run_cli("hw", "plan-serving", str(EXAMPLE), "--json")
    assert r.code == 0, r
    data = r.json()
    assert data["mix"] and data["cost_per_hour"] > 0 and "saving" in data and data["best_single"]
    r = run_cli("hw", "plan-serving", str(EXAMPLE))
    assert r.code == 0 and "cheapest mix:" in r.stdout and "saving" in r.stdout


@pytest.mark.parametrize("case", ["unknown-gpu", "negative-size", "shares", "missing", "malformed", "slo", "no-buckets"])
def test_cli_plan_serving_bad_inputs(run_cli, tmp_path, case):
    extra = []
    if case == "unknown-gpu":
        path = _bad(tmp_path, '"l4", "a10g"', '"l4", "b300"')
        needle = "unknown GPU 'b300'"
    elif case == "negative-size":
        path = _bad(tmp_path, "input_tokens = 100\n", "input_tokens = -100\n")
        needle = "input_tokens` must be positive"
    elif case == "shares":
        path = _bad(tmp_path, "share = 0.4", "share = 0.5")
        needle = "shares sum to 1.1"
    elif case == "missing":
        path, needle = str(tmp_path / "nope.toml"), "not found"
    elif case == "malformed":
        path = _bad(tmp_path, "rate_rps = 8.0", "rate_rps = = 8")
        needle = "malformed workload file"
    elif case == "slo":
        path, extra, needle = str(EXAMPLE), ["--slo-ms", "0.01"], "infeasible SLO"
    else:
        path = str(tmp_path / "empty.toml")
        Path(path).write_text('rate_rps = 1.0\nslo_ms = 100\n[model]\nparams = 1e9\nlayers = 2\nkv_heads = 2\nhead_dim = 64\n')
        needle = "no [[bucket]] entries"
    r = run_cli("hw", "plan-serving", path, *extra)
    assert r.code == 3, r
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], r
    assert r.stdout == ""


def test_hw_bench_shares_scale_the_roofline_throughput():
    problem, info = load_workload(EXAMPLE)
    slow, info2 = load_workload(EXAMPLE, measured={"h100-sxm": {"bandwidth_efficiency": 0.5, "compute_efficiency": 0.5}})
    g = problem.gpus.index("h100-sxm")
    assert (slow.throughput[:, g] < problem.throughput[:, g]).all()
    assert "hw bench" in info2["throughput_source"]["h100-sxm"] and "datasheet" in info["throughput_source"]["h100-sxm"]
    assert (slow.throughput[:, 0] == problem.throughput[:, 0]).all()  # other GPUs untouched
