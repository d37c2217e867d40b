"""``gpuforge bench scale`` rows of the fraud plugin (issue 15): peak RSS and wall time of
the partitioned pipeline against the number of sessions, each command a fresh process
measured by :func:`gpuforge.core.bench.measure_command` (its own peak RSS, what
``/usr/bin/time -v`` reports).

Per size, in order, on a folder of parquet files of 100k sessions each:

- ``fraud simulate --sessions N --out clicks`` (one file in memory at a time);
- ``fraud features clicks --out feats`` (one file at a time);
- ``fraud embed clicks --out emb --model M`` (inference, one file at a time; the model
  is trained first, not measured, on one file with ``--epochs 1 --max-train 5000``);
- ``fraud cluster feats --out labels --mode approx --min-cluster-size 25
  --min-samples 10``: the whole n x 31 matrix and the n x k graph, the one step whose
  memory grows with n by design.

Sizes: ``100k``, ``1M``, ``10M`` sessions (``--sizes`` picks; 10M takes about an hour
here, ~1.4 GB of clicks); ``--quick``: ``2k`` and ``20k``. Inputs are made in the bench
cache folder (``--cache-dir``) and deleted after each size unless ``--keep-inputs``.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from gpuforge.core.bench import BenchContext, measure_gpuforge
from gpuforge.core.log import get_logger

log = get_logger("fraud.scale_bench")

SIZES = {"2k": 2_000, "20k": 20_000, "100k": 100_000, "1M": 1_000_000, "10M": 10_000_000}
CLUSTER = ["--mode", "approx", "--min-cluster-size", "25", "--min-samples", "10"]


def _labels(ctx: BenchContext) -> list[str]:
    labels = ["2k", "20k"] if ctx.quick else ["100k", "1M", "10M"]
    if ctx.sizes:
        labels = [s for s in labels if s in ctx.sizes] or [s for s in SIZES if s in ctx.sizes]
    return labels


def _bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def _gpuforge(args: list[str], cwd: Path) -> dict:
    return measure_gpuforge(args, cwd)


def run(ctx: BenchContext) -> list[dict]:
    rows: list[dict] = []
    per_file = 1_000 if ctx.quick else 100_000
    for label in _labels(ctx):
        n = SIZES[label]
        d = ctx.cache(f"fraud/scale-{label}")
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        try:
            steps = [
                ("fraud simulate", None, ["fraud", "simulate", "--sessions", str(n), "--per-file", str(per_file),
                                          "--out", "clicks"]),
                ("fraud features", "clicks", ["fraud", "features", "clicks", "--out", "feats"]),
                ("fraud embed (inference)", "clicks", ["fraud", "embed", "clicks", "--out", "emb", "--model",
                                                       "train.parquet.model.safetensors"]),
                ("fraud cluster approx", "feats", ["fraud", "cluster", "feats", "--out", "labels", *CLUSTER]),
            ]
            for series, src, args in steps:
                if series.startswith("fraud embed"):  # the model it reuses: trained here, not measured
                    first = sorted((d / "clicks").glob("*.parquet"))[0]
                    _gpuforge(["fraud", "embed", str(first), "--out", "train.parquet", "--epochs", "1",
                               "--max-train", "5000"], d)
                r = _gpuforge(args, d)
                res = r["result"]
                extra = {k: res[k] for k in ("events", "n_clusters", "noise", "dim", "files") if k in res}
                rows.append({"name": series, "impl": "per file" if series != "fraud cluster approx" else "one matrix",
                             "series": series, "size_label": label, "size": n,
                             "input_bytes": _bytes(d / src) if src else None,
                             "peak_rss_bytes": r["peak_rss_bytes"], "peak_rss_mib": round(r["peak_rss_bytes"] / 2**20, 1),
                             "seconds": round(r["seconds"], 2), "load_avg": r["load_avg"], **extra})
                log.info(f"{series}, {label} sessions: {r['seconds']:.0f} s, peak RSS {r['peak_rss_bytes'] / 2**30:.2f} GiB")
        finally:
            if not ctx.keep_inputs:
                shutil.rmtree(d, ignore_errors=True)
    return rows
