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

from dataclasses import dataclass
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


MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
"""Channels of a picture array (h, w, C) -> its mode. Pictures are uint8 or uint16."""
ALPHA_SUFFIXES = {".png", ".tif", ".tiff", ".webp"}
"""Image formats that keep an alpha channel (as PIL writes them)."""
DEEP_SUFFIXES = {".png", ".tif", ".tiff"}
"""Image formats that keep 16 bits per channel."""
_AV_FORMATS = {"gray16": 1, "ya16": 2, "rgb48": 3, "rgba64": 4}


@dataclass(frozen=True)
class ImageHeader:
    """What the file's header says, before any pixel is decoded."""

    width: int
    height: int
    channels: int
    """1 gray, 2 gray + alpha, 3 RGB, 4 RGBA (as the picture will be read)."""
    bits: int
    """8 or 16 per channel."""

    @property
    def mode(self) -> str:
        return MODES[self.channels]

    @property
    def dtype(self):
        return np.uint16 if self.bits == 16 else np.uint8


def _channels_of(im) -> int:
    """Channels a PIL image is read with: the mode is kept (gray stays gray, alpha stays)."""
    if im.mode in ("1", "L", "I;16", "I;16B", "I;16L", "I;16N", "I"):
        return 1
    if im.mode in ("LA", "La"):
        return 2
    if im.mode in ("RGBA", "RGBa", "PA"):
        return 4
    if im.mode == "P":
        return 4 if "transparency" in im.info else 3
    return 3  # RGB, CMYK, YCbCr, LAB, HSV: read as RGB


def _raw16(im) -> bool:
    """True when the file holds 16 bits per channel that PIL would cut to 8 (RGB, RGBA,
    gray + alpha): PIL reads those modes as 8-bit; FFmpeg's decoders keep the 16 bits."""
    tile = getattr(im, "tile", None) or []
    raw = tile[0][3] if tile and len(tile[0]) > 3 else None
    raw = raw[0] if isinstance(raw, tuple) else raw
    return isinstance(raw, str) and ";16" in raw and not im.mode.startswith("I")


def _open(path: Path):
    """PIL image, header only; one-line BadInputError for what PIL cannot or will not open."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Between PIL's limit and twice it, PIL only warns; the memory estimate of
            # `upscale` decides whether such an image fits, so the warning is not printed.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except FileNotFoundError:
        raise BadInputError(f"input not found: {path}") from None
    except IsADirectoryError:
        raise BadInputError(f"{path} is a folder, not an image") from None
    except Image.DecompressionBombError as exc:
        raise BadInputError(f"{path} is refused as a possible decompression bomb ({str(exc).splitlines()[0]}); "
                            "pass an image of at most that many pixels") from None
    except UnidentifiedImageError:
        raise BadInputError(f"{path} is not an image PIL can read; pass PNG/JPEG/BMP/TIFF/WebP files") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadInputError(f"{path}: cannot decode the image ({str(exc).splitlines()[0]}); the file may be truncated") from None


def read_header(path: str | Path) -> ImageHeader:
    """Size, channels and bit depth from the header (nothing decoded: cheap, and safe
    to call before estimating the memory an image needs)."""
    path = Path(path)
    with _open(path) as im:
        bits = 16 if (im.mode.startswith("I;16") or im.mode == "I" or _raw16(im)) else 8
        channels = _channels_of(im)
        if _raw16(im) and im.mode == "RGBA" and str(im.tile[0][3]).startswith("LA"):
            channels = 2  # PIL lists 16-bit gray + alpha PNGs as RGBA
        if im.mode == "F":
            from gpuforge.core.errors import UnsupportedError

            raise UnsupportedError(f"{path} holds 32-bit float pixels; convert it to 8- or 16-bit integers first")
        return ImageHeader(im.width, im.height, channels, bits)


def _decode_deep(path: Path, codec: str) -> np.ndarray:
    """16-bit RGB / RGBA / gray + alpha through FFmpeg's PNG or TIFF decoder (PyAV)."""
    import av

    try:
        frames = av.CodecContext.create(codec, "r").decode(av.Packet(path.read_bytes()))
    except av.error.FFmpegError as exc:
        raise BadInputError(f"{path}: cannot decode the image ({str(exc).splitlines()[0]}); the file may be truncated") from None
    if not frames:
        raise BadInputError(f"{path}: cannot decode the image (no picture in it); the file may be truncated")
    frame = frames[0]
    name = frame.format.name[:-2] if frame.format.name.endswith(("le", "be")) else frame.format.name
    if name not in _AV_FORMATS:
        raise BadInputError(f"{path}: unexpected 16-bit layout {frame.format.name}")
    if name == "ya16":
        a = frame.reformat(format="rgba64le").to_ndarray(format="rgba64le")
        return np.ascontiguousarray(a[..., [0, 3]])
    fmt = {"gray16": "gray16le", "rgb48": "rgb48le", "rgba64": "rgba64le"}[name]
    a = frame.to_ndarray(format=fmt)
    return np.ascontiguousarray(a.reshape(a.shape[0], a.shape[1], -1))


