"""``gpuforge bench fraud --scaling strong|weak --workers 1,2``: approx HDBSCAN on a local Dask cluster of 1, 2,
... workers against the one-process run on the same rows (issue 16's scaling evidence).

Each row: wall time per stage (cells, kNN, join step, forests, bridges, tree), the total,
the one-process time in the same process as the baseline, parallel efficiency
``T(1 worker) / (w * T(w workers))`` (strong scaling: fixed rows) or
``T(1 worker) / T(w workers)`` (weak scaling: rows grow with the workers), the bytes sent
to and from the workers, and whether labels and MST weight equal the one-process run.
A warm-up run on each cluster compiles the kernels in the workers first.

``--scaling memory`` instead measures peak RSS (``core.peakrss``, each step in a fresh
process) of the partitioned steps at ``--rows`` sessions:
``simulate_dataset`` and ``features_dataset`` (one file of ``SESSIONS_PER_FILE`` sessions
at a time), then approx ``fraud cluster`` of the feature folder (the n x d matrix and
the n x k graph) and, for comparison, of the same features as one parquet file.

Options of ``gpuforge bench`` (``BenchContext``): ``--scaling`` strong | weak | both | memory
(default strong), ``--workers`` (default ``1,2``), ``--rows`` (rows, or rows per worker for
weak scaling; default 200000, ``--quick`` 20000); 8 columns, 5% noise.
"""
from __future__ import annotations

import time

from gpuforge.plugins.fraud.bench import MCS, MS, blobs


def _workers(ctx) -> list[int]:
    return list(ctx.workers) or [1, 2]


def measure(X, workers: int, tasks: int | None = None):
    """(seconds, result) of the distributed run on a fresh local cluster of ``workers``,
    after a warm-up run on the first 20k rows."""
    import numpy as np

    from gpuforge.core.cluster import ClusterSpec, connect
    from gpuforge.plugins.fraud.hdbscan.distributed import hdbscan_distributed

    with connect(ClusterSpec("local", workers=workers)) as client:
        hdbscan_distributed([X[:20_000]], client, min_cluster_size=MCS, min_samples=MS, tasks=2 * workers)
        t0 = time.perf_counter()
        res = hdbscan_distributed(np.array_split(X, 2 * workers), client, min_cluster_size=MCS, min_samples=MS)
        return time.perf_counter() - t0, res


def _steps(d: str, n: int) -> dict[str, list[str]]:
    """Each step's arguments after the Python interpreter."""
    cli = ["-m", "gpuforge.cli", "--json", "fraud", "cluster"]
    approx = ["--mode", "approx", "--min-cluster-size", "50"]
    return {
        "simulate": ["-c", f"from gpuforge.plugins.fraud.partitions import simulate_dataset as f; f({d!r} + '/clicks', {n})"],
        "features": ["-c", "from gpuforge.plugins.fraud.partitions import features_dataset as f; "
                           f"f({d!r} + '/clicks', {d!r} + '/feats')"],
        "cluster folder": [*cli, f"{d}/feats", "--out", f"{d}/labels", *approx],
        "to one file": ["-c", "import pandas as pd, pathlib; pd.concat([pd.read_parquet(p) for p in "
                              f"sorted(pathlib.Path({d!r} + '/feats').glob('*.parquet'))]).to_parquet({d!r} + '/f.parquet')"],
        "cluster one file": [*cli, f"{d}/f.parquet", "--out", f"{d}/labels.parquet", *approx],
    }


def memory_rows(ctx, n: int) -> list[dict]:
    import subprocess
    import tempfile

    from gpuforge.core.bench import row
    from gpuforge.core.peakrss import run_measured
    from gpuforge.core.safepath import python_argv

    rows = []
    with tempfile.TemporaryDirectory(prefix="gpuforge-fraud-scale-") as d:
        for step, args in _steps(d, n).items():
            r = run_measured([*python_argv(), *args], stdout=subprocess.DEVNULL)
            if r["returncode"] != 0:
                raise RuntimeError(f"fraud scale step {step!r} failed (exit {r['returncode']})")
            if step == "to one file":
                continue
            rows.append(row(f"peak RSS, {n} sessions", step, r["seconds"], ctx=ctx, sessions=n,
                            peak_rss_mib=round(r["peak_rss_bytes"] / 2**20, 1)))
    return rows


def run(ctx):
    import numpy as np

    from gpuforge.core.bench import row
    from gpuforge.plugins.fraud.hdbscan import hdbscan

    kinds = ctx.scaling or "strong"
    kinds = ["strong", "weak"] if kinds == "both" else [kinds]
    base = ctx.rows or (20000 if ctx.quick else 200000)
    if kinds == ["memory"]:
        return memory_rows(ctx, base)
    rows = []
    for kind in kinds:
        t1 = None
        for w in _workers(ctx):
            n = base * w if kind == "weak" else base
            X, _ = blobs(n, 8)
            hdbscan(X[:20_000], min_cluster_size=MCS, min_samples=MS, mode="approx")  # compile here too
            t0 = time.perf_counter()
            ref = hdbscan(X, min_cluster_size=MCS, min_samples=MS, mode="approx")
            one = time.perf_counter() - t0
            secs, res = measure(X, w)
            if t1 is None:
                t1 = secs if w == 1 else None
            eff = None if t1 is None else (t1 / (w * secs) if kind == "strong" else t1 / secs)
            moved = res.info["bytes_moved"]
            rows.append(row(f"{kind} scaling, approx hdbscan {n}x8 mcs{MCS} ms{MS}", f"dask local:{w}", secs,
                            baseline="one process", baseline_seconds=one, ctx=ctx, workers=w, rows=n,
                            tasks=res.info["tasks"], parallel_efficiency=eff,
                            stage_seconds={k: round(v, 3) for k, v in res.timings.items()},
                            one_process_stage_seconds={k: round(v, 3) for k, v in ref.timings.items()},
                            bytes_moved=None, bytes_to_and_from_workers=int(sum(moved.values())),
                            bytes_by_stage=moved, labels_equal=bool(np.array_equal(res.labels, ref.labels)),
                            mst_weight_equal=res.mst_weight == ref.mst_weight))
    return rows
