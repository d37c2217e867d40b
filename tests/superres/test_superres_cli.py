"""gpuforge superres upscale / eval / train through the CLI: outputs, manifests, video,
and the bad-input contract (one line, documented exit code, no partial output)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

from gpuforge.plugins.superres.espcn import builtin_path  # noqa: E402

from superres_media import _photo, make_clip, needs_x3  # noqa: E402


@needs_x3
def test_upscale_image_json_and_manifest(run_cli, images, tmp_path):
    out = tmp_path / "a_x3.png"
    r = run_cli("superres", "upscale", str(images / "a.png"), "--scale", "3", "--out", str(out), "--json")
    assert r.code == 0, r
    assert Image.open(out).size == (120, 90)
    assert (tmp_path / "a_x3.png.manifest.json").exists()
    assert r.json()["items"][0]["out_size"] == [120, 90]
    # existing output without --force: exit 3, file untouched
    before = out.read_bytes()
    r = run_cli("superres", "upscale", str(images / "a.png"), "--scale", "3", "--out", str(out))
    assert r.code == 3 and "--force" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert out.read_bytes() == before


@needs_x3
def test_upscale_folder_mirrors_tree(gf, images, tmp_path):
    out = tmp_path / "up"
    r = gf("superres", "upscale", str(images), "--scale", "3", "--out", str(out), "--tile", "12", "--json")
    assert r.code == 0, r
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == {
        "a.png", "b.jpg", "sub/c.png", "manifest.json"}
    assert Image.open(out / "sub" / "c.png").size == (60, 60)


@needs_x3
def test_video_keeps_frames_rate_duration_and_audio(gf, tmp_path):
    from gpuforge.plugins.superres.video import probe

    clip = make_clip(tmp_path / "clip.mp4")
    out = tmp_path / "clip_x3.mkv"
    r = gf("superres", "upscale", str(clip), "--scale", "3", "--out", str(out), "--json")
    assert r.code == 0, r
    a, b = probe(clip), probe(out)
    assert b["frames"] == a["frames"] == 6
    assert b["fps"] == pytest.approx(a["fps"])
    assert b["video_duration_s"] == pytest.approx(a["video_duration_s"], abs=2e-3)  # mkv keeps ms timestamps
    assert a["video_duration_s"] == pytest.approx(0.5)
    assert (b["width"], b["height"]) == (96, 72) and b["audio"]


def _assert_one_line(r, code):
    assert r.code == code, r
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr


@needs_x3
@pytest.mark.parametrize("kind", ["not_image", "truncated", "tiny", "bad_codec", "scale_mismatch", "truncated_video"])
def test_bad_inputs_one_line_no_output(gf, tmp_path, kind):
    out = tmp_path / ("out.mkv" if kind in ("bad_codec", "truncated_video") else "out.png")
    args = ["--scale", "3"]
    code = 3
    if kind == "not_image":
        src = tmp_path / "notes.png"
        src.write_text("this is text, not a picture\n")
    elif kind == "truncated":
        src = tmp_path / "cut.png"
        Image.fromarray(_photo(64, 64)).save(src)
        src.write_bytes(src.read_bytes()[:300])
    elif kind == "tiny":
        src = tmp_path / "one.png"
        Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(src)
    elif kind == "bad_codec":
        src = make_clip(tmp_path / "clip.avi", audio=False)
        src.write_bytes(src.read_bytes().replace(b"FMP4", b"ZQZQ"))  # a FourCC FFmpeg has no decoder for
        code = 4
    elif kind == "truncated_video":
        src = make_clip(tmp_path / "clip.mp4", audio=False)
        src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    else:
        src = tmp_path / "ok.png"
        Image.fromarray(_photo()).save(src)
        args = ["--scale", "2", "--model", str(builtin_path(3))]
        code = 2
    r = gf("superres", "upscale", str(src), *args, "--out", str(out))
    _assert_one_line(r, code)
    assert not out.exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir()), list(tmp_path.iterdir())


@needs_x3
def test_bad_file_in_folder_leaves_no_partial_folder(gf, images, tmp_path):
    src = tmp_path / "mix"
    src.mkdir()
    (src / "good.png").write_bytes((images / "a.png").read_bytes())
    (src / "zz_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    r = gf("superres", "upscale", str(src), "--scale", "3", "--out", str(out))
    _assert_one_line(r, 3)
    assert not out.exists()


@needs_x3
def test_eval_reports_per_image_and_mean(gf, images):
    r = gf("superres", "eval", "--scale", "3", str(images), "--json")
    assert r.code == 0, r
    res = r.json()
    assert [row["image"] for row in res["images"]] == ["a.png", "b.jpg", "sub/c.png"]
    assert {"psnr_espcn", "psnr_bicubic", "gain_db", "ssim_espcn"} <= set(res["mean"])


def test_train_resume_and_atomic_model(gf, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        Image.fromarray(_photo(60, 72, i)).save(data / f"{i}.png")
    out = tmp_path / "m.safetensors"
    r = gf("superres", "train", str(data), "--scale", "2", "--out", str(out), "--steps", "6",
                "--epoch-steps", "3", "--batch", "4", "--patch", "8", "--val", str(data), "--json")
    assert r.code == 0, r
    res = r.json()
    assert res["steps"] == 6 and len(res["history"]) == 2
    assert out.exists() and Path(str(out) + ".manifest.json").exists()
    resume = Path(res["resume_file"])
    r = gf("superres", "train", str(data), "--scale", "2", "--out", str(out), "--steps", "9",
                "--epoch-steps", "3", "--batch", "4", "--patch", "8", "--resume", str(resume), "--force", "--json")
    assert r.code == 0, r
    assert r.json()["steps"] == 9 and len(r.json()["history"]) == 1
    # the trained model upscales; using it at another scale is a usage error
    img = data / "0.png"
    r = gf("superres", "upscale", str(img), "--scale", "2", "--model", str(out), "--out", str(tmp_path / "x.png"))
    assert r.code == 0, r
    r = gf("superres", "upscale", str(img), "--scale", "3", "--model", str(out), "--out", str(tmp_path / "y.png"))
    _assert_one_line(r, 2)


def test_video_frames_are_streamed(tmp_path):
    """Peak traced memory does not grow with the clip's length (frames are not collected)."""
    import tracemalloc

    from gpuforge.plugins.superres.video import upscale_video

    def nearest(rgb):
        return np.repeat(np.repeat(rgb, 2, 0), 2, 1)

    peaks = []
    for n in (4, 24):
        clip = make_clip(tmp_path / f"c{n}.mp4", n=n, w=64, h=48, audio=False)
        tracemalloc.start()
        info = upscale_video(clip, tmp_path / f"o{n}.mkv", 2, nearest)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert info["frames"] == n
    assert peaks[1] < 1.5 * peaks[0] + 200_000, peaks


