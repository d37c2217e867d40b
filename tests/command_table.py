"""The table "product command -> kernels it dispatches", checked against the manifests
on the CPU (tests/test_command_kernels.py) and on simulated CUDA
(tests/test_command_kernels_cuda_sim.py), with the outputs of both runs compared.

Each entry builds its inputs in a folder, names the command's arguments (``{out}`` is
the output path), the kernels its manifest must list (every one of them, and no
other), and how to compare the CPU and CUDA outputs. Inputs are tiny: the simulator
runs each CUDA thread in Python.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path], None]
    """Writes the inputs into the folder."""
    args: list[str]
    """The command (after `gpuforge`), with {dir} and {out} placeholders."""
    kernels: frozenset[str]
    out: str = "out"
    """The output path under the folder (its manifest is read)."""
    compare: Callable[[Path, Path], None] | None = None
    """Checks the CPU output (first) against the CUDA output (second)."""
    global_args: list[str] = field(default_factory=list)

    def argv(self, folder: Path, out: Path) -> list[str]:
        return [a.format(dir=folder, out=out) for a in self.args]


def _image(folder: Path, h: int = 12, w: int = 16) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / "a.png")


def _rgba_image(folder: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (12, 16, 4), dtype=np.uint8), "RGBA").save(folder / "a.png")


def _gray16_image(folder: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 65535, (20, 20), dtype=np.uint16)).save(folder / "a.png")


def _same_image(tolerance: int) -> Callable[[Path, Path], None]:
    def check(a: Path, b: Path) -> None:
        from PIL import Image

        x = np.asarray(Image.open(a)).astype(int)
        y = np.asarray(Image.open(b)).astype(int)
        assert x.shape == y.shape
        # float32 convolutions give the same uint8 pixels up to rounding at .5 boundaries
        assert np.abs(x - y).max() <= tolerance, np.abs(x - y).max()

    return check


CASES: list[Case] = [
    Case("superres upscale", _image, ["superres", "upscale", "{dir}/a.png", "--scale", "3", "--out", "{out}"],
         frozenset({"superres.bicubic_resize", "superres.shuffle_ycbcr_rgb"}), out="up.png",
         compare=_same_image(1)),
    Case("superres upscale --tile", lambda d: _image(d, 20, 20),
         ["superres", "upscale", "{dir}/a.png", "--scale", "2", "--tile", "8", "--out", "{out}"],
         frozenset({"superres.bicubic_resize", "superres.shuffle_ycbcr_rgb", "superres.tile_split",
                    "superres.tile_stitch"}), out="up.png", compare=_same_image(1)),
    # RGBA with -s 2.5: x3 network, alpha and the final resize through the bicubic kernel
    Case("superres upscale RGBA -s 2.5", _rgba_image, ["superres", "upscale", "{dir}/a.png", "-s", "2.5", "--out", "{out}"],
         frozenset({"superres.bicubic_resize", "superres.shuffle_ycbcr_rgb"}), out="up.png", compare=_same_image(2)),
    # 16-bit gray: the network on the plane only (no chroma, no fused RGB kernel)
    Case("superres upscale 16-bit gray --tile", _gray16_image,
         ["superres", "upscale", "{dir}/a.png", "--scale", "2", "--tile", "8", "--out", "{out}"],
         frozenset({"superres.tile_split", "superres.tile_stitch"}), out="up.png", compare=_same_image(2)),
]
