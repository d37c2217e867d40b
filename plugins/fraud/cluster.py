"""``fraud cluster``: HDBSCAN on any numeric table.

Rows with NaN or +-inf in a used column are reported (count and first row numbers)
and skipped: they get label -2 ("not clustered"), probability 0 and outlier score NaN
in the output, which keeps one output row per input row.
"""
from __future__ import annotations

import re
from pathlib import Path

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.core.log import get_logger

log = get_logger("fraud.cluster")

ID_COLUMNS = ("session_id", "session", "id", "user_id")
"""Carried to the output as the row id when present (the first found), never clustered."""

_ID_NAME = re.compile(r"(?i)(.*[_\-\s.])?(id|ids|uuid|guid|key|index|idx)|unnamed: ?0")
_CAMEL_ID = re.compile(r".*[a-z0-9](Id|ID|Ids|IDs|Uuid|UUID|Key)")


def looks_like_id(name) -> bool:
    """``customer_id``, ``customerId``, ``order-uuid``, ``row index``, pandas' ``Unnamed: 0``
    (not ``paid`` or ``valid``: an id suffix follows a separator or a lower-case letter)."""
    name = str(name)
    return name in ID_COLUMNS or bool(_ID_NAME.fullmatch(name) or _CAMEL_ID.fullmatch(name))


def id_column_of(df, id_column: str | None, where: str) -> str | None:
    """The column carried to the output as each row's id: ``--id-column``, else the
    first of :data:`ID_COLUMNS`, else the first column named like an id, else None."""
    if id_column is not None:
        if id_column not in df.columns:
            raise BadInputError(f"{where}: --id-column {id_column} not found; available: "
                                f"{', '.join(map(str, df.columns[:20]))}")
        return id_column
    for key in ID_COLUMNS:
        if key in df.columns:
            return key
    return next((c for c in df.columns if looks_like_id(c)), None)


def numeric_matrix(df, columns: list[str] | None, where: str, id_column: str | None = None):
    """(X float64, used column names): by default every numeric column except the id
    column, columns named like ids (a warning names them) and labels."""
    import numpy as np
    import pandas as pd

    if columns:
        if id_column is not None and id_column in columns:
            raise UsageError(f"--id-column {id_column} is also in --columns; an id is carried, not clustered")
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise BadInputError(f"{where}: column(s) {', '.join(missing)} not found; "
                                f"available: {', '.join(map(str, df.columns[:20]))}")
        bad = [c for c in columns if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))]
        if bad:
            raise BadInputError(f"{where}: column(s) {', '.join(bad)} are not numeric; pick numeric columns with --columns")
        used = list(columns)
    else:
        numeric = [c for c in df.columns if (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]))
                   and c != id_column and not str(c).startswith("label") and str(c) != "is_fraud"]
        ids = [c for c in numeric if looks_like_id(c)]
        if ids:
            log.warning(f"{where}: column(s) {', '.join(map(str, ids))} look like ids and are not clustered "
                        "(name them in --columns to use them, or pass --id-column)")
        used = [c for c in numeric if c not in ids]
        if not used:
            raise BadInputError(f"{where} has no numeric columns; pass --columns")
    X = df[used].to_numpy(dtype=np.float64, copy=True)
    return X, used


def stack_releasing(parts: list):
    """np.vstack(parts), emptying ``parts`` as it goes: each part is freed once copied, so
    the parts and the stacked matrix are not both held in full (the output's pages are
    only touched as they are filled)."""
    import numpy as np

    out = np.empty((sum(len(p) for p in parts), parts[0].shape[1]), np.result_type(*parts))
    lo = 0
    for i in range(len(parts)):
        p, parts[i] = parts[i], None
        out[lo:lo + len(p)] = p
        lo += len(p)
        del p
    parts.clear()
    return out


def standard_scale(X):
    """(mean, scale) per column; a constant column's scale is 1, so it stays 0, not NaN."""
    mu = X.mean(0)
    sd = X.std(0)
    sd[~(sd > 0)] = 1.0
    return mu, sd


