"""Issue 17 items 2-4: 16-bit, gray and alpha pictures keep their mode and depth, and
Real-ESRGAN's command-line habits (-i, -o, -s, --suffix, --ext, optional --scale) work."""
from __future__ import annotations

import numpy as np
import pytest
from superres_media import _photo, needs_x3

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from gpuforge.plugins.superres.espcn import builtin_path  # noqa: E402
from gpuforge.plugins.superres.images import read_header, read_picture, write_picture  # noqa: E402


def _coffee(h=36, w=48) -> np.ndarray:
    """A crop of scikit-image's coffee (a real photo: the means below are meaningful)."""
    skimage_data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(skimage_data.coffee()[150:150 + h, 250:250 + w])


def _deepen(v8: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint8 -> uint16 with sub-8-bit detail that rounds back to the same uint8."""
    noise = np.random.default_rng(seed).integers(-120, 121, v8.shape)
    return np.clip(v8.astype(np.int64) * 257 + noise, 0, 65535).astype(np.uint16)


def _up(gf, src, out, *args):
    r = gf("superres", "upscale", str(src), "--out", str(out), *args)
    assert r.code == 0, r
    return read_picture(out)


@needs_x3
def test_16bit_gray_png_is_read_and_written_with_16_bits(gf, tmp_path):
    # Before: PIL's "I;16" went through convert("RGB"), which clips at 255: an almost white
    # RGB uint8 image came out (coffee: mean 254.8 instead of ~130).
    luma = np.asarray(Image.fromarray(_coffee()).convert("L"))
    v16 = _deepen(luma)
    Image.fromarray(v16).save(tmp_path / "g16.png")
    Image.fromarray(luma).save(tmp_path / "g8.png")
    assert read_header(tmp_path / "g16.png").bits == 16
    out16 = _up(gf, tmp_path / "g16.png", tmp_path / "o16.png", "--scale", "2")
    out8 = _up(gf, tmp_path / "g8.png", tmp_path / "o8.png", "--scale", "2")
    head = read_header(tmp_path / "o16.png")
    assert (head.channels, head.bits) == (1, 16) and out16.dtype == np.uint16
    assert out16.shape == (72, 96, 1)
    assert abs(out16.mean() / 257 - luma.mean()) < 1.0, (out16.mean() / 257, luma.mean())
    assert np.abs(out16 / 257.0 - out8).max() <= 1.5  # same picture, finer levels
    assert np.mean(out16 % 257 != 0) > 0.5  # the 16 bits carry information, not 8 bits x 257


@needs_x3
def test_16bit_rgb_png_keeps_16_bits(gf, tmp_path):
    # Before: PIL reads 48-bit PNGs as 8-bit RGB, so the output was 8-bit.
    rgb = _coffee()
    write_picture(_deepen(rgb, 1), tmp_path / "c16.png")
    Image.fromarray(rgb).save(tmp_path / "c8.png")
    assert read_header(tmp_path / "c16.png").bits == 16
    out16 = _up(gf, tmp_path / "c16.png", tmp_path / "o16.png")
    out8 = _up(gf, tmp_path / "c8.png", tmp_path / "o8.png")
    assert (read_header(tmp_path / "o16.png").channels, read_header(tmp_path / "o16.png").bits) == (3, 16)
    assert out16.shape == out8.shape == (108, 144, 3)  # --scale left out: x3
    diff = np.abs(out16 / 257.0 - out8)
    assert diff.max() <= 2.0 and diff.mean() < 0.4, (diff.max(), diff.mean())
    assert abs(out16.mean() / 257 - rgb.mean()) < 1.0


def _rgba(h=30, w=40) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    alpha = np.clip(255 - 12 * np.hypot(yy - h / 2, xx - w / 2), 0, 255).astype(np.uint8)
    return np.dstack([_photo(h, w, 5), alpha])


@needs_x3
@pytest.mark.parametrize("upsampler", ["bicubic", "espcn"])
def test_rgba_keeps_alpha(gf, tmp_path, upsampler):
    # Before: RGBA came back RGB (alpha dropped).
    pic = _rgba()
    Image.fromarray(pic, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(pic[..., :3]).save(tmp_path / "rgb.png")
    Image.fromarray(pic[..., 3], "L").save(tmp_path / "alpha.png")
    out = _up(gf, tmp_path / "a.png", tmp_path / "o.png", "--scale", "3", "--alpha-upsampler", upsampler)
    assert Image.open(tmp_path / "o.png").mode == "RGBA" and out.shape == (90, 120, 4)
    colour = _up(gf, tmp_path / "rgb.png", tmp_path / "orgb.png", "--scale", "3")
    assert np.array_equal(out[..., :3], colour)
    if upsampler == "bicubic":  # PIL's bicubic of the alpha plane, within one level
        want = np.asarray(Image.fromarray(pic[..., 3], "L").resize((120, 90), Image.BICUBIC))
    else:  # the network on the alpha plane, as on a gray picture
        want = _up(gf, tmp_path / "alpha.png", tmp_path / "oalpha.png", "--scale", "3")[..., 0]
    assert np.abs(out[..., 3].astype(int) - want).max() <= 1


@needs_x3
def test_gray_and_gray_alpha_stay_gray(gf, tmp_path):
    # Before: "L" and "LA" came back RGB.
    gray = np.asarray(Image.fromarray(_photo(30, 40, 7)).convert("L"))
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    Image.fromarray(np.repeat(gray[..., None], 3, 2)).save(tmp_path / "g3.png")
    out = _up(gf, tmp_path / "g.png", tmp_path / "o.png", "--scale", "3")
    assert Image.open(tmp_path / "o.png").mode == "L" and out.shape == (90, 120, 1)
    as_rgb = _up(gf, tmp_path / "g3.png", tmp_path / "o3.png", "--scale", "3")
    assert np.abs(out[..., 0].astype(int) - as_rgb[..., 0]).max() <= 1  # gray is its own Y
    assert np.array_equal(as_rgb[..., 0], as_rgb[..., 1])
    la = np.dstack([gray, _rgba()[..., 3]])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = _up(gf, tmp_path / "la.png", tmp_path / "ola.png", "--scale", "2")
    assert Image.open(tmp_path / "ola.png").mode == "LA" and out.shape == (60, 80, 2)


@needs_x3
def test_alpha_to_jpeg_is_a_usage_error(gf, tmp_path):
    Image.fromarray(_rgba(), "RGBA").save(tmp_path / "a.png")
    r = gf("superres", "upscale", str(tmp_path / "a.png"), "--out", str(tmp_path / "a.jpg"))
    assert r.code == 2 and "alpha" in r.stderr and not (tmp_path / "a.jpg").exists()


@needs_x3
def test_realesrgan_habits(gf, tmp_path):
    # Before: -i, -o, -s, --suffix and --ext did not exist and --scale was required (exit 2).
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(_photo(30, 40, 1)).save(src / "a.png")
    Image.fromarray(_photo(20, 24, 2)).save(src / "sub" / "b.jpg", quality=95)
    Image.fromarray(_rgba(), "RGBA").save(tmp_path / "t.png")
    res = tmp_path / "results"
    res.mkdir()
    (res / "keep.txt").write_text("not ours")

    r = gf("superres", "upscale", "-i", str(src / "a.png"), "-o", str(res), "--json")
    assert r.code == 0, r
    assert Image.open(res / "a_out.png").size == (120, 90)  # default suffix "out", x3
    assert r.json()["scale"] == 3

    r = gf("superres", "upscale", "-i", str(src / "a.png"), "-o", str(res), "-s", "3.5", "--suffix", "big",
           "--ext", "jpg")
    assert r.code == 0, r
    assert Image.open(res / "a_big.jpg").size == (140, 105)  # int(40 * 3.5) x int(30 * 3.5), as Real-ESRGAN

    r = gf("superres", "upscale", "-i", str(src), "-o", str(res / "tree"), "--suffix", "")
    assert r.code == 0, r
    assert Image.open(res / "tree" / "a.png").size == (120, 90)
    assert Image.open(res / "tree" / "sub" / "b.jpg").size == (72, 60)

    r = gf("superres", "upscale", "-i", str(tmp_path / "t.png"), "-o", str(res), "--ext", "jpg")
    assert r.code == 0, r
    assert Image.open(res / "t_out.png").mode == "RGBA"  # alpha is written as PNG, as Real-ESRGAN does

    # -s picks the nearest built-in scale and resizes; a model file brings its own scale
    r = gf("superres", "upscale", "-i", str(src / "a.png"), "-o", str(res), "-s", "1.5", "--suffix", "s15", "--json")
    assert r.code == 0 and r.json()["scale"] == 2, r
    assert Image.open(res / "a_s15.png").size == (60, 45)
    r = gf("superres", "upscale", str(src / "a.png"), "--model", str(builtin_path(2)), "--out", str(tmp_path / "m.png"))
    assert r.code == 0, r
    assert Image.open(tmp_path / "m.png").size == (80, 60)

    # results are added to the folder; one that exists needs --force, the rest is left alone
    before = (res / "a_out.png").read_bytes()
    r = gf("superres", "upscale", "-i", str(src / "a.png"), "-o", str(res))
    assert r.code == 3 and "--force" in r.stderr
    assert (res / "a_out.png").read_bytes() == before
    r = gf("superres", "upscale", "-i", str(src / "a.png"), "-o", str(res), "--force", "--tile", "8")
    assert r.code == 0, r
    assert (res / "keep.txt").read_text() == "not ours"

    r = gf("superres", "upscale", "-i", str(src / "a.png"), "-o", str(res), "--out", str(tmp_path / "x.png"))
    assert r.code == 2 and "not both" in r.stderr
