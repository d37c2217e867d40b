"""Issue 15 item 4: superres memory is bounded by the tile, not by the picture (peak RSS
of fresh processes, read with os.wait4); the growth fit is core.bench.growth_exponent
(tests/test_bench_scale.py)."""
from __future__ import annotations

import numpy as np
import pytest
from superres_media import needs_x3

from gpuforge.plugins.superres.scalebench import _photo, measure


@needs_x3
@pytest.mark.slow
def test_tiled_memory_does_not_grow_with_the_picture(tmp_path):
    from PIL import Image

    for side in (300, 900):
        Image.fromarray(_photo(side, side)).save(tmp_path / f"{side}.png")

    def rss(side: int, *extra: str) -> float:
        out = f"up{side}{''.join(extra)}.png"
        m = measure(["superres", "upscale", f"{side}.png", "--scale", "2", "--out", out, *extra], tmp_path)
        return m["peak_rss_mb"]

    rss(300, "--tile", "8", "--force")  # fills Numba's cache if stale: compiling costs hundreds of MB
    small, big = rss(300, "--tile", "64"), rss(900, "--tile", "64")
    untiled = rss(900, "--tile", "0")
    # 9x the pixels: the tiled run grows by the pictures alone (900x900 in, 1800x1800 out,
    # PIL's copy for the PNG writer: ~25 MB), the untiled one by the network's activations
    # (~0.65 KB per LR pixel: ~500 MB)
    assert big - small < 120, (small, big)
    assert untiled - big > 250, (big, untiled)
    out = np.asarray(Image.open(tmp_path / "up900--tile64.png")).astype(int)
    ref = np.asarray(Image.open(tmp_path / "up900--tile0.png")).astype(int)
    assert np.abs(out - ref).max() <= 1  # same picture