def standardize(X, in_place: bool = False):
    """(X - mean) / scale per column; ``in_place`` overwrites X (the same values, no copy)."""
    import numpy as np

    mu, sd = standard_scale(X)
    out = X if in_place and X.dtype.kind == "f" else None  # integers: a float64 copy
    out = np.subtract(X, mu, out=out)
    return np.divide(out, sd, out=out)


def cluster_matrix(X, *, min_cluster_size=5, min_samples=None, selection="eom", epsilon=0.0, mode="exact",
                   knn=None, where="input", knn_leaves=None, client=None, overwrite=False):
    """Validate, drop non-finite rows, standardize, run HDBSCAN. Returns (result, finite mask).
    With a Dask ``client`` approx mode runs on the cluster (same result,
    :mod:`.hdbscan.distributed`); exact mode runs here. ``overwrite``: X may be standardized
    in place (the caller no longer needs its values), so the matrix is held once, not
    twice (a C-ordered X without NaN/inf rows; otherwise the finite rows are copied)."""
    import numpy as np

    from gpuforge.plugins.fraud.hdbscan import hdbscan

    if selection not in ("eom", "leaf"):
        raise UsageError(f"--selection must be eom or leaf, got {selection!r}")
    if mode not in ("exact", "approx"):
        raise UsageError(f"--mode must be exact or approx, got {mode!r}")
    if min_cluster_size < 2:
        raise UsageError(f"--min-cluster-size must be >= 2, got {min_cluster_size}")
    if min_samples is not None and min_samples < 1:
        raise UsageError(f"--min-samples must be >= 1, got {min_samples}")
    if epsilon < 0:
        raise UsageError(f"--epsilon must be >= 0, got {epsilon}")
    if knn is not None and knn < 1:
        raise UsageError(f"--knn must be >= 1, got {knn}")
    if knn_leaves is not None and knn_leaves < 0:
        raise UsageError(f"--knn-leaves must be >= 0, got {knn_leaves}")
    finite = np.isfinite(X).all(1)
    nbad = int((~finite).sum())
    # X[finite] is a C-ordered copy, ours to overwrite; X itself only when it is laid out the
    # same (column sums depend on the layout: an F-ordered X would change the last bits)
    Xf = X if overwrite and not nbad and X.flags.c_contiguous else X[finite]
    if len(Xf) < max(min_cluster_size, 2):  # refused before the warning: one line in all
        raise BadInputError(f"{where}: {len(Xf)} usable rows" + (f" ({nbad} with NaN/inf)" if nbad else "")
                            + f" is fewer than --min-cluster-size {min_cluster_size}; lower it or pass more rows")
    if nbad:
        rows = np.flatnonzero(~finite)[:5].tolist()
        log.warning("%s: %d row(s) with NaN/inf skipped (label -2), e.g. rows %s", where, nbad, rows)
    if client is not None and mode == "approx" and knn_leaves != 0:
        from gpuforge.plugins.fraud.hdbscan.distributed import hdbscan_distributed

        workers = max(1, len(client.scheduler_info().get("workers", {})))
        res = hdbscan_distributed([standardize(Xf, in_place=True)], client, min_cluster_size=min_cluster_size,
                                  min_samples=min_samples, selection=selection, epsilon=epsilon, knn=knn,
                                  knn_cells=knn_leaves, tasks=2 * workers, log=log.debug)
        return res, finite
    if client is not None:
        log.warning("exact mode (and --knn-leaves 0) runs on this machine; approx mode uses the cluster")
    res = hdbscan(standardize(Xf, in_place=True), min_cluster_size=min_cluster_size, min_samples=min_samples,
                  selection=selection, epsilon=epsilon, mode=mode, knn=knn, log=log.debug, knn_cells=knn_leaves)
    return res, finite


