"""``gpuforge bench fraud``: this HDBSCAN (exact and approx) against the ``hdbscan`` and
``fast_hdbscan`` libraries on the same data in one process, plus agreement numbers.

Data: ``blobs(n, d)``: ``make_blobs`` with 10 centres (std 1, centre box +-10,
``random_state=0``) for 95% of the rows plus 5% uniform noise over the bounding box.
Parameters: min_cluster_size 50, min_samples 10 (hdbscan convention).

Environment knobs: ``GPUFORGE_FRAUD_BENCH_SIZES`` (e.g. ``100000x8,50000x32``),
``GPUFORGE_FRAUD_BENCH_1M=0`` to skip the 1M x 8 approx run, ``GPUFORGE_FRAUD_BENCH_HDBSCAN_EXACT=0``
to skip hdbscan with ``approx_min_span_tree=False`` (the MST-weight reference).
"""
from __future__ import annotations

import os
import time

MCS, MS = 50, 10


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


def run(ctx):

    from gpuforge.core.bench import row
    from gpuforge.plugins.fraud.hdbscan_core import hdbscan

    sizes = os.environ.get("GPUFORGE_FRAUD_BENCH_SIZES")
    if sizes:
        shapes = [tuple(int(v) for v in s.split("x")) for s in sizes.split(",")]
    else:
        shapes = [(20000, 8)] if ctx.quick else [(100000, 8), (50000, 32)]
    do_1m = os.environ.get("GPUFORGE_FRAUD_BENCH_1M", "0" if ctx.quick else "1") == "1"
    do_hexact = os.environ.get("GPUFORGE_FRAUD_BENCH_HDBSCAN_EXACT", "1") == "1"
    rows = []
    warm, _ = blobs(2000, 8)
    hdbscan(warm, MCS, MS, mode="exact")  # compile (cached on disk after the first run)
    hdbscan(warm, MCS, MS, mode="approx")
    for n, d in shapes:
        X, _ = blobs(n, d)
        name = f"hdbscan {n}x{d} mcs{MCS} ms{MS}"
        t_exact, ex = _timed(lambda: hdbscan(X, MCS, MS, mode="exact"))
        t_approx, ap = _timed(lambda: hdbscan(X, MCS, MS, mode="approx"))
        base = {}
        try:
            import hdbscan as hdb

            t_h, h = _timed(lambda: hdb.HDBSCAN(min_cluster_size=MCS, min_samples=MS).fit(X))
            base["hdbscan"] = (t_h, h.labels_)
            if do_hexact:
                t_he, he = _timed(lambda: hdb.HDBSCAN(min_cluster_size=MCS, min_samples=MS, approx_min_span_tree=False,
                                                      gen_min_span_tree=True).fit(X))
                base["hdbscan_exact"] = (t_he, he.labels_, float(he.minimum_spanning_tree_._mst[:, 2].sum()))
        except ImportError:
            pass
        try:
            import fast_hdbscan

            fast_hdbscan.HDBSCAN(min_cluster_size=MCS, min_samples=MS).fit(warm)
            t_f, f = _timed(lambda: fast_hdbscan.HDBSCAN(min_cluster_size=MCS, min_samples=MS).fit(X))
            base["fast_hdbscan"] = (t_f, f.labels_)
        except ImportError:
            pass
        ari_ax = agreement(ex.labels, ap.labels)
        for impl, secs, res in (("gpuforge exact", t_exact, ex), ("gpuforge approx", t_approx, ap)):
            extra = {"n_clusters": res.n_clusters, "mst_weight": res.mst_weight,
                     "stages_s": {k: round(v, 3) for k, v in res.timings.items()}}
            if impl.endswith("approx"):
                extra["ari_vs_exact"], extra["noise_agreement_vs_exact"] = ari_ax
            for bname, b in base.items():
                a, na = agreement(b[1], res.labels)
                extra[f"ari_vs_{bname}"] = a
                extra[f"noise_agreement_vs_{bname}"] = na
                if len(b) > 2:
                    extra["mst_rel_err_vs_hdbscan_exact"] = abs(res.mst_weight - b[2]) / b[2]
            for bname, b in base.items():
                rows.append(row(name, impl, secs, baseline=bname, baseline_seconds=b[0], ctx=ctx, **extra))
            if not base:
                rows.append(row(name, impl, secs, ctx=ctx, **extra))
    if do_1m:
        X, _ = blobs(1_000_000, 8)
        import resource

        t, res = _timed(lambda: hdbscan(X, MCS, MS, mode="approx"))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        rows.append(row(f"hdbscan 1000000x8 mcs{MCS} ms{MS}", "gpuforge approx", t, n_clusters=res.n_clusters,
                        knn=res.info["knn"], max_rss_bytes=rss,
                        stages_s={k: round(v, 3) for k, v in res.timings.items()}))
    return rows
