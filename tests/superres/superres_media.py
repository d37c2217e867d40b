"""Small test media for the superres tests: photos and clips made here, nothing downloaded."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gpuforge.plugins.superres.espcn import builtin_path


def _photo(h=30, w=40, seed=0) -> np.ndarray:
    g = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 6, yy * 8, (xx + yy) * 3], -1) + g.normal(0, 10, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def make_clip(path: Path, n: int = 6, w: int = 32, h: int = 24, audio: bool = True, codec: str = "mpeg4") -> Path:
    import av

    out = av.open(str(path), "w")
    vs = out.add_stream(codec, rate=12)
    vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
    a = None
    if audio:
        a = out.add_stream("aac", rate=16000)
        a.layout = "mono"
    for i in range(n):
        img = _photo(h, w, i)
        for p in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(p)
    for p in vs.encode(None):
        out.mux(p)
    if a is not None:
        samples = int(16000 * n / 12)
        data = (0.3 * np.sin(2 * np.pi * 440 * np.arange(samples) / 16000)).astype(np.float32)[None]
        for k in range(0, samples, 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, k:k + 1024]), format="fltp", layout="mono")
            fr.sample_rate, fr.pts = 16000, k
            for p in a.encode(fr):
                out.mux(p)
        for p in a.encode(None):
            out.mux(p)
    out.close()
    return path


needs_x3 = pytest.mark.skipif(not builtin_path(3).exists(), reason="built-in x3 weights missing")
