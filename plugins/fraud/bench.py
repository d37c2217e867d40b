"""``gpuforge bench fraud``: this HDBSCAN (exact and approx) against the ``hdbscan`` and
``fast_hdbscan`` libraries on the same data in one process, plus agreement numbers.

Data: ``blobs(n, d, noise)``: ``make_blobs`` with 10 centres (std 1, centre box +-10,
``random_state=0``) for the rows that are not noise, plus uniform noise over the
bounding box. Rows: 100k x 8 with 5% noise and 50k x 32 with 10% noise (the shapes of
issue 20). Parameters: min_cluster_size 50, min_samples 10 (hdbscan convention).

Each row carries the machine (CPU model, SIMD extensions, cores, load average) and, for
approx mode, the recall of its kNN graph (1000 sampled rows).
``mst_weights_identical_to_hdbscan_exact`` says whether our tree's sorted weights equal
those of hdbscan's exact tree (``approx_min_span_tree=False``) bit for bit.

Environment knobs (``gpuforge bench`` has no per-plugin options; also in the README):
``GPUFORGE_FRAUD_BENCH_SIZES`` (e.g. ``100000x8,50000x32@0.1``:
rows x columns [@ noise share, default 0.05]), ``GPUFORGE_FRAUD_BENCH_1M=0`` to skip the
1M x 8 approx run, ``GPUFORGE_FRAUD_BENCH_HDBSCAN_EXACT=0`` to skip hdbscan with
``approx_min_span_tree=False``.
"""
from __future__ import annotations

import os
import time

MCS, MS = 50, 10
DEFAULT_SHAPES = ((100_000, 8, 0.05), (50_000, 32, 0.10))
QUICK_SHAPES = ((20_000, 8, 0.05),)
RECALL_ROWS = 1000
BASELINE_MST = {
    "hdbscan": "approximate: approx_min_span_tree=True (its default) at <= 60 columns",
    "hdbscan_exact": "exact: approx_min_span_tree=False",
    "fast_hdbscan": "exact",
}
"""What MST each baseline builds. Exact mode's agreement target is ``hdbscan_exact``:
hdbscan's default Boruvka stops early and returns a heavier, approximate tree at <= 60
columns (at 20k x 16: MST weight +0.006%, ARI 0.9967 against its own exact run). Even two
exact MSTs need not give ARI 1.0: mutual reachability has many equal weights, and
hdbscan's own exact algorithms (prims_kdtree, boruvka_kdtree with
approx_min_span_tree=False) pick different tied edges, at 20k x 16 ARI 0.99966 between
them with bit-identical sorted weights. Only Prim's order is copied here (above 60
columns); below, our Boruvka's weights are bit-identical (``mst_weights_identical_to_
hdbscan_exact``) and its tied edges are its own."""


def blobs(n: int, d: int, seed: int = 0, noise: float = 0.05):
    import numpy as np
    from sklearn.datasets import make_blobs

    rng = np.random.default_rng(seed)
    m = int(round(n * (1 - noise)))
    X, y = make_blobs(n_samples=m, n_features=d, centers=10, cluster_std=1.0, center_box=(-10, 10),
                      random_state=seed)
    N = rng.uniform(X.min(0), X.max(0), size=(n - m, d))
    return np.vstack([X, N]), np.concatenate([y, np.full(n - m, -1)])


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def agreement(a, b):
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score(a, b)), float(np.mean((a == -1) == (b == -1)))


def same_weights(ours, theirs) -> bool:
    """Do two MSTs ((u, v, w) arrays) have bit-identical sorted weights? (Mutual
    reachability has many equal weights, so two exact MSTs may pick different edges of
    the same weight; their weights, and so every single-linkage height, still agree.)"""
    import numpy as np

    return bool(np.array_equal(np.sort(np.asarray(ours[2], np.float64)), np.sort(np.asarray(theirs[2], np.float64))))


def machine() -> dict:
    """CPU model, SIMD extensions, cores and load average of this run."""
    from gpuforge.hardware import cpu

    if hasattr(cpu, "bench_machine"):
        return cpu.bench_machine()
    return {"cpu": cpu.cpu_model(), "cores": cpu.logical_cores(), "load_1m": round(os.getloadavg()[0], 2)}


def shapes(quick: bool):
    spec = os.environ.get("GPUFORGE_FRAUD_BENCH_SIZES")
    if not spec:
        return QUICK_SHAPES if quick else DEFAULT_SHAPES
    out = []
    for s in spec.split(","):
        size, _, noise = s.partition("@")
        n, d = (int(v) for v in size.split("x"))
        out.append((n, d, float(noise) if noise else 0.05))
    return out


