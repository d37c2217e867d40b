"""Issue 18 for superres: every bad input ends with its documented exit code and one
line, no traceback, nothing written and the inputs' bytes unchanged; out-of-memory sizes
are refused before any work; SIGTERM during a video upscale leaves nothing behind.
The cases and exit codes are listed in plugins/superres/README.md."""
from __future__ import annotations

import hashlib
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from superres_media import _photo, make_clip, needs_x3

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from gpuforge.plugins.superres.espcn import ESPCN, builtin_path, save_model  # noqa: E402


def png_header_only(path: Path, w: int, h: int, rows: int = 0) -> Path:
    """A PNG whose header says w x h; ``rows`` rows of zeros are really there (streamed
    through zlib, so a 10000x10000 file costs no memory to make)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    line = b"\x00" * (1 + 3 * w)
    idat = b"".join(comp.compress(line) for _ in range(rows)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _model_with_nan(path: Path, value: float) -> Path:
    m = ESPCN(2)
    with __import__("torch").no_grad():
        m.conv2.weight[0, 0, 1, 1] = value
    save_model(m, path)
    return path


def _float_tiff(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(0).random((16, 16)).astype(np.float32), "F").save(path)
    return path


def _case(kind: str, d: Path, out: Path) -> tuple[list[str], int]:
    """Make the inputs of one case in ``d``; (arguments, documented exit code)."""
    png = d / "ok.png"
    Image.fromarray(_photo()).save(png)
    o = ["--out", str(out / "up.png")]
    if kind == "not_image":
        (d / "notes.png").write_text("this is text, not a picture\n")
        return [str(d / "notes.png"), *o], 3
    if kind == "truncated_png":
        Image.fromarray(_photo(64, 64)).save(d / "cut.png")
        (d / "cut.png").write_bytes((d / "cut.png").read_bytes()[:300])
        return [str(d / "cut.png"), *o], 3
    if kind == "tiny":
        Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(d / "one.png")
        return [str(d / "one.png"), *o], 3
    if kind == "decompression_bomb":  # 20000 x 20000: over twice PIL's MAX_IMAGE_PIXELS
        return [str(png_header_only(d / "bomb.png", 20000, 20000)), *o], 3
    if kind == "missing_input":
        return [str(d / "nope.png"), *o], 3
    if kind == "empty_folder":
        (d / "empty").mkdir()
        (d / "empty" / "readme.txt").write_text("no images here")
        return [str(d / "empty"), "--out", str(out / "up")], 3
    if kind == "bad_codec":
        src = make_clip(d / "clip.avi", audio=False)
        src.write_bytes(src.read_bytes().replace(b"FMP4", b"ZQZQ"))  # a FourCC FFmpeg has no decoder for
        return [str(src), "--out", str(out / "up.mkv")], 4
    if kind == "truncated_video":
        src = make_clip(d / "clip.mp4", audio=False)
        src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
        return [str(src), "--out", str(out / "up.mkv")], 3
    if kind == "float_tiff":
        return [str(_float_tiff(d / "f.tif")), "--out", str(out / "up.tif")], 4
    if kind == "scale_mismatch":
        return [str(png), "--scale", "2", "--model", str(builtin_path(3)), *o], 2
    if kind == "nan_model":
        return [str(png), "--model", str(_model_with_nan(d / "nan.safetensors", float("nan"))), *o], 3
    if kind == "inf_model":
        return [str(png), "--model", str(_model_with_nan(d / "inf.safetensors", float("inf"))), *o], 3
    if kind == "model_not_safetensors":
        (d / "m.safetensors").write_text("not a model")
        return [str(png), "--model", str(d / "m.safetensors"), *o], 3
    if kind == "output_exists":
        (out / "up.png").write_bytes(b"earlier result")
        return [str(png), *o], 3
    if kind == "output_is_input":
        return [str(png), "--out", str(png), "--force"], 3
    if kind == "output_inside_input_folder":
        return [str(d), "--out", str(d / "up"), "--force"], 3
    if kind == "output_parent_is_a_file":
        (out / "afile").write_text("x")
        return [str(png), "--out", str(out / "afile" / "up.png")], 3
    if kind == "alpha_to_jpeg":
        Image.fromarray(np.dstack([_photo(), _photo()[..., 0]]), "RGBA").save(d / "rgba.png")
        return [str(d / "rgba.png"), "--out", str(out / "up.jpg")], 2
    if kind == "video_to_png":
        return [str(make_clip(d / "clip.mp4", audio=False)), *o], 2
    if kind == "no_output":
        return [str(png)], 2
    if kind == "out_and_output":
        return [str(png), *o, "-o", str(out / "res")], 2
    if kind == "ext_gif":
        return [str(png), "-o", str(out / "res"), "--ext", "gif"], 2
    if kind == "suffix_with_out_file":
        return [str(png), *o, "--suffix", "x"], 2
    if kind == "precision_fp8":
        return [str(png), *o, "--precision", "fp8"], 2
    if kind == "alpha_upsampler_bad":
        return [str(png), *o, "--alpha-upsampler", "lanczos"], 2
    if kind == "tile_3":
        return [str(png), *o, "--tile", "3"], 2
    # ranges checked where the options are parsed (typer min/max): click's usage error
    ranges = {"scale_1": ["--scale", "1"], "scale_9": ["--scale", "9"], "outscale_0": ["-s", "0"],
              "outscale_100": ["-s", "100"], "tile_negative": ["--tile", "-1"], "tile_pad_2": ["--tile-pad", "2"],
              "threads_0": ["--threads", "0"]}
    return [str(png), *o, *ranges[kind]], 2


CASES = ["not_image", "truncated_png", "tiny", "decompression_bomb", "missing_input", "empty_folder", "bad_codec",
         "truncated_video", "float_tiff", "scale_mismatch", "nan_model", "inf_model", "model_not_safetensors",
         "output_exists", "output_is_input", "output_inside_input_folder", "output_parent_is_a_file",
         "alpha_to_jpeg", "video_to_png", "no_output", "out_and_output", "ext_gif", "suffix_with_out_file",
         "precision_fp8", "alpha_upsampler_bad", "tile_3", "scale_1", "scale_9", "outscale_0", "outscale_100",
         "tile_negative", "tile_pad_2", "threads_0"]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


def error_lines(stderr: str) -> list[str]:
    """Every non-empty line of stderr (usage errors are one line too)."""
    return [ln for ln in stderr.splitlines() if ln.strip()]


@needs_x3
@pytest.mark.parametrize("kind", CASES)
def test_bad_input(gf, tmp_path, kind):
    d, out = tmp_path / "in", tmp_path / "out"
    d.mkdir()
    out.mkdir()
    args, code = _case(kind, d, out)
    before_in, before_out = _snapshot(d), _snapshot(out)
    r = gf("superres", "upscale", *args)
    assert r.code == code, r
    assert len(error_lines(r.stderr)) == 1 and "Traceback" not in r.stderr, r.stderr
    assert _snapshot(d) == before_in  # inputs untouched, nothing written beside them
    assert _snapshot(out) == before_out  # nothing written, not even a temporary file


@needs_x3
def test_plan_option_ranges_are_usage_errors(gf):
    for args in (["--frames", "0"], ["--tile", "3"], ["--tile-pad", "2"], ["--scale", "x"], ["--precision", "fp8"]):
        r = gf("plan", "superres", "upscale", *args)
        assert r.code == 2 and len(error_lines(r.stderr)) == 1, (args, r)


def _limited(limit_bytes: int):
    def apply():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    return apply


def _cli(*args: str, limit: int | None = None, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONSAFEPATH="1", GPUFORGE_LOG_FORMAT="json")
    return subprocess.run([sys.executable, "-P", "-m", "gpuforge.cli", "--log-format", "json", *args],
                          capture_output=True, text=True, env=env, timeout=600,
                          preexec_fn=_limited(limit) if limit else None, **kw)


@needs_x3
def test_output_too_big_for_memory_is_refused_first(tmp_path):
    """10000x10000 at x4 (4.8 GB of output alone) under a 4 GB address-space limit:
    refused from the header, before decoding, with the size that would fit."""
    src = png_header_only(tmp_path / "big.png", 10000, 10000, rows=10000)
    before = src.read_bytes()
    t0 = time.perf_counter()
    p = _cli("superres", "upscale", str(src), "--scale", "4", "--out", str(tmp_path / "up.png"), limit=4 * 2**30)
    assert p.returncode == 3, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("{")]
    assert len(lines) == 1 and "needs about" in lines[0] and "fits" in lines[0], p.stderr
    fit = lines[0].split("an input of up to ")[1].split()[0]
    w, h = (int(v) for v in fit.split("x"))
    assert 1000 < w == h < 10000
    assert time.perf_counter() - t0 < 120  # refused, not attempted
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["big.png"]


@needs_x3
def test_sigterm_during_video_upscale_leaves_nothing(tmp_path):
    clip = make_clip(tmp_path / "long.mp4", n=240, w=64, h=48, audio=False)
    out = tmp_path / "long_x2.mkv"
    env = dict(os.environ, PYTHONSAFEPATH="1")
    proc = subprocess.Popen([sys.executable, "-P", "-m", "gpuforge.cli", "superres", "upscale", str(clip), "--scale", "2",
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if any(p.name.startswith(".long_x2.mkv") for p in tmp_path.iterdir()):  # the temporary output exists
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the upscale ended before it could be interrupted"
    time.sleep(0.3)  # frames are being encoded into it
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4"]
