"""Video in, video out, one frame at a time (PyAV).

Frames are decoded, upscaled and encoded one by one, so memory does not grow with
the clip's length. The output keeps every frame's timestamp and the stream's time base
and average rate, so frame count, frame rate and duration match the input. Audio
packets are copied unchanged (no re-encoding) when the container has audio.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

from gpuforge.core.errors import BadInputError, UnsupportedError

# Output video codec per container; audio is copied as is.
VIDEO_CODECS = {".mp4": "libx264", ".mkv": "libx264", ".mov": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9"}


def _open_input(path: Path):
    import av

    try:
        container = av.open(str(path))
    except av.error.InvalidDataError:
        raise BadInputError(f"{path} is not a video FFmpeg can read, or it is truncated (invalid data); pass a complete mp4/mkv/webm/avi") from None
    except (av.error.FFmpegError, OSError) as exc:
        raise BadInputError(f"cannot open video {path}: {str(exc).splitlines()[0]}") from None
    if not container.streams.video:
        container.close()
        raise BadInputError(f"{path} has no readable video stream (an audio-only file, or a truncated one); "
                            "pass a complete video")
    vs = container.streams.video[0]
    ctx = vs.codec_context  # None when FFmpeg knows no decoder for the stream's codec
    name = getattr(ctx, "name", "") or ""
    ok = ctx is not None and name not in ("", "none") and ctx.width > 0
    if not ok:
        tag = getattr(vs, "codec_tag", "") or "unknown"
        container.close()
        raise UnsupportedError(f"{path}: video codec {name or tag!r} cannot be decoded here; "
                               "re-encode it to H.264, VP9 or MPEG-4 first")
    return container


def probe(path: str | Path) -> dict:
    """Frame count (decoded), frame rate, duration (s), size and audio presence."""
    container = _open_input(Path(path))
    try:
        vs = container.streams.video[0]
        frames = 0
        first_pts = last_pts = None
        for frame in container.decode(vs):
            frames += 1
            first_pts = frame.pts if first_pts is None else first_pts
            last_pts = frame.pts
        rate = vs.average_rate
        duration = None
        if container.duration is not None:
            duration = container.duration / 1_000_000
        video_duration = None
        if frames and rate and last_pts is not None and first_pts is not None:
            video_duration = float((last_pts - first_pts) * vs.time_base + 1 / rate)
        return {"frames": frames, "fps": float(rate) if rate else None, "duration_s": duration,
                "video_duration_s": video_duration,
                "width": vs.codec_context.width, "height": vs.codec_context.height,
                "audio": bool(container.streams.audio), "last_pts": last_pts,
                "time_base": str(vs.time_base)}
    finally:
        container.close()


def frame_count(path: str | Path) -> int | None:
    """Frames the container says the video has (its header, else duration x rate);
    None when it says neither. For progress totals: nothing is decoded."""
    container = _open_input(Path(path))
    try:
        vs = container.streams.video[0]
        if vs.frames:
            return int(vs.frames)
        rate = vs.average_rate or vs.guessed_rate
        if vs.duration is not None and vs.time_base is not None:
            seconds = float(vs.duration * vs.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000
        else:
            return None
        return max(1, round(seconds * float(rate))) if rate else None
    finally:
        container.close()


def frame_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of the video stream, from the header."""
    container = _open_input(Path(path))
    try:
        ctx = container.streams.video[0].codec_context
        return int(ctx.width), int(ctx.height)
    finally:
        container.close()


