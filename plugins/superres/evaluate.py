"""``gpuforge superres eval``: the usual SR protocol on a folder of HR photographs.

Each HR image is cropped to a multiple of the scale and downscaled with PIL's bicubic;
ESPCN and PIL's bicubic upscale it back; PSNR and SSIM are measured on MATLAB-Y with
``scale`` border pixels cropped (see :mod:`images`).
"""
from __future__ import annotations

import numpy as np

from .images import make_lr, psnr_y, ssim_y
from .pipeline import Upscaler, bicubic_upscale


def evaluate(images: list[tuple[str, np.ndarray]], upscaler: Upscaler, with_ssim: bool = True, bar=None) -> dict:
    s = upscaler.scale
    rows = []
    for name, rgb in images:
        hr, lr = make_lr(rgb, s)
        sr, bic = upscaler(lr), bicubic_upscale(lr, s)
        row = {"image": name, "size": [hr.shape[1], hr.shape[0]],
               "psnr_espcn": round(psnr_y(sr, hr, s), 4), "psnr_bicubic": round(psnr_y(bic, hr, s), 4)}
        row["gain_db"] = round(row["psnr_espcn"] - row["psnr_bicubic"], 4)
        if with_ssim:
            row["ssim_espcn"] = round(ssim_y(sr, hr, s), 5)
            row["ssim_bicubic"] = round(ssim_y(bic, hr, s), 5)
        rows.append(row)
        if bar is not None:
            bar.advance()
    keys = [k for k in rows[0] if k not in ("image", "size")]
    mean = {k: round(float(np.mean([r[k] for r in rows])), 4) for k in keys}
    return {"scale": s, "images": rows, "mean": mean,
            "beats_bicubic_on_every_image": all(r["gain_db"] > 0 for r in rows)}