def run_cluster(run, table, out, *, columns: list[str] | None = None, min_cluster_size: int = 5,
                min_samples: int | None = None, selection: str = "eom", epsilon: float = 0.0, mode: str = "exact",
                knn: int | None = None, knn_leaves: int | None = None, id_column: str | None = None,
                save_model: Path | None = None, client=None) -> dict:
    """``fraud cluster`` inside ``run`` (:class:`gpuforge.core.run.Run`): the kernels run on
    its device and its manifest records them. ``table``: a file or a folder of parquet
    files (read by row group, only the used columns and the id); ``out``: a .parquet/.csv
    file, or a folder (no suffix) written as one parquet file per input file. ``client``:
    a Dask client for approx mode (:mod:`.hdbscan.distributed`, the same result)."""
    import numpy as np
    import pandas as pd

    from gpuforge.plugins.fraud.partitions import PART_NAME, is_dataset, read_numeric
    from gpuforge.plugins.fraud.tables import out_suffix_ok, read_table, write_table

    out_p = Path(out)
    to_folder = out_p.suffix == ""
    if not to_folder:
        out_suffix_ok(out_p)
    run.input(table, "table")
    dst = run.output(out_p, kind="dataset" if to_folder else "file")
    model_dst = run.output(save_model, kind="dir") if save_model is not None else None
    with run.timed("read"):
        if is_dataset(table):
            parts, used, ids, id_col, sizes = read_numeric(table, columns, str(table), id_column)
            X = stack_releasing(parts)
        else:
            df = read_table(table)
            id_col = id_column_of(df, id_column, str(table))
            X, used = numeric_matrix(df, columns, str(table), id_col)
            ids = df[id_col].to_numpy() if id_col is not None else None
            sizes = [len(df)]
            del df
        if id_column is None and id_col is not None and id_col not in ID_COLUMNS:
            log.warning(f"{table}: column {id_col} looks like an id: carried to the output as each row's id, not "
                        "clustered (choose with --id-column / --columns)")
    with run.timed("hdbscan"):
        res, finite = cluster_matrix(X, min_cluster_size=min_cluster_size, min_samples=min_samples,
                                     selection=selection, epsilon=epsilon, mode=mode, knn=knn, where=str(table),
                                     knn_leaves=knn_leaves, client=client, overwrite=save_model is None)
    n = len(X)
    labels = np.full(n, -2, np.int64)
    prob = np.zeros(n)
    outl = np.full(n, np.nan)
    labels[finite], prob[finite], outl[finite] = res.labels, res.probabilities, res.outlier_scores
    outdf = pd.DataFrame({"label": labels, "probability": prob, "outlier_score": outl})
    if id_col is not None:
        outdf.insert(0, str(id_col), ids)
    else:
        outdf.insert(0, "row", np.arange(n))
    if to_folder:
        dst.tmp.mkdir(parents=True, exist_ok=True)
        for i, (lo, hi) in enumerate(zip(np.cumsum([0] + sizes[:-1]), np.cumsum(sizes))):
            outdf.iloc[lo:hi].to_parquet(dst.tmp / PART_NAME.format(i), index=False)
    else:
        write_table(outdf, dst.tmp)
    if model_dst is not None:
        from gpuforge.plugins.fraud.api import fitted_model

        mu, sd = standard_scale(X[finite])
        fitted_model((X[finite] - mu) / sd, mu, sd, used, id_col, res).save(model_dst.tmp)
    del X
    sizes = np.bincount(res.labels[res.labels >= 0]) if res.n_clusters else np.zeros(0, int)
    result = {
        "output": str(out_p), "rows": n, "clustered_rows": int(finite.sum()), "skipped_nonfinite": int((~finite).sum()),
        "columns": used, "id_column": id_col, "model": str(save_model) if save_model else None, "mode": mode, "n_clusters": int(res.n_clusters),
        "noise": int((res.labels == -1).sum()), "cluster_sizes": sizes.tolist()[:50],
        "min_cluster_size": min_cluster_size, "min_samples": res.info["min_samples_used"], "knn": res.info["knn"],
        "mst_weight": res.mst_weight, "timings_s": {k: round(v, 4) for k, v in res.timings.items()},
    }
    result["distributed"] = "tasks" in res.info
    if result["distributed"]:
        result["tasks"] = res.info["tasks"]
        result["bytes_moved"] = res.info["bytes_moved"]
    for k, v in res.timings.items():
        run.timings[f"hdbscan_{k}"] = round(v, 4)
    return result