def fast_hdbscan_baseline(X, warm) -> tuple[float, object] | str:
    """(seconds, labels) of fast_hdbscan on ``X`` (after a warm-up fit on ``warm``), or why
    there is no such row. Above 30 columns fast_hdbscan builds an NN-descent kNN graph with
    pynndescent, which is not one of our dependencies: that is said in the rows, not
    dropped silently."""
    try:
        import fast_hdbscan
    except ImportError:
        return "fast_hdbscan is not installed"
    try:
        fast_hdbscan.HDBSCAN(min_cluster_size=MCS, min_samples=MS).fit(warm)
        t, f = _timed(lambda: fast_hdbscan.HDBSCAN(min_cluster_size=MCS, min_samples=MS).fit(X))
    except ImportError as e:
        if "pynndescent" in str(e):   # its own message speaks of metrics, not of columns
            return (f"fast_hdbscan at {X.shape[1]} columns (over 30) builds its kNN graph with pynndescent, "
                    "which is not installed")
        return f"fast_hdbscan at {X.shape[1]} columns: {str(e).splitlines()[0]}"
    return t, f.labels_


def run(ctx):
    from gpuforge.core.bench import row
    from gpuforge.plugins.fraud.hdbscan import hdbscan

    do_1m = os.environ.get("GPUFORGE_FRAUD_BENCH_1M", "0" if ctx.quick else "1") == "1"
    do_hexact = os.environ.get("GPUFORGE_FRAUD_BENCH_HDBSCAN_EXACT", "1") == "1"
    rows = []
    for n, d, noise in shapes(ctx.quick):
        warm, _ = blobs(2000, d)
        hdbscan(warm, MCS, MS, mode="exact")  # compile (cached on disk after the first run)
        hdbscan(warm, MCS, MS, mode="approx")
        X, _ = blobs(n, d, noise=noise)
        name = f"hdbscan {n}x{d} noise {noise:g} mcs{MCS} ms{MS}"
        at = machine()
        t_exact, ex = _timed(lambda: hdbscan(X, MCS, MS, mode="exact"))
        t_approx, ap = _timed(lambda: hdbscan(X, MCS, MS, mode="approx", recall_rows=RECALL_ROWS))
        base = {}
        try:
            import hdbscan as hdb

            t_h, h = _timed(lambda: hdb.HDBSCAN(min_cluster_size=MCS, min_samples=MS).fit(X))
            base["hdbscan"] = (t_h, h.labels_)
            if do_hexact:
                t_he, he = _timed(lambda: hdb.HDBSCAN(min_cluster_size=MCS, min_samples=MS, approx_min_span_tree=False,
                                                      gen_min_span_tree=True).fit(X))
                mst = he.minimum_spanning_tree_._mst
                base["hdbscan_exact"] = (t_he, he.labels_, (mst[:, 0], mst[:, 1], mst[:, 2]))
        except ImportError:
            pass
        skipped = {}
        fast = fast_hdbscan_baseline(X, warm)
        if isinstance(fast, str):
            skipped["fast_hdbscan"] = fast
        else:
            base["fast_hdbscan"] = fast
        ari_ax = agreement(ex.labels, ap.labels)
        for impl, secs, res in (("gpuforge exact", t_exact, ex), ("gpuforge approx", t_approx, ap)):
            extra = {"n_clusters": res.n_clusters, "mst_weight": res.mst_weight, **at, **(
                     {"baselines_skipped": skipped} if skipped else {}),
                     "kernels": res.info["kernels"], "stages_s": {k: round(v, 3) for k, v in res.timings.items()}}
            if impl.endswith("approx"):
                extra["ari_vs_exact"], extra["noise_agreement_vs_exact"] = ari_ax
                extra["knn_recall"] = res.info.get("knn_recall")
            for bname, b in base.items():
                a, na = agreement(b[1], res.labels)
                extra[f"ari_vs_{bname}"] = a
                extra[f"noise_agreement_vs_{bname}"] = na
                if len(b) > 2:
                    w = float(b[2][2].sum())
                    extra["mst_rel_err_vs_hdbscan_exact"] = abs(res.mst_weight - w) / w
                    if impl.endswith("exact"):
                        extra["mst_weights_identical_to_hdbscan_exact"] = same_weights(res.mst, b[2])
            for bname, b in base.items():
                rows.append(row(name, impl, secs, baseline=bname, baseline_seconds=b[0], ctx=ctx,
                                baseline_mst=BASELINE_MST.get(bname), **extra))
            if not base:
                rows.append(row(name, impl, secs, ctx=ctx, **extra))
    if do_1m:
        X, _ = blobs(1_000_000, 8)
        import resource

        at = machine()
        t, res = _timed(lambda: hdbscan(X, MCS, MS, mode="approx", recall_rows=RECALL_ROWS))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        rows.append(row(f"hdbscan 1000000x8 noise 0.05 mcs{MCS} ms{MS}", "gpuforge approx", t,
                        n_clusters=res.n_clusters, knn=res.info["knn"], knn_recall=res.info.get("knn_recall"),
                        max_rss_bytes=rss, **at, stages_s={k: round(v, 3) for k, v in res.timings.items()}))
    return rows
