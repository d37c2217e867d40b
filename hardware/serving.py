"""Cost-aware GPU mix for LLM serving under a latency SLO (Mélange).

Griggs, Li, Stoica et al., "Mélange: Cost Efficient Large Language Model Serving by
Exploiting GPU Heterogeneity" (arXiv:2404.14527, 2024). The workload is a set of
request-size buckets (input and output tokens) with rate shares; each GPU type serves
each bucket at some throughput while meeting the SLO; the cheapest mix of GPUs is an
integer program (a bin-packing variant, Mélange section 5):

    minimise    sum_g price_g * n_g
    subject to  sum_g z[b,g] = S                                 for every bucket b
                sum_b z[b,g] * (rate_b / S) / T[b,g] <= n_g       for every GPU type g
                z[b,g] in {0..S},  n_g in {0, 1, 2, ...},  z[b,g] = 0 where T[b,g] = 0

``S`` is the number of slices each bucket's load is cut into (Mélange's "slice
factor"); ``T[b,g]`` requests/s one GPU of type g sustains on bucket b within the SLO.
Solved with ``scipy.optimize.milp`` (HiGHS).

Throughput ``T[b,g]``, in order of preference: a measured value from the workload's
``[throughput]`` table; otherwise a roofline model of continuous batching (below),
at the datasheet peaks scaled by ``compute_efficiency`` / ``bandwidth_efficiency``
(from the workload, else from a ``gpuforge hw bench`` result cached for that GPU, else 1).

Roofline model of one bucket (input I, output O tokens) at batch b on one GPU:
prefill of one request ``t_pre = max(2 P I / peak, kv I / bw)`` (chunked prefill rides
on the decode steps, which read the weights anyway, as in Sarathi-Serve); one decode step
``t_step(b) = max(2 P b / peak, (W + b kv (I + O/2)) / bw)`` (weights read once per
step, each user's KV cache at its average length); the SLO is on the mean time per
output token, ``TPOT(b) = t_step(b) + b t_pre / O`` (each request's prefill stalls the
batch once); memory ``W + b kv (I + O) <= usable``; throughput at the largest b meeting
both (at most ``MAX_BATCH``) is ``b / (O t_step(b) + b t_pre)`` requests/s.
"""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.hardware.llm import LlmShape
from gpuforge.hardware.planner import usable_memory_bytes
from gpuforge.hardware.profiles import GpuProfile
from gpuforge.hardware.roofline import peak_rate

TOL = 1e-6
"""Load within TOL of a whole number of GPUs counts as that number (solver and search agree)."""
MAX_BATCH = 1024


@dataclass
class Bucket:
    input_tokens: int
    output_tokens: int
    share: float


@dataclass
class ServingProblem:
    """Everything the integer program needs; build it with :func:`load_workload` or by hand."""

    gpus: list[str]
    prices: list[float]
    """USD per GPU-hour, one per GPU type."""
    rates: list[float]
    """Requests/s of each bucket (share x total rate)."""
    throughput: np.ndarray
    """[bucket, gpu] requests/s one GPU sustains within the SLO; 0 = cannot meet it."""
    slices: int = 4
    buckets: list[Bucket] = field(default_factory=list)
    tpot_s: np.ndarray | None = None
    """[bucket, gpu] TPOT at the chosen batch (or the best reachable when T = 0)."""

    def load(self, b: int, g: int) -> float:
        """GPUs of type g that one slice of bucket b keeps busy."""
        return self.rates[b] / self.slices / self.throughput[b, g]


@dataclass
class Solution:
    counts: dict[str, int]
    cost_per_hour: float
    assignment: list[dict[str, int]]
    """Per bucket: GPU type -> slices of its load."""
    seconds: float = 0.0
    status: str = "optimal"


def _count(load: float) -> int:
    return max(0, math.ceil(load - TOL))


def counts_for(problem: ServingProblem, z: np.ndarray) -> tuple[list[int], float]:
    """GPUs per type and cost per hour for an assignment ``z[b,g]`` of slices."""
    B, G = problem.throughput.shape
    counts = []
    for g in range(G):
        load = sum(z[b, g] * problem.load(b, g) for b in range(B) if z[b, g])
        counts.append(_count(load))
    return counts, float(sum(c * p for c, p in zip(counts, problem.prices)))


