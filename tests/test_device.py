"""--device resolution: auto picks what torch sees; explicit CUDA without one is exit 4."""
from __future__ import annotations

import pytest

from gpuforge.core.device import seed_everything, torch_device
from gpuforge.core.errors import UnsupportedError


def test_auto_and_cpu():
    import torch

    assert torch_device("cpu").type == "cpu"
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_cuda_without_gpu_is_unsupported():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UnsupportedError, match="--device cpu") as err:
        torch_device("cuda:0")
    assert err.value.exit_code == 4


def test_seed_everything_makes_draws_repeat():
    import numpy as np
    import torch

    seed_everything(7)
    a = (np.random.rand(3), torch.rand(3))
    seed_everything(7)
    b = (np.random.rand(3), torch.rand(3))
    assert (a[0] == b[0]).all() and torch.equal(a[1], b[1])
