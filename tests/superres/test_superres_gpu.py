"""On a real NVIDIA GPU (make gpu-check): the CUDA path (torch CUDA tensors through the
numba-cuda kernels) gives the CPU path's pixels, tiled and untiled."""
from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_cuda_upscale_matches_cpu():
    import torch

    from gpuforge.plugins.superres.espcn import ESPCN
    from gpuforge.plugins.superres.pipeline import Upscaler

    torch.manual_seed(0)
    m = ESPCN(3)
    with torch.no_grad():
        m.conv3.weight.normal_(0, 0.05)
    rgb = np.random.default_rng(0).integers(0, 256, (61, 77, 3), dtype=np.uint8)
    cpu = Upscaler(ESPCN(3))
    cpu.model.load_state_dict(m.state_dict())
    gpu = Upscaler(m, device="cuda", tile=24, tile_pad=4)
    a, b = cpu(rgb).astype(int), gpu(rgb).astype(int)
    assert a.shape == b.shape and np.abs(a - b).max() <= 2  # cuDNN vs oneDNN rounding


@pytest.mark.parametrize("name", ["superres.shuffle_ycbcr_rgb", "superres.bicubic_resize",
                                  "superres.tile_split", "superres.tile_stitch"])
def test_numba_cuda_conforms_on_gpu(name):
    from gpuforge.core.conformance import check_kernel
    from gpuforge.core.kernels import get_spec

    results = check_kernel(get_spec(name), ["numba-cuda"])
    assert not [r for r in results if r.status == "fail"]