def _check_feasible(problem: ServingProblem) -> None:
    for b in range(problem.throughput.shape[0]):
        if not (problem.throughput[b] > 0).any():
            bk = problem.buckets[b] if b < len(problem.buckets) else None
            what = f"bucket {b + 1}" + (f" (input {bk.input_tokens}, output {bk.output_tokens} tokens)" if bk else "")
            best = ""
            if problem.tpot_s is not None and np.isfinite(problem.tpot_s[b]).any():
                g = int(np.nanargmin(np.where(np.isfinite(problem.tpot_s[b]), problem.tpot_s[b], np.inf)))
                best = f"; the best is {problem.tpot_s[b, g] * 1e3:.3g} ms per output token on {problem.gpus[g]}"
            raise BadInputError(f"infeasible SLO: {what} cannot be served within the SLO on any of "
                                f"{', '.join(problem.gpus)}{best}; raise slo_ms or add faster/larger GPUs")


def solve(problem: ServingProblem, time_limit: float = 60.0) -> Solution:
    """The cheapest mix (scipy.optimize.milp / HiGHS)."""
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    _check_feasible(problem)
    t0 = time.perf_counter()
    T = problem.throughput
    B, G = T.shape
    S = problem.slices
    pairs = [(b, g) for b in range(B) for g in range(G) if T[b, g] > 0]
    nz, nv = len(pairs), len(pairs) + G
    c = np.zeros(nv)
    c[nz:] = problem.prices
    A = lil_matrix((B + G, nv))
    lo, hi = np.zeros(B + G), np.zeros(B + G)
    for k, (b, g) in enumerate(pairs):
        A[b, k] = 1.0
        A[B + g, k] = problem.load(b, g)
    lo[:B] = hi[:B] = S
    for g in range(G):
        A[B + g, nz + g] = -1.0
        lo[B + g], hi[B + g] = -np.inf, TOL
    ub = np.concatenate([np.full(nz, S), np.full(G, np.inf)])
    res = milp(c, constraints=LinearConstraint(A.tocsr(), lo, hi), integrality=np.ones(nv),
               bounds=Bounds(np.zeros(nv), ub),
               options={"time_limit": time_limit, "mip_rel_gap": 1e-9, "disp": False})
    if res.x is None:
        raise BadInputError(f"the serving program has no solution ({res.message}); check the workload")
    z = np.zeros((B, G), dtype=int)
    for k, (b, g) in enumerate(pairs):
        z[b, g] = int(round(res.x[k]))
    counts, cost = counts_for(problem, z)
    status = "optimal" if res.status == 0 else f"stopped: {res.message}"
    return _solution(problem, z, counts, cost, time.perf_counter() - t0, status)


def _solution(problem, z, counts, cost, seconds, status="optimal") -> Solution:
    assignment = [{problem.gpus[g]: int(z[b, g]) for g in range(len(problem.gpus)) if z[b, g]}
                  for b in range(z.shape[0])]
    return Solution(counts={problem.gpus[g]: c for g, c in enumerate(counts) if c}, cost_per_hour=cost,
                    assignment=assignment, seconds=seconds, status=status)


def solve_exhaustive(problem: ServingProblem) -> Solution:
    """Try every way to split every bucket's slices among the GPU types (small instances:
    the test of :func:`solve`)."""
    _check_feasible(problem)
    t0 = time.perf_counter()
    T = problem.throughput
    B, G = T.shape
    S = problem.slices
    options = []
    for b in range(B):
        ok = [g for g in range(G) if T[b, g] > 0]
        splits = []
        for combo in itertools.combinations_with_replacement(ok, S):
            row = np.zeros(G, dtype=int)
            for g in combo:
                row[g] += 1
            splits.append(row)
        options.append(splits)
    best = None
    for rows in itertools.product(*options):
        z = np.array(rows)
        counts, cost = counts_for(problem, z)
        if best is None or cost < best[2] - 1e-12:
            best = (z, counts, cost)
    z, counts, cost = best
    return _solution(problem, z, counts, cost, time.perf_counter() - t0)


def single_type_costs(problem: ServingProblem) -> dict[str, float | None]:
    """Cost per hour of serving everything on one GPU type (None: it misses the SLO on some bucket)."""
    out: dict[str, float | None] = {}
    B, G = problem.throughput.shape
    for g in range(G):
        if (problem.throughput[:, g] > 0).all():
            load = sum(problem.rates[b] / problem.throughput[b, g] for b in range(B))
            out[problem.gpus[g]] = _count(load) * problem.prices[g]
        else:
            out[problem.gpus[g]] = None
    return out


# --------------------------------------------------------------------------- model

