"""ESPCN (Shi et al. 2016, "Real-Time Single Image and Video Super-Resolution Using an
Efficient Sub-Pixel Convolutional Neural Network") and its weight files.

The network sees the low-resolution image only (section 2.1): conv 5x5 -> 64, tanh,
conv 3x3 -> 32, tanh, conv 3x3 -> C*r^2 (the sub-pixel convolution layer), and a
periodic shuffle (eq. 4, ``pixel_shuffle``) to the r-times larger image. Convolutions
pad by replicating the border, so the output has exactly r times the input size.
One addition to the paper: a linear 5x5 sub-pixel path from the input, initialised to
bicubic interpolation, so the network learns the residual over bicubic (section
"Deviations" of the README).

Weights are safetensors with string metadata: ``format=gpuforge-espcn``, ``scale``,
``channels`` (``y`` or ``rgb``), ``features``, and the ``command`` that trained them.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from gpuforge.core.errors import BadInputError

FORMAT = "gpuforge-espcn"
DATA_DIR = Path(__file__).with_name("data")
RECEPTIVE_RADIUS = 4
"""LR pixels on each side that influence one output pixel (5x5 + 3x3 + 3x3 convs)."""


def builtin_path(scale: int) -> Path:
    return DATA_DIR / f"espcn_x{scale}.safetensors"


class ESPCN(nn.Module):
    def __init__(self, scale: int, channels: int = 1, features: tuple[int, int] = (64, 32), skip: bool = True):
        super().__init__()
        f1, f2 = features
        self.scale, self.channels, self.features, self.skip = scale, channels, (f1, f2), skip
        # Replicate padding: borders behave like PIL's clipped filters, and a tile that
        # touches the image border sees the same padding as the whole image.
        pad = dict(padding_mode="replicate")
        self.conv1 = nn.Conv2d(channels, f1, 5, padding=2, **pad)
        self.conv2 = nn.Conv2d(f1, f2, 3, padding=1, **pad)
        self.conv3 = nn.Conv2d(f2, channels * scale * scale, 3, padding=1, **pad)
        # Paper: tanh activations; the last layer is linear before the shuffle.
        for conv in (self.conv1, self.conv2, self.conv3):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="tanh")
            nn.init.zeros_(conv.bias)
        nn.init.normal_(self.conv3.weight, std=1e-3)
        if skip:
            # A linear 5x5 sub-pixel path from the input, initialised to bicubic
            # interpolation (its polyphase form), so training starts from bicubic and
            # learns the residual. Not in the paper; it costs 25 r^2 MACs per LR pixel.
            self.skip_conv = nn.Conv2d(channels, channels * scale * scale, 5, padding=2, **pad)
            with torch.no_grad():
                self.skip_conv.weight.copy_(bicubic_polyphase(scale, channels))
                self.skip_conv.bias.zero_()

    def features_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Everything but the shuffle: (N, C, h, w) -> (N, C*r*r, h, w)."""
        h = torch.tanh(self.conv1(x))
        h = torch.tanh(self.conv2(h))
        out = self.conv3(h)
        return out + self.skip_conv(x) if self.skip else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.pixel_shuffle(self.features_forward(x), self.scale)


def cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """Keys' cubic convolution kernel (a = -0.5, PIL's and MATLAB's choice)."""
    x = x.abs()
    return torch.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                       torch.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, torch.zeros_like(x)))


def bicubic_polyphase(scale: int, channels: int) -> torch.Tensor:
    """(C*r*r, C, 5, 5) conv weights whose pixel shuffle is bicubic upscaling by r
    (interior pixels; HR pixel i samples LR position (i + 0.5) / r - 0.5)."""
    taps = torch.arange(-2, 3, dtype=torch.float64)
    w = torch.stack([cubic(taps - ((p + 0.5) / scale - 0.5)) for p in range(scale)])  # (r, 5)
    w = w / w.sum(dim=1, keepdim=True)
    k = w[:, None, :, None] * w[None, :, None, :]  # (r, r, 5, 5): [py, px, ky, kx]
    k = k.reshape(scale * scale, 5, 5)
    out = torch.zeros(channels * scale * scale, channels, 5, 5, dtype=torch.float64)
    for c in range(channels):
        out[c * scale * scale:(c + 1) * scale * scale, c] = k
    return out.float()


