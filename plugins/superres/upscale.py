"""``gpuforge superres upscale``: images, folders of images and videos; the output
mirrors the input. Every input is checked before anything is written, outputs are
written to temporary siblings and moved into place only when all of them succeeded.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.core.log import get_logger

from .images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, list_images, read_image, write_image

log = get_logger("gpuforge.superres.upscale")
MIN_SIDE = 4
"""Smallest image side accepted: a 1x1 to 3x3 picture has nothing to super-resolve."""


def _check_image(rgb: np.ndarray, path: Path) -> None:
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise BadInputError(f"{path} is {w}x{h} pixels; super-resolution needs at least {MIN_SIDE}x{MIN_SIDE}")


def _kind(path: Path) -> str:
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    return "image"


def _out_name(path: Path, kind: str) -> str:
    if kind == "image" and path.suffix.lower() not in IMAGE_SUFFIXES:
        return path.stem + ".png"
    return path.name


def plan_outputs(inputs: list[Path], out: Path) -> list[tuple[Path, str, Path | None]]:
    """(input, kind, relative output path or None for "out itself")."""
    for p in inputs:
        if not p.exists():
            raise BadInputError(f"input not found: {p}")
    kinds = [_kind(p) for p in inputs]
    if len(inputs) == 1:
        kind = kinds[0]
        if kind == "video" and out.suffix.lower() not in VIDEO_SUFFIXES:
            raise UsageError(f"--out {out}: a video input needs a video output (.mp4, .mkv, .webm, .avi, .mov)")
        if kind == "image" and out.suffix.lower() not in IMAGE_SUFFIXES:
            raise UsageError(f"--out {out}: an image input needs an image output (.png, .jpg, ...)")
        return [(inputs[0], kind, None)]
    names = [_out_name(p, k) for p, k in zip(inputs, kinds)]
    if len(set(names)) != len(names):
        raise UsageError("two inputs have the same name; upscale them in separate runs")
    return [(p, k, Path(n)) for p, k, n in zip(inputs, kinds, names)]


def upscale_all(run, inputs: list[Path], out: Path, upscaler, bar=None) -> dict:
    """Upscale every input into ``out`` (one file for one image/video, else a folder),
    as one output of ``run``: it appears whole when everything succeeded."""
    plan = plan_outputs(inputs, out)
    for p, _, _ in plan:
        run.input(p)
    single = len(plan) == 1 and plan[0][1] != "folder"
    dst = run.output(out, kind="file" if single else "dir")
    # Check every still image up front (cheap, and a bad file must not cost the others'
    # work); videos are validated when opened.
    for src, kind, _ in plan:
        if kind == "image":
            _check_image(read_image(src), src)
    results: list[dict] = []
    t0 = time.perf_counter()

    def one_image(src: Path, target: Path) -> None:
        rgb = read_image(src)
        _check_image(rgb, src)
        up = upscaler(rgb)
        write_image(up, target)
        results.append({"input": str(src), "output": str(target), "in_size": [rgb.shape[1], rgb.shape[0]],
                        "out_size": [up.shape[1], up.shape[0]]})
        if bar is not None:
            bar.advance()

    def one_folder(src: Path, target: Path) -> None:
        images = list_images(src)
        if not images:
            raise BadInputError(f"folder {src} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for p in images:
            _check_image(read_image(p), p)
        for p in images:
            rel = p.relative_to(src)
            t = target / rel.parent / _out_name(rel, "image")
            t.parent.mkdir(parents=True, exist_ok=True)
            one_image(p, t)

    def one_video(src: Path, target: Path) -> None:
        from .video import upscale_video

        info = upscale_video(src, target, upscaler.scale, upscaler, on_frame=bar.advance if bar is not None else None)
        results.append({"input": str(src), "output": str(target), **info})

    do = {"image": one_image, "folder": one_folder, "video": one_video}
    if single:
        src, kind, _ = plan[0]
        do[kind](src, dst.tmp)
        results[-1]["output"] = str(out)
    else:
        for src, kind, rel in plan:
            target = dst.tmp if rel is None else dst.tmp / rel
            if kind == "folder":
                target.mkdir(parents=True, exist_ok=True)
            do[kind](src, target)
        for r in results:
            r["output"] = str(out / Path(r["output"]).relative_to(dst.tmp))
    run.note("results", results)
    return {"out": str(out), "items": results, "seconds": round(time.perf_counter() - t0, 3)}
