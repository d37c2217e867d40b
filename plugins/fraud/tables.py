"""Reading and writing the tables the fraud commands exchange (parquet, csv, .npy)."""
from __future__ import annotations

from pathlib import Path

from gpuforge.core.errors import BadInputError


def read_table(path: str | Path, what: str = "table"):
    """A pandas DataFrame from parquet, csv or .npy (columns c0, c1, ... for .npy)."""
    import numpy as np
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{what} not found: {path}")
    if path.is_dir():
        raise BadInputError(f"{what} {path} is a folder; pass a .parquet, .csv or .npy file")
    if path.stat().st_size == 0:
        raise BadInputError(f"{what} {path} is empty; pass a file with rows")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix in (".csv", ".txt"):
            df = pd.read_csv(path)
        elif suffix == ".npy":
            a = np.load(path, allow_pickle=False)
            if a.ndim == 1:
                a = a[:, None]
            if a.ndim != 2:
                raise BadInputError(f"{what} {path} holds a {a.ndim}-D array; pass a 2-D array (rows x columns)")
            df = pd.DataFrame(a, columns=[f"c{i}" for i in range(a.shape[1])])
        else:
            raise BadInputError(f"{what} {path}: unknown format {suffix or '(none)'}; use .parquet, .csv or .npy")
    except BadInputError:
        raise
    except Exception as exc:  # pyarrow / pandas / numpy parse errors
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(f"cannot read {what} {path}: {msg}") from None
    if len(df) == 0:
        raise BadInputError(f"{what} {path} has no rows")
    return df


def write_table(df, path: Path) -> None:
    """Write by the suffix of ``path`` (the caller provides an atomic temporary path)."""
    suffix = path.suffix.lower()
    if suffix.endswith("csv"):
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)


def out_suffix_ok(out: str | Path) -> None:
    s = Path(out).suffix.lower()
    if s not in (".parquet", ".csv"):
        raise BadInputError(f"output {out}: use a .parquet or .csv file name")
