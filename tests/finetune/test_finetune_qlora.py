"""QLoRA base through the quantize plugin's registered NF4 kernels."""
from __future__ import annotations

import pytest
import torch

from gpuforge.core.kernels import kernel_specs

pytestmark = pytest.mark.skipif(
    not {"quantize.nf4_encode", "quantize.nf4_decode"} <= set(kernel_specs()),
    reason="the quantize plugin's NF4 kernels are not registered")


def test_nf4_base_bits_and_outputs(tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    from gpuforge.plugins.finetune import lora as L
    from gpuforge.plugins.finetune.qlora import NF4Linear, dequantize_model, quantize_model

    model = AutoModel.from_pretrained(str(tiny_bert)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    enc = tok(["The movie was not good."], return_tensors="pt")
    with torch.no_grad():
        ref = model(**enc).last_hidden_state
    rep = quantize_model(model)
    assert rep["quantized_bits_per_param"] <= 4.2 and rep["base_bits_per_param"] <= 4.2, rep
    with torch.no_grad():
        q = model(**enc).last_hidden_state
    assert torch.nn.functional.cosine_similarity(q.flatten(), ref.flatten(), dim=0) > 0.95
    # LoRA on an NF4 base: identity at init, merge dequantizes
    targets = L.select_targets(model, "all-linear", exclude=("pooler",))
    assert isinstance(model.get_submodule(targets[0]), NF4Linear)
    L.inject(model, targets, r=4, alpha=8)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**enc).last_hidden_state, q)
        for layer in L.lora_layers(model).values():
            layer.lora_B.weight.normal_(0, 0.05)
        adapted = model(**enc).last_hidden_state
        L.merge(model)
        dequantize_model(model)
        assert not any(isinstance(m, NF4Linear) for m in model.modules())
        torch.testing.assert_close(model(**enc).last_hidden_state, adapted, rtol=1e-4, atol=1e-4)


def test_qlora_cli_run(run_cli, tiny_bert, small_data, tmp_path):
    out = tmp_path / "q"
    r = run_cli("finetune", "lora", str(tiny_bert), "--data", str(small_data["train"]), "--out", str(out), "--qlora",
                "--max-steps", "3", "--batch-size", "8", "--r", "4", "--max-len", "32", "--json")
    assert r.code == 0, r
    assert r.json()["qlora"]["base_bits_per_param"] <= 4.2
    e = run_cli("finetune", "eval", str(tiny_bert), "--adapter", str(out), "--data", str(small_data["test"]), "--json")
    assert e.code == 0, e


@pytest.mark.parametrize("fixture", ["tiny_bert", "tiny_llama"])
def test_qlora_base_quantized_while_loading_equals_quantizing_the_loaded_model(request, fixture):
    """--qlora reads each weight on its own and stores it in NF4 at once; the result is
    the model that quantizing the fully loaded float model gives, layer for layer."""
    from gpuforge.plugins.finetune.qlora import NF4Embedding, NF4Linear, load_nf4_base, quantize_model
    from gpuforge.plugins.finetune.tasks import load_base

    path = request.getfixturevalue(fixture)
    causal = fixture == "tiny_llama"
    streamed = load_nf4_base(path, causal)
    full, _ = load_base(path, "causal-lm" if causal else "classification")
    quantize_model(full)
    a, b = dict(streamed.named_modules()), dict(full.named_modules())
    nf4 = [n for n, m in b.items() if isinstance(m, (NF4Linear, NF4Embedding))]
    assert nf4 and all(isinstance(a[n], type(b[n])) for n in nf4)
    for n in nf4:
        for buf in ("packed", "absmax", "nested_absmax", "offset"):
            assert torch.equal(getattr(a[n], buf), getattr(b[n], buf)), (n, buf)
    sa, sb = streamed.state_dict(), full.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_qlora_load_runs_under_a_data_cap_the_float_model_would_exceed(tmp_path):
    """16 layers of a Llama-shaped model are 316 MB in float32; quantized while it loads,
    the base needs ~45 MB plus one float tensor at a time (the 62 MB embedding the largest;
    ~120 MB in all, measured). Under a cap of 200 MB of data segment beyond the warm-up the
    streamed NF4 load finishes and the float load of the same folder does not."""
    import os
    import subprocess

    from gpuforge.core.safepath import python_argv
    from gpuforge.plugins.quantize.synthetic import SHAPES, make_llama

    shape = SHAPES["small"].with_layers(16)
    cap_mb = 200
    assert shape.params * 4 > 1.5 * cap_mb * 2**20   # the float model cannot fit under the cap
    warm = make_llama(tmp_path / "warm", SHAPES["small"].with_layers(2))
    deep = make_llama(tmp_path / "deep", shape, shard_bytes=50_000_000)
    code = (
        "import resource, sys\n"
        "from gpuforge.plugins.finetune.qlora import load_nf4_base, storage_report\n"
        "from gpuforge.plugins.finetune.tasks import load_base\n"
        "load_nf4_base(sys.argv[1], True)\n"
        "vm = next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmData'))\n"
        f"resource.setrlimit(resource.RLIMIT_DATA, (vm + {cap_mb} * 2**20, resource.RLIM_INFINITY))\n"
        "if sys.argv[3] == 'nf4':\n"
        "    print(storage_report(load_nf4_base(sys.argv[2], True))['quantized_params'])\n"
        "else:\n"
        "    load_base(sys.argv[2], 'causal-lm')\n")

    def load(kind):
        return subprocess.run([*python_argv(), "-c", code, str(warm), str(deep), kind], capture_output=True,
                              text=True, env=dict(os.environ), timeout=900)

    r = load("nf4")
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.strip().splitlines()[-1]) > 0.9 * shape.params
    r = load("float")
    assert r.returncode != 0 and ("allocate" in r.stderr or "MemoryError" in r.stderr), r.stderr[-2000:]


def test_a_qlora_step_keeps_no_dense_weight_between_forward_and_backward():
    """A plain ``x @ W.T`` made autograd keep every NF4 layer's decoded float32 weight
    until the backward pass (the whole base in fp32 during a step). The layer decodes W
    again in backward: the gradients are those of the plain matmul, and autograd saves
    no weight-sized tensor."""
    from gpuforge.plugins.finetune.qlora import NF4Linear

    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 512)
    layer = NF4Linear.from_linear(lin)
    x = torch.randn(3, 7, 256, requires_grad=True)
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = layer(x)
    assert max(saved, default=0) < 256 * 512, saved     # the plain matmul saved W (131072 values)
    g = torch.randn_like(y)
    (y * g).sum().backward()

    x_ref = x.detach().clone().requires_grad_(True)
    w = layer.dense_weight(x.device)
    y_ref = x_ref.reshape(-1, 256) @ w.T + lin.bias.detach()
    torch.testing.assert_close(y, y_ref.reshape(3, 7, 512), rtol=0, atol=0)
    (y_ref.reshape(3, 7, 512) * g).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-6, atol=1e-6)
    assert layer.bias.grad is None and not layer.bias.requires_grad
