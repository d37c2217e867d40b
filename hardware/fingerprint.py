"""A numerics fingerprint of this hardware + software stack.

The idea of "Hardware and Software Platform Inference" (Zhang et al., 2024): the exact
bits of floating-point results depend on the GPU model, the BLAS/cuBLAS kernels chosen,
the torch version and the thread count, so hashing the bits of a fixed computation
tells stacks apart. Benchmark results stored with the fingerprint can then be compared
only between runs that computed the same bits.

The suite (``SUITE_VERSION`` 1), on inputs drawn from ``torch.Generator`` seeded with
``SEED`` on the CPU in float32 (then cast and moved to the device):

- ``mm_fp32``, ``mm_fp16``, ``mm_bf16``: ``A @ B`` with A 67x129, B 129x93 in that dtype;
- ``bmm_fp32``: a batched product 8 x (33x65) @ (65x17);
- ``sum_fp32``, ``sum_fp16``, ``sum_bf16``: the sum of 100,003 values;
- ``mean_rows_fp32``: the mean of each row of a 257x1021 matrix;
- ``var_fp32``: the variance of the 100,003 values;
- ``softmax_fp32``: softmax over the last axis of a 64x513 matrix;
- ``cumsum_fp32``: the cumulative sum of 4,099 values.

Each result's raw bytes (as stored, little-endian) are hashed with SHA-256; the
fingerprint is the SHA-256 of the names and per-part hashes in order.
"""
from __future__ import annotations

import hashlib

SUITE_VERSION = 1
SEED = 20240501


def _bytes(t) -> bytes:
    import torch

    t = t.detach().contiguous().cpu()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def suite(device: str = "cpu") -> dict[str, bytes]:
    """name -> raw bytes of each result of the suite, computed on ``device``."""
    import torch

    g = torch.Generator().manual_seed(SEED)

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float32)

    a, b = rand(67, 129), rand(129, 93)
    ba, bb = rand(8, 33, 65), rand(8, 65, 17)
    v = rand(100_003)
    m = rand(257, 1021)
    s = rand(64, 513)
    c = rand(4099)
    out: dict[str, bytes] = {}
    with torch.no_grad():
        dev = torch.device(device)
        for name, dt in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
            out[f"mm_{name}"] = _bytes(a.to(dev, dt) @ b.to(dev, dt))
        out["bmm_fp32"] = _bytes(torch.bmm(ba.to(dev), bb.to(dev)))
        for name, dt in (("fp32", torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16)):
            out[f"sum_{name}"] = _bytes(v.to(dev, dt).sum())
        out["mean_rows_fp32"] = _bytes(m.to(dev).mean(dim=1))
        out["var_fp32"] = _bytes(v.to(dev).var())
        out["softmax_fp32"] = _bytes(torch.softmax(s.to(dev), dim=-1))
        out["cumsum_fp32"] = _bytes(torch.cumsum(c.to(dev), dim=0))
    return out


def fingerprint(device: str = "cpu") -> dict:
    """The fingerprint of ``device`` ('cpu' or 'cuda[:N]') with its per-part hashes."""
    import torch

    parts = {name: hashlib.sha256(data).hexdigest() for name, data in suite(device).items()}
    total = hashlib.sha256()
    for name, h in parts.items():
        total.update(f"{name}:{h}\n".encode())
    if device.startswith("cuda"):
        where = torch.cuda.get_device_name(torch.device(device))
    else:
        from gpuforge.hardware.cpu import cpu_model

        where = cpu_model()
    return {
        "sha256": total.hexdigest(),
        "short": total.hexdigest()[:16],
        "suite_version": SUITE_VERSION,
        "seed": SEED,
        "device": device,
        "device_name": where,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "parts": parts,
    }