def read_picture(path: str | Path) -> np.ndarray:
    """The image as it is: (h, w, C) uint8 or uint16 with C = 1 (gray), 2 (gray + alpha),
    3 (RGB) or 4 (RGBA). One-line BadInputError for anything that cannot be decoded fully."""
    path = Path(path)
    head = read_header(path)
    with _open(path) as im:
        if head.bits == 16 and head.channels != 1:
            fmt = (im.format or "").upper()
            if fmt not in ("PNG", "TIFF"):
                raise BadInputError(f"{path}: 16-bit {im.mode} {fmt} images are not read; save it as PNG or TIFF")
            return _decode_deep(path, "png" if fmt == "PNG" else "tiff")
        try:
            im.load()  # decode now: a truncated file fails here, not later
        except (OSError, SyntaxError, ValueError) as exc:
            raise BadInputError(f"{path}: cannot decode the image ({str(exc).splitlines()[0]}); "
                                "the file may be truncated") from None
        if head.bits == 16:  # I;16* or I: 16-bit gray
            a = np.asarray(im)
            if a.dtype.kind in "iu" and a.size and (a.min() < 0 or a.max() > 65535):
                from gpuforge.core.errors import UnsupportedError

                raise UnsupportedError(f"{path} holds 32-bit integer pixels outside 0..65535; convert it to 16-bit")
            return np.ascontiguousarray(a.astype(np.uint16, copy=False)[..., None])
        mode = MODES[head.channels]
        if im.mode != mode:
            im = im.convert("RGBA" if im.mode in ("P", "PA") and mode == "RGBA" else mode)
        a = np.asarray(im)
    return np.ascontiguousarray(a.reshape(a.shape[0], a.shape[1], -1))


def to_rgb8(pic: np.ndarray) -> np.ndarray:
    """Any picture -> RGB uint8 (alpha dropped, gray repeated, 16 bits rounded to 8)."""
    if pic.dtype == np.uint16:
        pic = ((pic.astype(np.uint32) + 128) // 257).astype(np.uint8)
    c = pic.shape[2]
    rgb = np.repeat(pic[..., :1], 3, axis=2) if c <= 2 else pic[..., :3]
    return np.ascontiguousarray(rgb)


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3) (training and evaluation work on 8-bit RGB)."""
    return to_rgb8(read_picture(path))


def write_picture(pic: np.ndarray, path: str | Path) -> None:
    """Write (h, w, C) uint8/uint16 in the format the suffix names. 16-bit pictures keep
    16 bits in PNG and TIFF (FFmpeg's encoders: PIL writes 16-bit gray only); other
    formats get 8 bits. Callers check :func:`output_fits` first."""
    path = Path(path)
    suffix = path.suffix.lower()
    if pic.ndim == 2:
        pic = pic[..., None]
    if pic.dtype == np.uint16 and suffix in DEEP_SUFFIXES:
        _encode_deep(pic, path, "png" if suffix == ".png" else "tiff")
        return
    if pic.dtype == np.uint16:
        pic = ((pic.astype(np.uint32) + 128) // 257).astype(np.uint8)
    from PIL import Image

    mode = MODES[pic.shape[2]]
    im = Image.fromarray(pic[..., 0] if mode == "L" else pic, mode=mode)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG"}.get(suffix) or Image.registered_extensions().get(suffix, "PNG")
    # JPEG at quality 95, as OpenCV (and so Real-ESRGAN) writes it; PIL's default 75 blurs SR detail
    im.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def _encode_deep(pic: np.ndarray, path: Path, codec: str) -> None:
    import av

    h, w, c = pic.shape
    big = codec == "png"  # PNG stores big-endian samples, FFmpeg's TIFF encoder little-endian
    pix = {1: "gray16", 2: "ya16", 3: "rgb48", 4: "rgba64"}[c] + ("be" if big else "le")
    ctx = av.CodecContext.create(codec, "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, pix
    if c == 2:  # PyAV has no from_ndarray for ya16: fill the plane, rows padded to line_size
        frame = av.VideoFrame(w, h, pix)
        plane = frame.planes[0]
        buf = np.zeros((h, plane.line_size // 2), ">u2" if big else "<u2")
        buf[:, :2 * w] = pic.reshape(h, 2 * w)
        plane.update(buf.tobytes())
    else:
        native = {1: "gray16le", 3: "rgb48le", 4: "rgba64le"}[c]
        frame = av.VideoFrame.from_ndarray(pic[..., 0] if c == 1 else pic, format=native)
        if native != pix:
            frame = frame.reformat(format=pix)
    with open(path, "wb") as fh:
        for packet in ctx.encode(frame) + ctx.encode(None):
            fh.write(bytes(packet))


def write_image(rgb: np.ndarray, path: str | Path) -> None:
    write_picture(rgb, path)


def output_fits(head: ImageHeader, suffix: str) -> str | None:
    """Why ``suffix`` cannot hold this picture as it is, or None."""
    suffix = suffix.lower()
    if head.channels in (2, 4) and suffix not in ALPHA_SUFFIXES:
        return f"{suffix} has no alpha channel (the input is {head.mode}); use .png, .tif or .webp"
    return None


def rgb_to_ycbcr(rgb: np.ndarray, peak: float = 255.0) -> np.ndarray:
    """RGB (..., 3) with values 0..peak (uint8: 255, uint16: 65535) -> float32 YCbCr
    (..., 3) in [0, 1] (full-range BT.601)."""
    x = rgb.astype(np.float64) / peak
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
