"""superres kernels: definitions checked against independent implementations (PIL's
resize, torch's pixel_shuffle) and numba-cpu against the reference."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from gpuforge.core.conformance import check_kernel  # noqa: E402
from gpuforge.core.kernels import get_spec  # noqa: E402
from gpuforge.plugins.superres import kernels as K  # noqa: E402

KERNELS = ["superres.shuffle_ycbcr_rgb", "superres.bicubic_resize", "superres.tile_split", "superres.tile_stitch"]


def _photo(h=61, w=83):
    g = np.random.default_rng(0)
    # a smooth gradient plus sharp edges and noise: overshoot and clamping get exercised
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, ((xx // 7 + yy // 5) % 2) * 255], -1)
    return np.clip(base + g.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


# Both axes shrink or both grow (every use in this plugin). When one axis shrinks and
# the other grows, Pillow may run the vertical pass first; its uint8 intermediate then
# differs from our horizontal-first float pass (README, "Bicubic definition").
@pytest.mark.parametrize("size", [(183, 249), (20, 27), (61, 83), (7, 5), (1, 1), (122, 166), (30, 41)])
@pytest.mark.parametrize("backend", ["reference", "numba-cpu"])
def test_bicubic_matches_pil_within_one_lsb(size, backend):
    rgb = _photo()
    pil = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BICUBIC)).astype(int)
    fn = K.bicubic_resize if backend == "reference" else K.bicubic_resize_cpu
    ours = np.floor(fn(rgb.astype(np.float32) / 255, size[0], size[1], clamp=True) * 255 + 0.5).astype(int)
    assert np.abs(ours - pil).max() <= 1


def test_bicubic_float_mode_matches_pil_exactly_in_float():
    # PIL's "F" mode resizes float32 without fixed-point or uint8 rounding.
    x = np.random.default_rng(1).uniform(-1, 2, (17, 23)).astype(np.float32)
    for oh, ow in [(51, 69), (5, 9), (17, 40)]:
        pil = np.asarray(Image.fromarray(x, mode="F").resize((ow, oh), Image.BICUBIC))
        ours = K.bicubic_resize(x[..., None], oh, ow)[..., 0]
        np.testing.assert_allclose(ours, pil, atol=2e-5)


def test_shuffle_equals_torch_pixel_shuffle_plus_conversion():
    torch = pytest.importorskip("torch")
    g = np.random.default_rng(2)
    r, h, w = 3, 11, 7
    feats = g.uniform(-0.3, 1.3, (r * r, h, w)).astype(np.float32)
    cbcr = g.uniform(0, 1, (h * r, w * r, 2)).astype(np.float32)
    y = torch.nn.functional.pixel_shuffle(torch.from_numpy(feats)[None], r)[0, 0].clamp(0, 1).numpy()
    # PIL's own YCbCr -> RGB on uint8 data agrees within rounding (it works on 8-bit planes)
    ycc = np.stack([y, cbcr[..., 0], cbcr[..., 1]], -1)
    ycc8 = np.floor(ycc * 255 + 0.5).astype(np.uint8)
    pil = np.asarray(Image.fromarray(ycc8, mode="YCbCr").convert("RGB")).astype(int)
    ours = K.shuffle_ycbcr_rgb(feats, cbcr).astype(int)
    # PIL converts 8-bit planes with fixed-point constants: the +-0.5 input rounding
    # grows by up to 1.772 (Cb -> B), so 3 LSB is the bound; most pixels agree closely
    assert np.abs(ours - pil).max() <= 3 and np.abs(ours - pil).mean() < 0.8
    assert np.array_equal(K.shuffle_ycbcr_rgb_cpu(feats, cbcr).astype(int), ours) or \
        np.abs(K.shuffle_ycbcr_rgb_cpu(feats, cbcr).astype(int) - ours).max() <= 1


def test_tiles_split_and_stitch_back_exactly():
    x = np.random.default_rng(3).standard_normal((2, 53, 71)).astype(np.float32)
    for tile, pad in [(16, 4), (8, 0), (100, 8), (5, 11)]:
        wins = K.tile_split_cpu(x, tile, pad)
        assert np.array_equal(K.tile_stitch_cpu(wins, 53, 71, tile, pad), x)
        th, tw, oy, ox = K.tile_grid(53, 71, tile, pad)
        assert (oy >= 0).all() and (oy + th <= 53).all() and (ox + tw <= 71).all()


@pytest.mark.parametrize("name", KERNELS)
def test_numba_cpu_conforms(name):
    results = check_kernel(get_spec(name), ["numba-cpu"])
    bad = [r for r in results if r.status == "fail"]
    assert not bad, bad
    assert any(r.status == "pass" for r in results)


def test_ptx_entries_cover_every_cuda_kernel():
    pytest.importorskip("numba")
    import os

    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("compile_ptx does not run under the simulator")
    from numba import cuda

    from gpuforge.plugins.superres import kernels_cuda

    entries = kernels_cuda.ptx()
    assert len(entries) == 5
    for fn, sig in entries:
        ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
        assert ".entry" in ptx
