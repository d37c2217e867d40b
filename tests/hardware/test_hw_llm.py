"""Yao Fu's long-context analysis: `hardware/llm.py` and `gpuforge hw llm`."""
from __future__ import annotations

import math

import pytest

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.hardware.llm import LlmShape, analyze
from gpuforge.hardware.planner import usable_memory_bytes
from gpuforge.hardware.profiles import get_profile

MIB, GIB = 2**20, 2**30
YI_34B = dict(params=34.4e9, layers=60, kv_heads=8, head_dim=128)


def test_yi_34b_kv_cache_matches_the_worked_example():
    shape = LlmShape(**YI_34B, context=100_000)
    assert shape.kv_bytes_per_token == 2 * 60 * 8 * 128 * 2 == 245_760
    assert shape.kv_bytes_per_token / MIB == pytest.approx(0.23, rel=0.02)      # "about 0.23 MiB per token"
    assert shape.kv_bytes_per_user / GIB == pytest.approx(22.8, rel=0.01)       # "about 22.8 GiB at 100K"


def test_kv_bits_scale_the_cache():
    full = LlmShape(**YI_34B, context=1000)
    assert LlmShape(**YI_34B, context=1000, kv_bits=4).kv_bytes_per_token == full.kv_bytes_per_token / 4
    assert LlmShape(**YI_34B, context=1000, weight_bits=4).weight_bytes == full.weight_bytes / 4


def test_concurrency_prefill_and_decode_on_h200():
    h200 = get_profile("h200")
    shape = LlmShape(**YI_34B, context=100_000)
    r = analyze(shape, h200)
    free = usable_memory_bytes(h200) - shape.weight_bytes
    assert r.max_users == math.floor(free / shape.kv_bytes_per_user) >= 1
    assert r.prefill_bound == "compute"
    assert r.prefill_s == pytest.approx(2 * shape.params * 100_000 / h200.peak_flops("bf16"))
    assert r.decode_bound == "memory"
    assert r.decode_s_per_token == pytest.approx((shape.weight_bytes + shape.kv_bytes_per_user) / h200.bandwidth_bytes_per_s)


def test_weights_that_do_not_fit_give_zero_users():
    r = analyze(LlmShape(**YI_34B, context=100_000), get_profile("l4"))
    assert not r.fits and r.max_users == 0 and "weights" in r.note


@pytest.mark.parametrize("kwargs,err", [
    (dict(context=-1), BadInputError), (dict(context=0), BadInputError), (dict(context=10, batch=0), BadInputError),
    (dict(context=1.5), BadInputError), (dict(context=10, kv_bits=5), UsageError),
    (dict(context=10, weight_bits=2), UsageError),
])
def test_bad_shapes(kwargs, err):
    with pytest.raises(err):
        LlmShape(**YI_34B, **kwargs)


def test_cli_llm_json(run_cli):
    r = run_cli("hw", "llm", "--params", "34.4e9", "--layers", "60", "--kv-heads", "8", "--head-dim", "128",
                "--context", "100000", "--gpu", "h200,h100-sxm", "--json")
    assert r.code == 0, r
    data = r.json()
    assert data["kv_bytes_per_token"] == 245_760
    assert data["kv_gib_per_user"] == pytest.approx(22.89, abs=0.01)
    by = {g["gpu"]: g for g in data["gpus"]}
    assert by["h200"]["fits"] and not by["h100-sxm"]["fits"]


@pytest.mark.parametrize("args,code", [
    (["--context", "-5"], 3), (["--layers", "0"], 3), (["--kv-bits", "5"], 2), (["--gpu", "nope"], 3),
    (["--params", "-7e9"], 3),
])
def test_cli_llm_bad_inputs(run_cli, args, code):
    base = {"--params": "7e9", "--layers": "32", "--kv-heads": "8", "--head-dim": "128", "--context": "4096"}
    extra = dict(zip(args[::2], args[1::2]))
    argv = [x for k, v in {**base, **extra}.items() for x in (k, v)]
    r = run_cli("hw", "llm", *argv)
    assert r.code == code, r
    assert len([ln for ln in r.stderr.splitlines() if ln.startswith("error:")]) == 1, r