def bucket_throughput(shape: LlmShape, profile: GpuProfile, input_tokens: int, output_tokens: int, slo_s: float,
                      compute_efficiency: float = 1.0, bandwidth_efficiency: float = 1.0) -> tuple[float, int, float]:
    """(requests/s, batch, TPOT seconds) of one GPU on one bucket within ``slo_s``; requests/s
    is 0 when no batch meets the SLO and the memory (TPOT is then the best reachable, or inf)."""
    peak, _, _ = peak_rate(profile, shape.dtype)
    peak *= compute_efficiency
    bw = profile.bandwidth_bytes_per_s * bandwidth_efficiency
    P, W, kv = shape.params, shape.weight_bytes, shape.kv_bytes_per_token
    I, O = input_tokens, output_tokens
    free = usable_memory_bytes(profile) - W
    per_user = kv * (I + O)
    bmax = int(min(MAX_BATCH, free // per_user)) if free > 0 else 0
    if bmax < 1:
        return 0.0, 0, math.inf
    t_pre = max(2 * P * I / peak, kv * I / bw)  # prefill chunks ride on decode steps: weights already read
    b = np.arange(1, bmax + 1, dtype=np.float64)
    t_step = np.maximum(2 * P * b / peak, (W + b * kv * (I + O / 2)) / bw)
    tpot = t_step + b * t_pre / O
    ok = np.nonzero(tpot <= slo_s)[0]
    if ok.size == 0:
        return 0.0, 0, float(tpot[0])
    k = int(ok[-1])
    rps = float(b[k] / (O * t_step[k] + b[k] * t_pre))
    return rps, int(b[k]), float(tpot[k])


def _num(data: dict, key: str, where: str, *, positive: bool = True, integer: bool = False, default=None):
    v = data.get(key, default)
    if v is None:
        raise BadInputError(f"{where}: `{key}` is missing")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise BadInputError(f"{where}: `{key}` must be a number, got {v!r}")
    if (positive and v <= 0) or v < 0:
        raise BadInputError(f"{where}: `{key}` must be {'positive' if positive else 'non-negative'}, got {v!r}")
    if integer and int(v) != v:
        raise BadInputError(f"{where}: `{key}` must be a whole number, got {v!r}")
    return int(v) if integer else float(v)


def load_workload(path: str | Path, slo_ms: float | None = None, profiles: dict[str, GpuProfile] | None = None,
                  pricing: dict | None = None, measured: dict | None = None) -> tuple[ServingProblem, dict]:
    """Read a workload TOML (see hardware/README.md) into a :class:`ServingProblem`.

    ``measured``: GPU id -> {"compute_efficiency", "bandwidth_efficiency"} from ``hw bench``.
    Returns the problem and a description (model, SLO, where each throughput came from).
    """
    from gpuforge.core.tomlread import read_toml
    from gpuforge.hardware.pricing import load_pricing
    from gpuforge.hardware.profiles import get_profile
    from gpuforge.hardware.registry import all_profiles

    path = Path(path)
    where = str(path)
    data = read_toml(path, "workload file")
    profiles = all_profiles() if profiles is None else profiles
    pricing = load_pricing() if pricing is None else pricing
    measured = measured or {}
    known = {"name", "rate_rps", "slo_ms", "gpus", "slices", "model", "bucket", "throughput", "price",
             "compute_efficiency", "bandwidth_efficiency"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BadInputError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    rate = _num(data, "rate_rps", where)
    if slo_ms is None:
        slo_ms = _num(data, "slo_ms", where)
    elif isinstance(slo_ms, bool) or not math.isfinite(slo_ms) or slo_ms <= 0:
        raise BadInputError(f"--slo-ms must be a positive number of milliseconds, got {slo_ms!r}")
    slices = _num(data, "slices", where, integer=True, default=4)
    if slices > 64:
        raise BadInputError(f"{where}: `slices` = {slices} is too many; use 1..64")
    model = data.get("model")
    if not isinstance(model, dict):
        raise BadInputError(f"{where}: a [model] table is needed (params, layers, kv_heads, head_dim)")
    mw = f"{where} [model]"
    try:
        shape = LlmShape(params=_num(model, "params", mw), layers=_num(model, "layers", mw, integer=True),
                         kv_heads=_num(model, "kv_heads", mw, integer=True),
                         head_dim=_num(model, "head_dim", mw, integer=True), context=1,
                         weight_bits=int(model.get("weight_bits", 16)), kv_bits=int(model.get("kv_bits", 16)),
                         dtype=str(model.get("dtype", "bf16")).lower())
    except UsageError as exc:
        raise BadInputError(f"{mw}: {exc}") from None
    raw_buckets = data.get("bucket")
    if not isinstance(raw_buckets, list) or not raw_buckets:
        raise BadInputError(f"{where}: no [[bucket]] entries; add input_tokens, output_tokens and share for each")
    buckets = []
    for i, bk in enumerate(raw_buckets, 1):
        bw_ = f"{where} bucket {i}"
        if not isinstance(bk, dict):
            raise BadInputError(f"{bw_}: must be a table")
        buckets.append(Bucket(_num(bk, "input_tokens", bw_, integer=True), _num(bk, "output_tokens", bw_, integer=True),
                              _num(bk, "share", bw_, positive=False)))
    total = sum(b.share for b in buckets)
    if abs(total - 1.0) > 1e-6:
        raise BadInputError(f"{where}: bucket shares sum to {total:.6g}, they must sum to 1")
    gpu_ids = data.get("gpus")
    if gpu_ids is None:
        gpu_ids = sorted(g for g in profiles if g in pricing or g in data.get("price", {}))
    if not isinstance(gpu_ids, list) or not gpu_ids or not all(isinstance(g, str) for g in gpu_ids):
        raise BadInputError(f"{where}: `gpus` must be a non-empty list of GPU ids")
    chosen = [get_profile(g, profiles) for g in gpu_ids]  # unknown id -> UnknownGpuError (exit 3)
    if len({p.id for p in chosen}) != len(chosen):
        raise BadInputError(f"{where}: `gpus` names a GPU twice")
    price_over = data.get("price", {})
    prices = []
    for p in chosen:
        if p.id in price_over:
            prices.append(_num(price_over, p.id, f"{where} [price]"))
        elif p.id in pricing:
            prices.append(pricing[p.id].usd_per_hour)
        else:
            raise BadInputError(f"{where}: no price for {p.id}; add it under [price]")
    table = data.get("throughput", {})
    if not isinstance(table, dict):
        raise BadInputError(f"{where}: [throughput] must map GPU ids to lists of requests/s per bucket")
    for gid in table:
        if gid not in {p.id for p in chosen}:
            raise BadInputError(f"{where} [throughput]: {gid!r} is not one of the workload's gpus")
    slo_s = slo_ms / 1e3
    T = np.zeros((len(buckets), len(chosen)))
    tpot = np.full((len(buckets), len(chosen)), np.inf)
    sources = {}
    for g, p in enumerate(chosen):
        if p.id in table:
            vals = table[p.id]
            if not isinstance(vals, list) or len(vals) != len(buckets):
                raise BadInputError(f"{where} [throughput] {p.id}: give one requests/s value per bucket ({len(buckets)})")
            for b, v in enumerate(vals):
                T[b, g] = _num({"v": v}, "v", f"{where} [throughput] {p.id} bucket {b + 1}", positive=False)
            sources[p.id] = "measured ([throughput] in the workload)"
            continue
        eff = measured.get(p.id, {})
        ce = float(data.get("compute_efficiency", eff.get("compute_efficiency", 1.0)))
        be = float(data.get("bandwidth_efficiency", eff.get("bandwidth_efficiency", 1.0)))
        if not (0 < ce <= 1 and 0 < be <= 1):
            raise BadInputError(f"{where}: efficiencies must lie in (0, 1], got compute {ce}, bandwidth {be}")
        def origin(key: str) -> str:
            return "workload" if key in data else ("hw bench" if key in eff else "datasheet")

        sources[p.id] = (f"roofline: compute x{ce:.2f} ({origin('compute_efficiency')}), "
                         f"bandwidth x{be:.2f} ({origin('bandwidth_efficiency')})")
        for b, bk in enumerate(buckets):
            T[b, g], _batch, tpot[b, g] = bucket_throughput(shape, p, bk.input_tokens, bk.output_tokens, slo_s, ce, be)
    problem = ServingProblem(gpus=[p.id for p in chosen], prices=prices, rates=[rate * b.share for b in buckets],
                             throughput=T, slices=slices, buckets=buckets, tpot_s=tpot)
    info = {"name": data.get("name", path.stem), "rate_rps": rate, "slo_ms": slo_ms, "slices": slices,
            "model": {k: getattr(shape, k) for k in ("params", "layers", "kv_heads", "head_dim", "weight_bits",
                                                     "kv_bits", "dtype")},
            "throughput_source": sources}
    return problem, info


def plan_serving(problem: ServingProblem) -> dict:
    """Solve and compare with the best single GPU type."""
    sol = solve(problem)
    singles = single_type_costs(problem)
    valid = {g: c for g, c in singles.items() if c is not None}
    best_single = min(valid, key=lambda g: (valid[g], g)) if valid else None
    saving = None
    if best_single is not None and valid[best_single] > 0:
        saving = 1.0 - sol.cost_per_hour / valid[best_single]
    return {
        "mix": sol.counts, "cost_per_hour": sol.cost_per_hour, "status": sol.status,
        "solve_seconds": sol.seconds, "assignment": sol.assignment,
        "single_type_cost_per_hour": singles, "best_single": best_single,
        "best_single_cost_per_hour": valid.get(best_single) if best_single else None,
        "saving": saving,
        "throughput_rps": {g: [float(problem.throughput[b, i]) for b in range(problem.throughput.shape[0])]
                           for i, g in enumerate(problem.gpus)},
    }
