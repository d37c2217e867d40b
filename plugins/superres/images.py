"""Image files, colour spaces and the evaluation protocol.

Colour: the network runs on Y of full-range BT.601 YCbCr, exactly as PIL's ``"YCbCr"``
mode and JPEG/JFIF define it (Y = 0.299 R + 0.587 G + 0.114 B; Cb, Cr centred on 0.5 in
[0, 1] units). Evaluation uses the super-resolution literature's protocol: Y of
MATLAB's ``rgb2ycbcr`` (BT.601 studio range, Y in [16, 235]), ``scale`` pixels cropped
at each border, PSNR and SSIM (Wang et al. 2004: Gaussian window 11x11, sigma 1.5).

Low-resolution inputs are made the way the training data is: PIL ``Image.resize(...,
BICUBIC)`` of the RGB uint8 image (a = -0.5 cubic, antialiased when shrinking), after
cropping the high-resolution image to a multiple of the scale.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov"}

# Full-range BT.601 (JFIF), the matrix PIL uses for "YCbCr".
RGB_TO_YCBCR = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float64
)
YCBCR_TO_RGB = (1.402, 0.344136, 0.714136, 1.772)
"""R = Y + 1.402 Cr', G = Y - 0.344136 Cb' - 0.714136 Cr', B = Y + 1.772 Cb' (Cb' = Cb - 0.5)."""


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3); one-line BadInputError for anything PIL cannot decode fully."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()  # decode now: a truncated file fails here, not later
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA").convert("RGB") if im.mode != "P" else im.convert("RGB")
            rgb = np.asarray(im.convert("RGB"))
    except FileNotFoundError:
        raise BadInputError(f"input not found: {path}") from None
    except UnidentifiedImageError:
        raise BadInputError(f"{path} is not an image PIL can read; pass PNG/JPEG/BMP/TIFF/WebP files") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(f"{path}: cannot decode the image ({str(exc).splitlines()[0]}); the file may be truncated") from None
    return np.ascontiguousarray(rgb)


def write_image(rgb: np.ndarray, path: str | Path) -> None:
    from PIL import Image

    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(Path(path).suffix.lower())
    Image.fromarray(rgb).save(path, format=fmt or Image.registered_extensions().get(Path(path).suffix.lower(), "PNG"))


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (..., 3) -> float32 YCbCr (..., 3) in [0, 1] (full-range BT.601)."""
    x = rgb.astype(np.float64) / 255.0
    out = x @ RGB_TO_YCBCR.T
    out[..., 1:] += 0.5
    return out.astype(np.float32)


def eval_y(rgb: np.ndarray) -> np.ndarray:
    """MATLAB ``rgb2ycbcr`` luma of uint8 RGB, float64 in [16, 235]."""
    x = rgb.astype(np.float64) / 255.0
    return 16.0 + 65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]


def crop_to_multiple(rgb: np.ndarray, scale: int) -> np.ndarray:
    h, w = rgb.shape[0] // scale * scale, rgb.shape[1] // scale * scale
    return rgb[:h, :w]


def pil_resize(rgb: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((size_hw[1], size_hw[0]), Image.BICUBIC))


def make_lr(hr: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(HR cropped to a multiple of ``scale``, its bicubic-downscaled LR), both uint8 RGB."""
    hr = crop_to_multiple(hr, scale)
    return hr, pil_resize(hr, (hr.shape[0] // scale, hr.shape[1] // scale))


def psnr_y(a: np.ndarray, b: np.ndarray, border: int) -> float:
    """PSNR of MATLAB-Y between two uint8 RGB images, ``border`` pixels cropped."""
    ya, yb = eval_y(a), eval_y(b)
    if border:
        ya, yb = ya[border:-border, border:-border], yb[border:-border, border:-border]
    mse = float(np.mean((ya - yb) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def ssim_y(a: np.ndarray, b: np.ndarray, border: int) -> float:
    """SSIM (Wang et al. 2004; 11x11 Gaussian, sigma 1.5, K1 0.01, K2 0.03, L 255) on MATLAB-Y."""
    ya, yb = eval_y(a), eval_y(b)
    if border:
        ya, yb = ya[border:-border, border:-border], yb[border:-border, border:-border]
    g = np.exp(-0.5 * (np.arange(11) - 5.0) ** 2 / 1.5**2)
    g /= g.sum()

    def blur(x: np.ndarray) -> np.ndarray:  # "valid" separable Gaussian, as in Wang's ssim.m
        x = np.apply_along_axis(lambda r: np.convolve(r, g, mode="valid"), 1, x)
        return np.apply_along_axis(lambda c: np.convolve(c, g, mode="valid"), 0, x)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = blur(ya), blur(yb)
    saa = blur(ya * ya) - mu_a**2
    sbb = blur(yb * yb) - mu_b**2
    sab = blur(ya * yb) - mu_a * mu_b
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return float(m.mean())


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_folder(folder: str | Path, what: str = "DATA_DIR") -> list[tuple[str, np.ndarray]]:
    folder = Path(folder)
    if not folder.exists():
        raise BadInputError(f"{what} not found: {folder}")
    paths = [folder] if folder.is_file() else list_images(folder)
    if not paths:
        raise BadInputError(f"{what} {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [(str(p.relative_to(folder)) if folder.is_dir() else p.name, read_image(p)) for p in paths]


# Splits of scikit-image's bundled photographs (see README "Training data").
SKIMAGE_SPLITS = {
    "train": ["astronaut", "brick", "grass", "gravel", "immunohistochemistry", "motorcycle_left",
              "motorcycle_right", "coins", "moon", "retina"],
    "val": ["rocket"],
    "heldout": ["coffee", "chelsea", "camera"],
}


def skimage_photo(name: str) -> np.ndarray:
    import skimage.data

    if name.startswith("motorcycle"):
        left, right, _disp = skimage.data.stereo_motorcycle()
        img = left if name.endswith("left") else right
    else:
        img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))
