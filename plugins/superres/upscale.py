"""``gpuforge superres upscale``: images, folders of images and videos.

Three output layouts:

- ``--out FILE``: one image or video input, written to FILE;
- ``--out FOLDER``: several inputs or a folder; the tree is mirrored (a new folder,
  written whole or not at all);
- ``-o/--output FOLDER`` (Real-ESRGAN's habit): every result is ``<name>_<suffix>.<ext>``
  inside FOLDER, which may exist; each file is its own output (``--force`` to replace one).

Every input is checked (header, size, memory) before anything is written; outputs are
written to temporary siblings and moved into place only when all of them succeeded.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.core.log import get_logger

from .images import (ALPHA_SUFFIXES, DEEP_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES, ImageHeader, list_images,
                     output_fits, read_header, read_picture, write_picture)

log = get_logger("gpuforge.superres.upscale")
MIN_SIDE = 4
"""Smallest image side accepted: a 1x1 to 3x3 picture has nothing to super-resolve."""
EXTS = ("auto", "png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp")


@dataclass
class Item:
    src: Path
    kind: str  # "image" or "video"
    rel: Path | None  # the output, relative to the output folder (None: --out itself)
    header: ImageHeader | None = None


def _kind(path: Path) -> str:
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    return "image"


def out_size(h: int, w: int, outscale: float, video: bool = False) -> tuple[int, int]:
    """Output (height, width) for ``--outscale``: floor(side x outscale) as Real-ESRGAN's
    ``int()``; even for video (yuv420p)."""
    oh, ow = (max(1, int(math.floor(v * outscale + 1e-6))) for v in (h, w))
    if video:
        oh, ow = max(2, oh - oh % 2), max(2, ow - ow % 2)
    return oh, ow


def _check_size(head: ImageHeader, path: Path) -> None:
    if min(head.width, head.height) < MIN_SIDE:
        raise BadInputError(f"{path} is {head.width}x{head.height} pixels; "
                            f"super-resolution needs at least {MIN_SIDE}x{MIN_SIDE}")


class Plan:
    """What goes where: the inputs expanded (folders to their images), output names, checks."""

    def __init__(self, inputs: list[Path], out: Path | None, output_dir: Path | None, suffix: str | None,
                 ext: str):
        if out is not None and output_dir is not None:
            raise UsageError("give --out (a file, or a folder written whole) or -o/--output (a folder results are "
                             "added to), not both")
        if out is None and output_dir is None:
            raise UsageError("give --out PATH or -o/--output FOLDER")
        if not inputs:
            raise UsageError("give the inputs: INPUTS... or -i/--input (images, folders, videos)")
        ext = ext.lower().lstrip(".")
        if ext not in EXTS:
            raise UsageError(f"--ext {ext!r}: use one of {', '.join(EXTS)}")
        for p in inputs:
            if not p.exists():
                raise BadInputError(f"input not found: {p}")
        self.out, self.output_dir, self.ext = out, output_dir, ext
        kinds = [_kind(p) for p in inputs]
        self.single = out is not None and len(inputs) == 1 and kinds[0] != "folder"
        if self.single:
            if suffix is not None:
                raise UsageError("--suffix names files inside an output folder; with one input, --out is the file itself")
            kind, osfx = kinds[0], out.suffix.lower()
            if kind == "video" and osfx not in VIDEO_SUFFIXES:
                raise UsageError(f"--out {out}: a video input needs a video output (.mp4, .mkv, .webm, .avi, .mov)")
            if kind == "image" and osfx not in IMAGE_SUFFIXES:
                raise UsageError(f"--out {out}: an image input needs an image output (.png, .jpg, ...)")
            if kind == "image" and ext != "auto" and f".{ext}" != osfx and {ext, osfx[1:]} != {"jpg", "jpeg"}:
                raise UsageError(f"--ext {ext} but --out {out} ends in {osfx}; leave --ext out with --out FILE")
            self.items = [Item(inputs[0], kind, None)]
            return
        self.suffix = suffix if suffix is not None else ("out" if output_dir is not None else "")
        items: list[Item] = []
        for p, kind in zip(inputs, kinds):
            if kind == "folder":
                images = list_images(p)
                if not images:
                    raise BadInputError(f"folder {p} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
                # the folder's tree is mirrored: at the top when it is the only input, else under its name
                base = Path(p.name) if len(inputs) > 1 else Path()
                items += [Item(q, "image", base / q.relative_to(p)) for q in images]
            else:
                items.append(Item(p, kind, Path(p.name)))
        self.items = items

    def name(self, item: Item) -> Path:
        """The output path of a folder-layout item, relative to its folder."""
        rel = item.rel
        stem = rel.stem + (f"_{self.suffix}" if self.suffix else "")
        if item.kind == "video":
            return rel.with_name(stem + rel.suffix)
        sfx = rel.suffix.lower() if self.ext == "auto" else f".{self.ext}"
        if sfx not in IMAGE_SUFFIXES:
            sfx = ".png"
        head = item.header
        if head is not None and head.channels in (2, 4) and sfx not in ALPHA_SUFFIXES:
            sfx = ".png"  # as Real-ESRGAN: a picture with alpha is written as PNG
        return rel.with_name(stem + sfx)


def _check_memory(head: ImageHeader, path: Path, scale: int, out_hw: tuple[int, int], outscale: float,
                  tile, tile_pad: int, precision: str, video: bool = False) -> None:
    """Refuse (exit 3) a picture whose upscale would not fit in the memory left, before
    decoding it; the message names the largest input of that shape that would fit."""
    from gpuforge.core.memory import available_memory

    from .estimate import upscale_memory

    avail = available_memory()
    if avail is None:
        return

    def need(h: int, w: int) -> float:
        oh, ow = out_size(h, w, outscale, video)
        return upscale_memory(h, w, head.channels, head.bits, scale, (oh, ow), tile, tile_pad, precision,
                              video)["total"]

    total = need(head.height, head.width)
    if total <= avail:
        return
    lo, hi = 0.0, 1.0  # the largest shrink factor of this shape that fits
    for _ in range(30):
        mid = (lo + hi) / 2
        h, w = max(1, int(head.height * mid)), max(1, int(head.width * mid))
        lo, hi = (mid, hi) if need(h, w) <= avail else (lo, mid)
    fit = f"{int(head.width * lo)}x{int(head.height * lo)}"
    raise BadInputError(
        f"{path}: upscaling {head.width}x{head.height} to {out_hw[1]}x{out_hw[0]} needs about {total / 1e9:.1f} GB, "
        f"more than the {avail / 1e9:.1f} GB of memory available; an input of up to {fit} fits "
        f"(or ask for a smaller --outscale)")


def upscale_all(run, inputs: list[Path], out: Path | None, upscaler, *, output_dir: Path | None = None,
                suffix: str | None = None, ext: str = "auto", outscale: float | None = None) -> dict:
    """Upscale every input as ``run``'s outputs; see the module doc for the layouts."""
    plan = Plan(inputs, out, output_dir, suffix, ext)
    r = upscaler.scale
    outscale = float(outscale) if outscale is not None else float(r)
    for p in inputs:
        run.input(p)
    # Headers first: size, mode and memory of every image are checked before anything is
    # decoded or written (a bad file must not cost the others' work).
    for it in plan.items:
        if it.kind == "image":
            it.header = read_header(it.src)
            _check_size(it.header, it.src)
            oh, ow = out_size(it.header.height, it.header.width, outscale)
            _check_memory(it.header, it.src, r, (oh, ow), outscale, upscaler.tile, upscaler.tile_pad,
                          upscaler.precision)
        else:
            from .video import frame_size

            w, h = frame_size(it.src)
            _check_memory(ImageHeader(w, h, 3, 8), it.src, r, out_size(h, w, outscale, True), outscale,
                          upscaler.tile, upscaler.tile_pad, upscaler.precision, video=True)
    if plan.single:
        it = plan.items[0]
        if it.header is not None:
            why = output_fits(it.header, out.suffix)
            if why:
                raise UsageError(f"--out {out}: {why}")
        targets = {id(it): run.output(out, kind="file")}
        folder = None
    elif out is not None:
        names = [plan.name(it) for it in plan.items]
        if len(set(names)) != len(names):
            raise UsageError("two inputs give the same output name; upscale them in separate runs")
        folder = run.output(out, kind="dir")
        targets = {id(it): n for it, n in zip(plan.items, names)}
    else:
        names = [plan.name(it) for it in plan.items]
        if len(set(names)) != len(names):
            raise UsageError("two inputs give the same output name; use --suffix or separate runs")
        folder = None
        targets = {id(it): run.output(output_dir / n, kind="file") for it, n in zip(plan.items, names)}
    for it in plan.items:
        if it.kind == "image" and it.header.bits == 16:
            sfx = (out if plan.single else plan.name(it)).suffix.lower()
            if sfx not in DEEP_SUFFIXES:
                log.warning("16-bit input written with 8 bits per channel (the format holds no more)",
                            input=str(it.src), format=sfx)

    results: list[dict] = []
    t0 = time.perf_counter()
    total = _work_units(plan)
    with run.progress(f"upscaling x{outscale:g} ({'frames' if total['videos'] else 'images'})",
                      total=total["units"]) as bar:
        for it in plan.items:
            dest = targets[id(it)]
            if folder is not None:
                path, shown = folder.tmp / dest, out / dest
                path.parent.mkdir(parents=True, exist_ok=True)
            else:
                path, shown = dest.tmp, dest.path
            if it.kind == "image":
                pic = read_picture(it.src)
                up = upscaler(pic)
                del pic
                oh, ow = out_size(it.header.height, it.header.width, outscale)
                if (oh, ow) != up.shape[:2]:
                    from .pipeline import resize_picture

                    up = resize_picture(up, oh, ow)
                write_picture(up, path)
                results.append({"input": str(it.src), "output": str(shown), "in_size": [it.header.width, it.header.height],
                                "out_size": [ow, oh], "mode": it.header.mode, "bits": it.header.bits})
                del up
                bar.advance()
            else:
                from .video import upscale_video

                info = upscale_video(it.src, path, r, upscaler, on_frame=bar.advance, outscale=outscale)
                results.append({"input": str(it.src), "output": str(shown), **info})
    run.note("results", results)
    return {"out": str(out if out is not None else output_dir), "items": results,
            "scale": r, "outscale": outscale, "seconds": round(time.perf_counter() - t0, 3)}


def _work_units(plan: Plan) -> dict:
    """Progress total: one unit per image, one per video frame (from the container's
    header, else duration x rate; None when a video says neither)."""
    from .video import frame_count

    units, videos = 0, 0
    for it in plan.items:
        if it.kind == "video":
            videos += 1
            n = frame_count(it.src)
            if n is None:
                return {"units": None, "videos": videos}
            units += n
        else:
            units += 1
    return {"units": units, "videos": videos}