def save_model(model: ESPCN, path: str | Path, extra: dict | None = None) -> None:
    from safetensors.torch import save_file

    meta = {
        "format": FORMAT,
        "scale": str(model.scale),
        "channels": "y" if model.channels == 1 else "rgb",
        "features": json.dumps(list(model.features)),
        "skip": "bicubic" if model.skip else "none",
    }
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    state = {k: v.detach().contiguous().cpu().float() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=meta)


def load_model(path: str | Path) -> tuple[ESPCN, dict]:
    """Load an ESPCN safetensors file; one-line BadInputError if it is not one."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises several types for a bad header
        raise BadInputError(f"{path} is not a safetensors model file ({type(exc).__name__}); pass an ESPCN .safetensors") from None
    if meta.get("format") != FORMAT:
        raise BadInputError(f"{path} is not a gpuforge ESPCN model (metadata format={meta.get('format')!r})")
    for name, t in state.items():  # NaN/inf weights would upscale to black or garbage, silently
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise BadInputError(f"{path}: weight {name} holds NaN or inf values; the model is broken "
                                "(retrain it or pass another --model)")
    try:
        scale = int(meta["scale"])
        channels = 1 if meta.get("channels", "y") == "y" else 3
        features = tuple(int(f) for f in json.loads(meta.get("features", "[64, 32]")))
        if not 2 <= scale <= 8 or len(features) != 2 or min(features) < 1 or max(features) > 1024:
            raise ValueError("out of range")
    except (KeyError, ValueError, TypeError) as exc:
        raise BadInputError(f"{path}: its metadata (scale {meta.get('scale')!r}, features {meta.get('features')!r}) "
                            f"is not a valid ESPCN description ({exc})") from None
    model = ESPCN(scale, channels, features, skip=meta.get("skip", "none") == "bicubic")  # type: ignore[arg-type]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise BadInputError(f"{path}: weights do not match the ESPCN layout ({str(exc).splitlines()[0]})") from None
    model.eval()
    meta["scale"], meta["channels"] = scale, "y" if channels == 1 else "rgb"
    return model, meta


def resolve_model(spec: str, scale: int) -> tuple[ESPCN, dict, str]:
    """``builtin`` or a file path -> (model, metadata, description); the scale must match."""
    from gpuforge.core.errors import UsageError

    if spec == "builtin":
        path = builtin_path(scale)
        if scale not in (2, 3, 4):
            raise UsageError(f"--scale {scale}: built-in models exist for 2, 3 and 4")
        if not path.exists():
            raise BadInputError(f"built-in x{scale} model missing at {path}; reinstall gpuforge or pass --model FILE")
    else:
        path = Path(spec)
    model, meta = load_model(path)
    if meta["scale"] != scale:
        raise UsageError(f"model {path} is for x{meta['scale']}, not --scale {scale}; pass --scale {meta['scale']} or another --model")
    return model, meta, str(path)


BUILTIN_SCALES = (2, 3, 4)
DEFAULT_SCALE = 3


def nearest_scale(outscale: float, scales=BUILTIN_SCALES) -> int:
    """The model scale for ``--outscale``: the nearest one, the larger on a tie (a
    downsized larger upscale keeps more detail than an enlarged smaller one)."""
    return min(scales, key=lambda s: (abs(s - outscale), -s))


def pick_model(spec: str, scale: int | None, outscale: float | None) -> tuple[ESPCN, dict, str]:
    """``--model`` / ``--scale`` / ``--outscale`` -> (model, metadata, description).
    The scale is ``--scale``, else the model file's, else the built-in nearest
    ``--outscale``, else 3; a model file at another scale than ``--scale`` is a usage error."""
    if scale is None:
        if spec != "builtin":
            model, meta = load_model(Path(spec))
            return model, meta, spec
        scale = nearest_scale(outscale) if outscale is not None else DEFAULT_SCALE
    return resolve_model(spec, scale)
