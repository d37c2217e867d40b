"""Python API of the fraud plugin: cluster a table, keep the fitted model, and score new
rows (sessions' features) against it, as ``hdbscan.approximate_predict`` does.

    from gpuforge.plugins.fraud import api
    api.score("new_features.parquet", "model/")   # DataFrame: id, label, probability

A model folder (``fraud cluster --save-model DIR``) holds ``model.safetensors``: the
standardized training rows, their core distances, labels and the lambda at which each
leaves the condensed tree, each selected cluster's birth and largest lambda, the
columns' mean and scale, and a JSON config in the header metadata (columns, id column,
min_samples). Nothing in it is executed when read.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpuforge.core.errors import BadInputError

MODEL_FORMAT = "gpuforge.fraud.cluster-model/1"
MODEL_FILE = "model.safetensors"
_TENSORS = ("X", "core", "labels", "point_lambda", "birth_lambda", "max_lambda", "mean", "scale")


@dataclass
class ClusterModel:
    X: np.ndarray
    """Standardized training rows (the clustered ones)."""
    core: np.ndarray
    labels: np.ndarray
    point_lambda: np.ndarray
    birth_lambda: np.ndarray
    max_lambda: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    columns: list[str]
    id_column: str | None
    min_samples: int

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        meta = {"columns": [str(c) for c in self.columns], "id_column": self.id_column,
                "min_samples": int(self.min_samples)}
        save_file({k: np.ascontiguousarray(getattr(self, k)) for k in _TENSORS}, str(folder / MODEL_FILE),
                  metadata={"format": MODEL_FORMAT, "config": json.dumps(meta)})

    def predict(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(label, probability) of each row (raw, unstandardized; finite): its nearest
        training row in mutual reachability decides, and a row too far away for that
        row's cluster (lambda below the cluster's birth) is noise (-1)."""
        from sklearn.neighbors import NearestNeighbors

        Q = (np.asarray(rows, np.float64) - self.mean) / self.scale
        ms = max(1, min(self.min_samples, len(self.X)))
        k = min(len(self.X), 2 * ms)
        dist, idx = NearestNeighbors(n_neighbors=k).fit(self.X).kneighbors(Q)
        core_q = dist[:, ms - 1]
        mr = np.maximum(np.maximum(dist, core_q[:, None]), self.core[idx])
        j = np.argmin(mr, axis=1)  # first of equals: the nearer in plain distance
        nbr = idx[np.arange(len(Q)), j]
        d = mr[np.arange(len(Q)), j]
        with np.errstate(divide="ignore"):
            lam = np.where(d > 0, 1.0 / d, np.inf)
        lab = self.labels[nbr].copy()
        inside = lab >= 0
        # a row closer than its neighbour's own exit leaves the tree with it
        lam = np.where(inside & (self.point_lambda[nbr] <= lam), self.point_lambda[nbr], lam)
        c = np.where(inside, lab, 0)
        too_far = inside & (self.birth_lambda[c] >= lam)
        lab[too_far] = -1
        inside &= ~too_far
        mx = self.max_lambda[c]
        with np.errstate(invalid="ignore", divide="ignore"):
            prob = np.where(~inside, 0.0, np.where((mx > 0) & np.isfinite(mx), np.minimum(lam, mx) / mx, 1.0))
        return lab, prob


def fitted_model(Xs: np.ndarray, mean, scale, columns, id_column, res) -> ClusterModel:
    """The model of a :func:`gpuforge.plugins.fraud.hdbscan.hdbscan` result ``res`` on the
    standardized rows ``Xs``."""
    return ClusterModel(X=np.ascontiguousarray(Xs, np.float64), core=np.asarray(res.core_distances, np.float64),
                        labels=np.asarray(res.labels, np.int64),
                        point_lambda=np.asarray(res.info["point_lambda"], np.float64),
                        birth_lambda=np.asarray(res.info["birth_lambda"], np.float64),
                        max_lambda=np.asarray(res.info["max_lambda"], np.float64),
                        mean=np.asarray(mean, np.float64), scale=np.asarray(scale, np.float64),
                        columns=list(columns), id_column=id_column, min_samples=int(res.info["min_samples_used"]))


def load_model(folder: str | Path) -> ClusterModel:
    """A model folder written by ``fraud cluster --save-model``; anything else is refused
    with one line (BadInputError)."""
    from safetensors import safe_open

    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise BadInputError(f"model {folder}: no {MODEL_FILE} in it; pass the folder of `fraud cluster --save-model`")
    try:
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
            t = {k: f.get_tensor(k) for k in f.keys()}
        cfg = json.loads(meta.get("config", "null"))
    except Exception as exc:
        raise BadInputError(f"cannot read model {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from None
    if meta.get("format") != MODEL_FORMAT or not isinstance(cfg, dict) or set(t) != set(_TENSORS):
        raise BadInputError(f"model {path} is not a `fraud cluster --save-model` model")
    n, d = t["X"].shape if t["X"].ndim == 2 else (0, 0)
    if (n == 0 or len(cfg.get("columns", [])) != d or any(t[k].shape != (n,) for k in ("core", "labels", "point_lambda"))
            or t["mean"].shape != (d,) or t["scale"].shape != (d,) or not np.isfinite(t["X"]).all()):
        raise BadInputError(f"model {path}: its tensors are damaged or inconsistent; fit it again")
    return ClusterModel(**t, columns=cfg["columns"], id_column=cfg.get("id_column"),
                        min_samples=int(cfg.get("min_samples", 1)))


def score(rows, model_dir: str | Path):
    """Label and membership probability of each row of ``rows`` (a DataFrame or a table
    path: parquet/csv/npy holding the model's columns) against a fitted model: a pandas
    DataFrame with the id column (the model's, when ``rows`` has it, else ``row``),
    ``label`` (-1 noise, -2 NaN/inf row) and ``probability``."""
    import pandas as pd

    from gpuforge.plugins.fraud.tables import read_table

    model = load_model(model_dir)
    df = rows if isinstance(rows, pd.DataFrame) else read_table(rows, "table")
    missing = [c for c in model.columns if c not in df.columns]
    if missing:
        raise BadInputError(f"the rows lack the model's column(s) {', '.join(map(str, missing[:5]))}")
    X = df[model.columns].to_numpy(np.float64)
    finite = np.isfinite(X).all(1)
    labels = np.full(len(df), -2, np.int64)
    prob = np.zeros(len(df))
    if finite.any():
        labels[finite], prob[finite] = model.predict(X[finite])
    out = pd.DataFrame({"label": labels, "probability": prob})
    if model.id_column is not None and model.id_column in df.columns:
        out.insert(0, model.id_column, df[model.id_column].to_numpy())
    else:
        out.insert(0, "row", np.arange(len(df)))
    return out
