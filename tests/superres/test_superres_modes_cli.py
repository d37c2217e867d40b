"""Issue 17 items 2-4 seen as a user sees them: through the CLI only, outputs read back
with PIL. test_superres_modes.py checks the same behaviour more finely, but it imports
helpers (read_header, read_picture) that arrived with the fix, so against the earlier
plugin it stops at an ImportError instead of showing the bug; these tests use nothing
but the command line and so fail on the bug itself (blank 16-bit output, RGB for RGBA
and gray, the missing Real-ESRGAN options)."""
from __future__ import annotations

import numpy as np
import pytest
from superres_media import _photo, needs_x3

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402


def _coffee_luma16(h=36, w=48) -> tuple[np.ndarray, np.ndarray]:
    """A crop of scikit-image's coffee as 8-bit gray and as 16-bit gray (x 257)."""
    skimage_data = pytest.importorskip("skimage.data")
    rgb = np.ascontiguousarray(skimage_data.coffee()[150:150 + h, 250:250 + w])
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    return luma, luma.astype(np.uint16) * 257


def _upscale(gf, src, out, *args) -> Image.Image:
    r = gf("superres", "upscale", str(src), "--out", str(out), *args)
    assert r.code == 0, r
    return Image.open(out)


@needs_x3
def test_16bit_gray_png_is_not_blank(gf, tmp_path):
    # Issue: a 16-bit PNG of coffee came out almost white (mean 254.8).
    luma, v16 = _coffee_luma16()
    Image.fromarray(v16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    out = _upscale(gf, tmp_path / "g16.png", tmp_path / "o16.png", "--scale", "2")
    deep = out.mode in ("I;16", "I")
    mean8 = np.asarray(out).mean() / (257 if deep else 1)
    # the output shows the picture, not white: its mean is the input's within one 8-bit level ...
    assert abs(mean8 - luma.mean()) < 1.0, (out.mode, mean8, luma.mean())
    # ... and it is 16-bit gray, two times the size
    assert deep and out.size == (96, 72), (out.mode, out.size)


def _rgba(h=30, w=40) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.clip(255 - 12 * np.hypot(yy - h / 2, xx - w / 2), 0, 255).astype(np.uint8)
    return np.dstack([_photo(h, w, 5), alpha])


@needs_x3
def test_rgba_gray_and_gray_alpha_keep_their_mode(gf, tmp_path):
    # Issue: RGBA came back RGB, grayscale came back RGB.
    pic = _rgba()
    Image.fromarray(pic, "RGBA").save(tmp_path / "a.png")
    out = _upscale(gf, tmp_path / "a.png", tmp_path / "oa.png", "--scale", "3")
    assert out.mode == "RGBA" and out.size == (120, 90), out.mode
    # alpha upscaled (bicubic, as Real-ESRGAN's default), not dropped or made opaque
    want = np.asarray(Image.fromarray(pic[..., 3], "L").resize((120, 90), Image.BICUBIC)).astype(int)
    assert np.abs(np.asarray(out)[..., 3].astype(int) - want).max() <= 1

    gray = np.asarray(Image.fromarray(_photo(30, 40, 7)).convert("L"))
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    assert _upscale(gf, tmp_path / "g.png", tmp_path / "og.png", "--scale", "3").mode == "L"
    Image.fromarray(np.dstack([gray, pic[..., 3]]), "LA").save(tmp_path / "la.png")
    assert _upscale(gf, tmp_path / "la.png", tmp_path / "ola.png", "--scale", "2").mode == "LA"


@needs_x3
def test_realesrgan_options_and_optional_scale(gf, tmp_path):
    # Issue: -i/-o/-s/--suffix/--ext missing, --scale required.
    src = tmp_path / "a.png"
    Image.fromarray(_photo(30, 40, 1)).save(src)
    res = tmp_path / "results"
    res.mkdir()
    r = gf("superres", "upscale", str(src), "--out", str(tmp_path / "plain.png"))
    assert r.code == 0, r  # --scale left out: x3
    assert Image.open(tmp_path / "plain.png").size == (120, 90)
    r = gf("superres", "upscale", "-i", str(src), "-o", str(res))
    assert r.code == 0, r
    assert Image.open(res / "a_out.png").size == (120, 90)
    r = gf("superres", "upscale", "-i", str(src), "-o", str(res), "-s", "3.5", "--suffix", "big", "--ext", "jpg")
    assert r.code == 0, r
    assert Image.open(res / "a_big.jpg").size == (140, 105)
