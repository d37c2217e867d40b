"""ESPCN model, pipeline and estimate: bicubic-initialised skip path, tiled == untiled,
built-in weights and their metadata, precision options, plan estimate."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gpuforge.plugins.superres.espcn import ESPCN, builtin_path, load_model, save_model
from gpuforge.plugins.superres.images import make_lr, rgb_to_ycbcr
from gpuforge.plugins.superres.pipeline import Upscaler


def _photo(h=45, w=58, seed=0):
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 4, yy * 5, ((xx // 4 + yy // 3) % 2) * 200], -1) + g.normal(0, 15, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_fresh_model_starts_as_pil_bicubic_in_the_interior():
    from PIL import Image

    y = rgb_to_ycbcr(_photo())[..., 0]
    m = ESPCN(3)
    torch.nn.init.zeros_(m.conv3.weight)
    out = m(torch.from_numpy(y)[None, None])[0, 0].detach().numpy()
    ref = np.asarray(Image.fromarray(y, mode="F").resize((y.shape[1] * 3, y.shape[0] * 3), Image.BICUBIC))
    np.testing.assert_allclose(out[6:-6, 6:-6], ref[6:-6, 6:-6], atol=1e-5)


@pytest.mark.parametrize("scale,tile,pad", [(3, 16, 4), (2, 9, 8), (4, 20, 5)])
def test_tiled_equals_untiled(scale, tile, pad):
    torch.manual_seed(scale)
    m = ESPCN(scale)
    with torch.no_grad():  # random, non-trivial weights
        m.conv3.weight.normal_(0, 0.05)
    rgb = _photo()
    a = Upscaler(m)(rgb)
    b = Upscaler(m, tile=tile, tile_pad=pad)(rgb)
    assert a.shape == b.shape == (45 * scale, 58 * scale, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # <= 1/255


def test_builtin_models_load_with_metadata():
    found = [s for s in (2, 3, 4) if builtin_path(s).exists()]
    assert 3 in found, "the x3 built-in model must ship"
    for s in found:
        m, meta = load_model(builtin_path(s))
        assert meta["scale"] == s and meta["channels"] == "y" and meta["skip"] == "bicubic"
        assert "superres train" in meta["command"] and "coffee" not in meta["train_images"]
        assert builtin_path(s).stat().st_size < 200_000


def test_save_load_roundtrip_and_bad_file(tmp_path):
    from gpuforge.core.errors import BadInputError

    m = ESPCN(2)
    save_model(m, tmp_path / "m.safetensors", {"command": "test"})
    m2, meta = load_model(tmp_path / "m.safetensors")
    x = torch.rand(1, 1, 9, 11)
    assert torch.equal(m(x), m2(x)) and meta["command"] == "test"
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(BadInputError):
        load_model(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_low_precision_close_to_fp32(precision):
    m = ESPCN(3)
    rgb = _photo()
    a = Upscaler(m)(rgb).astype(int)
    b = Upscaler(ESPCN(3), precision=precision)  # same init seed is not guaranteed: copy weights
    b.model.load_state_dict({k: v.to(b.dtype) for k, v in m.state_dict().items()})
    out = b(rgb).astype(int)
    assert np.abs(out - a).mean() < 2.0


def test_estimate_counts_espcn_flops():
    from gpuforge.plugins.superres.estimate import estimate, flops_per_lr_pixel

    est = estimate(["--size", "640x360", "--scale", "3"])
    assert est.flops == pytest.approx(flops_per_lr_pixel(3) * 640 * 360)
    assert flops_per_lr_pixel(3, skip=False) == 2 * (25 * 64 + 9 * 64 * 32 + 9 * 32 * 9)
    tiled = estimate(["--size", "4000x3000", "--scale", "3", "--tile", "256"])
    untiled = estimate(["--size", "4000x3000", "--scale", "3", "--tile", "0"])
    auto = estimate(["--size", "3840x2160", "--scale", "2"])  # large: tiled automatically
    assert tiled.breakdown["activations"] < untiled.breakdown["activations"] / 40
    assert tiled.flops > untiled.flops  # the overlap is computed twice
    assert "automatic" in auto.what
    assert auto.flops < 1.08 * flops_per_lr_pixel(2) * 3840 * 2160  # tiles fitted to the width: < 8% overlap


def test_make_lr_crops_to_multiple():
    hr, lr = make_lr(_photo(47, 50), 3)
    assert hr.shape[:2] == (45, 48) and lr.shape[:2] == (15, 16)


def test_bench_runs_quick_and_reports_ratios():
    from gpuforge.core.bench import BenchContext
    from gpuforge.plugins.superres.bench import shuffle_rows, tile_rows

    rows = shuffle_rows(BenchContext(quick=True), h=36, w=64) + tile_rows(BenchContext(quick=True))
    assert all(r["seconds"] > 0 for r in rows)
    assert any("ratio" in r for r in rows)
