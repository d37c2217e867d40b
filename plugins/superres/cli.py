"""``gpuforge superres ...``: ESPCN super-resolution for images and video.

Only typer and light gpuforge.core modules are imported here; torch, numpy and numba
are imported inside the commands.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from gpuforge.core.errors import UsageError
from gpuforge.core.run import Run, command

app = typer.Typer(help="ESPCN super-resolution (Shi et al. 2016) for images and video.", no_args_is_help=True)


def _check_scale(scale: int) -> None:
    if scale < 2 or scale > 8:
        raise UsageError(f"--scale {scale}: use an integer from 2 to 8 (built-in models: 2, 3, 4)")


@command(app, "train", outputs=True, seeded=True, threads=True)
def train(
    run: Run,
    data_dir: Path = typer.Argument(..., help="Folder of training photographs (PNG/JPEG...)."),
    scale: int = typer.Option(..., "--scale", help="Upscaling factor."),
    out: Path = typer.Option(..., "--out", help="Output model (.safetensors); best validation checkpoint."),
    epochs: int = typer.Option(20, "--epochs", help="Epochs (validation after each)."),
    epoch_steps: int = typer.Option(1000, "--epoch-steps", help="Optimizer steps per epoch."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total steps (overrides --epochs x --epoch-steps)."),
    patch: int = typer.Option(17, "--patch", help="LR patch size in pixels (HR patch = patch x scale)."),
    batch: int = typer.Option(64, "--batch", help="Patches per step."),
    channels: str = typer.Option("y", "--channels", help="y (luma only, as the paper) or rgb."),
    val: Optional[Path] = typer.Option(None, "--val", help="Folder of validation images (PSNR each epoch)."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Resume file (<out>.resume.safetensors) or a model to start from."),
    lr: float = typer.Option(1e-3, "--lr", help="Initial Adam learning rate (cosine decay to --lr-min)."),
    lr_min: float = typer.Option(1e-4, "--lr-min"),
) -> None:
    """Train ESPCN on DATA_DIR: random patches, flips/rotations, validation PSNR each epoch, best kept.

    A resume file <OUT>.resume.safetensors is kept beside the model (it survives an interrupted run)."""
    _check_scale(scale)
    if channels not in ("y", "rgb"):
        raise UsageError(f"--channels {channels!r}: use y or rgb")
    if patch < 4 or batch < 1 or epoch_steps < 1 or (steps is not None and steps < 1) or epochs < 1:
        raise UsageError("--patch must be >= 4 and --batch, --epochs, --epoch-steps, --steps >= 1")
    if out.suffix != ".safetensors":
        raise UsageError(f"--out {out}: the model is written as safetensors; name it *.safetensors")
    run.input(data_dir, "DATA_DIR")
    if val is not None:
        run.input(val, "--val folder")
    if resume is not None:
        run.input(resume, "--resume file")
    model_out = run.output(out, kind="file")
    from .train import is_resume_file, resume_path_for

    resume_file = run.state_file(resume_path_for(out), resuming=resume is not None and is_resume_file(resume))

    from .images import load_folder
    from .train import TrainConfig
    from .train import train as run_train

    cfg = TrainConfig(scale=scale, channels=channels, epochs=epochs, epoch_steps=epoch_steps, steps=steps,
                      patch=patch, batch=batch, lr=lr, lr_min=lr_min, seed=run.seed_or(0))
    train_images = load_folder(data_dir, "DATA_DIR")
    val_images = load_folder(val, "--val folder") if val is not None else None
    cmdline = "gpuforge superres " + " ".join(sys.argv[sys.argv.index("train"):] if "train" in sys.argv else [])
    with run.timed("train"), run.progress(f"training x{scale}", total=cfg.total_steps) as bar:
        result = run_train(run, cfg, train_images, val_images, model_out.tmp, resume_file, resume, cmdline, bar=bar)
    result["out"] = str(out)
    run.result(result, f"x{scale} model -> {out}: best validation PSNR ({channels}) {result['best_val_psnr']:.2f} dB "
                       f"after {result['steps']} steps")


@command(app, "photos", outputs=True, device=False)
def photos(
    run: Run,
    out: Path = typer.Option(..., "--out", help="Folder to write PNGs into."),
    split: str = typer.Option("train", "--split", help="train, val or heldout (see the plugin README)."),
) -> None:
    """Write scikit-image's bundled photographs of one split as PNG (the built-in models' data)."""
    from .images import SKIMAGE_SPLITS, skimage_photo, write_image

    if split not in SKIMAGE_SPLITS:
        raise UsageError(f"--split {split!r}: use one of {', '.join(SKIMAGE_SPLITS)}")
    import importlib.util

    if importlib.util.find_spec("skimage") is None:
        from gpuforge.core.errors import UnsupportedError

        raise UnsupportedError("scikit-image is not installed; pip install scikit-image (it carries the photos)")
    names = SKIMAGE_SPLITS[split]
    folder = run.output(out, kind="dir")
    for name in names:
        write_image(skimage_photo(name), folder.tmp / f"{name}.png")
    run.result({"out": str(out), "split": split, "images": names}, f"{len(names)} {split} photos -> {out}")


def _model_option():
    return typer.Option("builtin", "--model", help="builtin (shipped x2/x3/x4 weights) or an ESPCN .safetensors file.")


@command(app, "upscale", outputs=True, threads=True)
def upscale(
    run: Run,
    inputs: Optional[List[Path]] = typer.Argument(None, help="Image files, folders of images, or videos (mp4/mkv/webm/avi/mov)."),
    input_: Optional[List[Path]] = typer.Option(None, "-i", "--input", help="An input (repeatable), as Real-ESRGAN's -i."),
    scale: Optional[int] = typer.Option(None, "--scale", min=2, max=8,
                                        help="Network scale: 2, 3 or 4 for the built-ins (default: the model's, "
                                             "else the one nearest --outscale, else 3)."),
    outscale: Optional[float] = typer.Option(None, "-s", "--outscale", min=0.25, max=16.0,
                                             help="Final scale (any, e.g. 3.5): the nearest model scale, then a "
                                                  "bicubic resize."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output file (one image/video input) or a new folder "
                                                           "(several inputs, or a folder)."),
    output_dir: Optional[Path] = typer.Option(None, "-o", "--output", help="Folder to add <name>_<suffix>.<ext> "
                                                                            "results to (Real-ESRGAN's layout)."),
    suffix: Optional[str] = typer.Option(None, "--suffix", help="Appended to output names in folders "
                                                                 "(default 'out' with -o, none with --out)."),
    ext: str = typer.Option("auto", "--ext", help="Image format of folder outputs: auto (the input's), png, jpg, "
                                                  "webp, tif, bmp. Alpha is always written as PNG."),
    model: str = typer.Option("builtin", "--model", help="builtin (shipped x2/x3/x4 weights) or an ESPCN .safetensors file."),
    tile: Optional[int] = typer.Option(None, "-t", "--tile", min=0,
                                       help="LR tile size (bounded memory; the output is the same). Default: "
                                            "automatic above 512x512 LR pixels (up to 512, fitted to the width); "
                                            "0 never tiles."),
    tile_pad: int = typer.Option(8, "--tile-pad", min=4, max=64, help="LR context pixels around each tile (>= 4: seamless)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, fp16 or bf16 for the convolutions."),
    alpha_upsampler: str = typer.Option("bicubic", "--alpha-upsampler",
                                        help="bicubic, or espcn (the network on the alpha plane)."),
) -> None:
    """Upscale images, folders and videos with ESPCN; 16-bit, gray and alpha are kept."""
    if precision not in ("fp32", "fp16", "bf16"):
        raise UsageError(f"--precision {precision!r}: use fp32, fp16 or bf16")
    if alpha_upsampler not in ("bicubic", "espcn"):
        raise UsageError(f"--alpha-upsampler {alpha_upsampler!r}: use bicubic or espcn")

    from .espcn import pick_model
    from .pipeline import Upscaler, check_tile_args
    from .upscale import upscale_all

    check_tile_args(tile, tile_pad)
    net, meta, model_path = pick_model(model, scale, outscale)
    upscaler = Upscaler(net, tile=tile, tile_pad=tile_pad, precision=precision, device=run.torch_device,
                        alpha=alpha_upsampler)
    run.params["model"] = model_path
    result = upscale_all(run, list(inputs or []) + list(input_ or []), out, upscaler, output_dir=output_dir,
                         suffix=suffix, ext=ext, outscale=outscale)
    result.update(model=model_path)
    where = out if out is not None else output_dir
    run.result(result, f"upscaled {len(result['items'])} item(s) x{result['outscale']:g} -> {where} "
                       f"in {result['seconds']:.1f} s")


@command(app, "eval", outputs=True)
def eval_(
    run: Run,
    data_dir: Path = typer.Argument(..., help="Folder (or one file) of high-resolution photographs."),
    scale: int = typer.Option(..., "--scale", help="2, 3 or 4."),
    model: str = _model_option(),
    ssim: bool = typer.Option(True, "--ssim/--no-ssim", help="Also compute SSIM (slower)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Also write the result as JSON here (with a manifest)."),
) -> None:
    """Y-PSNR and SSIM (scale-pixel border cropped) of ESPCN vs bicubic, per image + mean."""
    _check_scale(scale)
    run.input(data_dir, "DATA_DIR")
    report = run.output(out, kind="file") if out is not None else None

    from gpuforge.core.output import print_table

    from .espcn import resolve_model
    from .evaluate import evaluate
    from .images import load_folder
    from .pipeline import Upscaler
    from .upscale import MIN_SIDE

    net, _meta, model_path = resolve_model(model, scale)
    images = load_folder(data_dir, "DATA_DIR")
    small = [n for n, im in images if min(im.shape[:2]) < MIN_SIDE * scale]
    if small:
        raise UsageError(f"{data_dir}/{small[0]} is too small for x{scale} evaluation (needs {MIN_SIDE * scale} pixels a side)")
    result = evaluate(images, Upscaler(net, device=run.torch_device), with_ssim=ssim)
    result["model"] = model_path
    if report is not None:
        from gpuforge.core.output import to_json

        report.tmp.write_text(to_json(result) + "\n")

    def human() -> None:
        rows = result["images"] + [{"image": "mean", **result["mean"]}]
        cols = ["image", "psnr_bicubic", "psnr_espcn", "gain_db"] + (["ssim_bicubic", "ssim_espcn"] if ssim else [])
        print_table(rows, cols, title=f"x{scale} Y-PSNR (dB) / SSIM, {scale}-pixel border cropped; model {model_path}")

    run.result(result, human)


@command(app, "bench", device=False)
def bench(
    run: Run,
    quick: bool = typer.Option(False, "--quick", help="Fewer repeats."),
    only: str = typer.Option("all", "--only", help="all, frame, tiling, shuffle, resize or tiles."),
) -> None:
    """fps of 640x360 -> 1920x1080 x3, ours vs a plain torch module; kernel timings."""
    from gpuforge.core.bench import BenchContext
    from gpuforge.core.output import print_table

    from . import bench as b

    parts = {"frame": b.frame_rows, "tiling": b.tiling_rows, "shuffle": b.shuffle_rows, "resize": b.resize_rows,
             "tiles": b.tile_rows}
    if only != "all" and only not in parts:
        raise UsageError(f"--only {only!r}: use all, {', '.join(parts)}")
    try:
        from gpuforge.hardware.cpu import cpu_profile

        prof = cpu_profile()
        cpu_peak = {"bandwidth_gbs": prof.get("memory_bandwidth_gbs"), "fp32_gflops": prof.get("fp32_gflops")}
    except Exception:  # the ratios stand without the peak shares
        cpu_peak = {}
    ctx = BenchContext(quick=quick, cpu_peak=cpu_peak)
    rows = []
    for name, fn in parts.items():
        if only in ("all", name):
            rows += fn(ctx)

    def human() -> None:
        cols = ["name", "impl", "seconds", "fps", "ratio", "gflops", "gbs"]
        fmt = [{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
        print_table(fmt, cols, title="superres benchmarks (ratio = baseline time / this time; > 1 is faster)")

    run.result({"rows": rows}, human)