def upscale_video(src: Path, dst: Path, scale: int, frame_fn: Callable[[np.ndarray], np.ndarray],
                  on_frame: Callable[[], None] | None = None, outscale: float | None = None) -> dict:
    """Write ``dst`` (a temporary path the caller moves into place). ``outscale``: the
    output is resized to floor(side x outscale), rounded down to even (yuv420p)."""
    import av

    from .upscale import out_size

    codec = VIDEO_CODECS.get(dst.suffix.lower())
    if codec is None:
        raise UnsupportedError(f"output {dst.name}: unsupported video container; use .mp4, .mkv, .webm, .avi or .mov")
    inp = _open_input(src)
    fmt = {".mkv": "matroska", ".webm": "webm", ".avi": "avi", ".mp4": "mp4", ".mov": "mov"}[dst.suffix.lower()]
    out = av.open(str(dst), "w", format=fmt)
    frames = expected = 0
    try:
        vs = inp.streams.video[0]
        expected = vs.frames  # 0 when the container does not say (mkv, webm)
        rate = vs.average_rate or vs.guessed_rate or 25
        ovs = out.add_stream(codec, rate=rate)
        w, h = vs.codec_context.width, vs.codec_context.height
        oh, ow = out_size(h, w, float(outscale if outscale is not None else scale), video=True)
        ovs.width, ovs.height = ow, oh
        ovs.pix_fmt = "yuv420p"
        # AVI counts frames, not time: its time base must be one frame (1/rate), or it
        # declares the time base as the frame rate (600 fps for a 1/600 base). The others
        # keep the input's time base, so every frame keeps its timestamp exactly.
        ticks = fmt == "avi"
        ovs.time_base = (1 / Fraction(rate)) if ticks else vs.time_base
        if codec == "libx264":
            ovs.options = {"crf": "16", "preset": "veryfast"}
        elif codec == "mpeg4":
            ovs.options = {"qscale": "2"}
        audio_in = inp.streams.audio[0] if inp.streams.audio else None
        audio_out = None
        if audio_in is not None:
            try:
                audio_out = out.add_stream_from_template(audio_in)
            except (ValueError, av.error.FFmpegError) as exc:
                raise UnsupportedError(f"{dst.suffix} cannot hold the {audio_in.codec_context.name} audio of {src.name} "
                                       f"({str(exc).splitlines()[0]}); choose .mkv") from None

        def fit(rgb: np.ndarray) -> np.ndarray:
            up = frame_fn(rgb)
            if up.shape[:2] != (oh, ow):
                from .pipeline import resize_picture

                up = resize_picture(up, oh, ow)
            return up

        streams = [vs] + ([audio_in] if audio_in is not None else [])
        for packet in inp.demux(*streams):
            if packet.stream is vs:
                for frame in packet.decode():
                    frames += _encode(frame, fit, ovs, out, Fraction(rate) if ticks else None)
                    if on_frame:
                        on_frame()
            elif packet.dts is not None:
                packet.stream = audio_out
                out.mux(packet)
        # demux() ends with an empty packet per stream, whose decode() flushed the decoder.
        for packet in ovs.encode(None):
            out.mux(packet)
    except av.error.FFmpegError as exc:
        raise BadInputError(f"{src}: video decoding failed ({str(exc).splitlines()[0]}); the file may be truncated") from None
    finally:
        out.close()
        inp.close()
    if frames == 0:
        raise BadInputError(f"{src}: no video frame could be decoded; the file may be truncated")
    if expected and frames < expected:
        raise BadInputError(f"{src}: only {frames} of the {expected} frames its header lists could be decoded; "
                            "the file may be truncated")
    return {"frames": frames, "codec": codec, "audio_copied": audio_out is not None, "out_size": [ow, oh]}


def _encode(frame, frame_fn, ovs, out, rate: Fraction | None = None) -> int:
    """Encode one upscaled frame at its timestamp (``rate``: in frame ticks, for AVI)."""
    import av

    rgb = frame.to_ndarray(format="rgb24")
    up = frame_fn(rgb)
    new = av.VideoFrame.from_ndarray(up, format="rgb24")
    if rate is None:
        new.pts, new.time_base = frame.pts, frame.time_base
    else:
        pts = frame.pts if frame.pts is not None else 0
        new.pts, new.time_base = round(pts * frame.time_base * rate), 1 / rate
    for packet in ovs.encode(new):
        out.mux(packet)
    return 1