def test_train_rgb_model_and_tiled_upscale(gf, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(_photo(48, 48, 3)).save(data / "0.png")
    out = tmp_path / "rgb.safetensors"
    r = gf("superres", "train", str(data), "--scale", "2", "--channels", "rgb", "--out", str(out), "--steps", "2",
           "--epoch-steps", "2", "--batch", "2", "--patch", "8", "--json")
    assert r.code == 0, r
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert gf("superres", "upscale", str(data / "0.png"), "--scale", "2", "--model", str(out), "--out", str(a)).code == 0
    assert gf("superres", "upscale", str(data / "0.png"), "--scale", "2", "--model", str(out), "--out", str(b),
              "--tile", "10", "--tile-pad", "4").code == 0
    x, y = np.asarray(Image.open(a)).astype(int), np.asarray(Image.open(b)).astype(int)
    assert x.shape == (96, 96, 3) and np.abs(x - y).max() <= 1


@needs_x3
def test_avi_output_declares_the_input_rate(gf, tmp_path):
    # Before: the AVI stream took the mp4's time base (1/12288 here, 1/600 elsewhere) and
    # declared it as its frame rate, with 300 "frames" for 6 and a wrong duration.
    import av

    from gpuforge.plugins.superres.video import probe

    clip = make_clip(tmp_path / "clip.mp4", audio=False)
    out = tmp_path / "clip.avi"
    r = gf("superres", "upscale", str(clip), "--scale", "2", "--out", str(out))
    assert r.code == 0, r
    with av.open(str(out)) as c:
        vs = c.streams.video[0]
        assert vs.average_rate == 12 and vs.frames == 6, (vs.average_rate, vs.frames, vs.time_base)
    b = probe(out)
    assert b["frames"] == 6 and b["video_duration_s"] == pytest.approx(0.5)


@needs_x3
@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_video_progress_total_is_the_frame_count(gf, tmp_path, monkeypatch, suffix):
    # Before: the bar had no total ("48/?") although the container lists the frames.
    from gpuforge.core.run import Run

    totals = []
    real = Run.progress

    def spy(self, description, total=None):
        totals.append(total)
        return real(self, description, total)

    monkeypatch.setattr(Run, "progress", spy)
    clip = make_clip(tmp_path / f"clip{suffix}", n=5, audio=False)  # mkv lists no count: duration x rate
    r = gf("superres", "upscale", str(clip), "--scale", "2", "--out", str(tmp_path / f"o{suffix}"))
    assert r.code == 0, r
    assert totals == [5]
