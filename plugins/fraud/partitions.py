"""Partitioned parquet datasets: a folder of ``*.parquet`` files is one table, its rows
in file-name order (the layout Spark, Dask and pyarrow datasets write).

Reading goes by row group, and only the asked-for columns, so memory is bounded by one
row group of the raw table plus the columns kept. Writing a partitioned output writes
one file per piece into a temporary folder that is renamed into place at the end:
nothing half-written is ever visible under the output name.
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

from gpuforge.core.errors import BadInputError

PART_NAME = "part-{:05d}.parquet"


def is_dataset(path: str | Path) -> bool:
    """Is ``path`` a folder holding parquet files?"""
    p = Path(path)
    return p.is_dir() and any(p.glob("*.parquet"))


def files(path: str | Path, what: str = "dataset") -> list[Path]:
    p = Path(path)
    if not p.is_dir():
        raise BadInputError(f"{what} {p} is not a folder")
    out = sorted(f for f in p.glob("*.parquet") if f.is_file())
    if not out:
        raise BadInputError(f"{what} {p} holds no .parquet files")
    return out


def schema_names(path: str | Path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.ParquetFile(files(path)[0]).schema_arrow.names)


def row_groups(path: str | Path, columns: list[str] | None = None, what: str = "dataset") -> Iterator:
    """pandas DataFrames, one per row group of each file, in order."""
    import pyarrow.parquet as pq

    names = None
    for f in files(path, what):
        try:
            pf = pq.ParquetFile(f)
        except Exception as exc:  # pyarrow's parse errors
            raise BadInputError(f"cannot read {what} file {f}: {str(exc).splitlines()[0]}") from None
        if names is None:
            names = pf.schema_arrow.names
        elif pf.schema_arrow.names != names:
            raise BadInputError(f"{what} {path}: {f.name} has columns {pf.schema_arrow.names}, the first file {names}")
        if columns:
            missing = [c for c in columns if c not in names]
            if missing:
                raise BadInputError(f"{what} {path}: column(s) {', '.join(missing)} not found; "
                                    f"available: {', '.join(names[:20])}")
        for g in range(pf.num_row_groups):
            yield pf.read_row_group(g, columns=columns).to_pandas()


def read_numeric(path: str | Path, columns: list[str] | None, what: str = "dataset", id_column: str | None = None):
    """(parts, used columns, ids, id column, rows per file): each row group's used columns
    as a float64 array, and the id column (if any) as one array. Without ``columns`` the
    first row group decides which columns are used; later groups read only those."""
    import numpy as np
    import pyarrow.parquet as pq

    import pandas as pd

    from gpuforge.plugins.fraud.cluster import id_column_of, numeric_matrix

    names = schema_names(path)
    id_col = id_column_of(pd.DataFrame(columns=names), id_column, str(path))
    used = list(columns) if columns else None
    parts, ids, sizes = [], [], []
    for f in files(path, what):
        pf = pq.ParquetFile(f)
        sizes.append(pf.metadata.num_rows)
        for g in range(pf.num_row_groups):
            cols = None if used is None else used + ([id_col] if id_col and id_col not in used else [])
            missing = [c for c in (cols or []) if c not in pf.schema_arrow.names]
            if missing:
                raise BadInputError(f"{what} {path}: column(s) {', '.join(missing)} not found in {f.name}")
            df = pf.read_row_group(g, columns=cols).to_pandas()
            X, used = numeric_matrix(df, used, str(path), id_col)
            parts.append(X)
            if id_col is not None:
                ids.append(df[id_col].to_numpy())
            del df
    if sum(len(p) for p in parts) == 0:
        raise BadInputError(f"{what} {path} has no rows")
    return parts, used, (np.concatenate(ids) if ids else None), id_col, sizes


class DatasetWriter:
    """``with DatasetWriter(folder, force) as w: w.write(df)`` writes part-00000.parquet,
    part-00001.parquet, ... into a hidden temporary folder beside ``folder`` and renames
    it into place on success (removed on failure)."""

    def __init__(self, folder: str | Path, force: bool = False):
        self.folder = Path(folder)
        self.force = force
        self.n = 0
        self.tmp = self.folder.with_name(f".gpuforge-{self.folder.name}-{uuid.uuid4().hex[:8]}")

    def __enter__(self):
        if self.folder.exists() and not self.force:
            raise BadInputError(f"output {self.folder} exists; pass --force to replace it")
        self.tmp.mkdir(parents=True)
        return self

    def write(self, df) -> Path:
        p = self.tmp / PART_NAME.format(self.n)
        df.to_parquet(p, index=False)
        self.n += 1
        return p

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return False
        if self.folder.exists():
            old = self.folder.with_name(f".gpuforge-old-{self.folder.name}-{uuid.uuid4().hex[:8]}")
            os.replace(self.folder, old)
            os.replace(self.tmp, self.folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.tmp, self.folder)
        return False


# --- per-partition maps of simulate and features ------------------------------------------------

SESSIONS_PER_FILE = 100_000
"""Sessions per file of a simulated dataset (~1M events; one file is in memory at a time)."""


def simulate_dataset(folder: str | Path, sessions: int, fraud_rate: float = 0.02, seed: int = 0,
                     per_file: int = SESSIONS_PER_FILE, force: bool = False) -> dict:
    """A click stream of ``sessions`` sessions as a folder of parquet files, one
    independent site population per file (its own seed from ``seed``; users, devices and
    IPs prefixed with the file number, session ids offset), so each file is what
    ``simulate`` makes and memory is bounded by one file."""
    import numpy as np

    from gpuforge.plugins.fraud.simulate import simulate

    if sessions < 1 or per_file < 1:
        raise ValueError("sessions and per_file must be >= 1")
    seeds = np.random.SeedSequence(seed).spawn((sessions + per_file - 1) // per_file)
    events, by_label = 0, {}
    with DatasetWriter(folder, force) as w:
        for i, ss in enumerate(seeds):
            lo = i * per_file
            n = min(per_file, sessions - lo)
            df = simulate(n, fraud_rate, int(ss.generate_state(1)[0]))
            df["session_id"] += lo
            for col in ("user_id", "device", "ip"):
                df[col] = f"p{i}-" + df[col]
            w.write(df)
            events += len(df)
            for k, v in df.groupby("label")["session_id"].nunique().items():
                by_label[k] = by_label.get(k, 0) + int(v)
            del df
    return {"output": str(folder), "sessions": sessions, "events": events, "files": len(seeds),
            "sessions_by_label": by_label}


def _read_clicks_file(f: Path):
    import pandas as pd

    try:
        return pd.read_parquet(f)
    except Exception as exc:
        raise BadInputError(f"cannot read click dataset file {f}: {str(exc).splitlines()[0]}") from None


def _write_part(df, dst: Path) -> None:
    """One part file, renamed into place: a task that is rerun (its worker died) writes
    the same file again and never leaves a torn one."""
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, dst)


def features_file(f: Path, dst: Path, event_map=None) -> dict:
    """``compute_features`` of one click file into the part file ``dst`` (a pure function
    of its arguments: it runs here or as a Dask task)."""
    from gpuforge.plugins.fraud.features import compute_features

    feats, info, _ = compute_features(_read_clicks_file(f), str(f), event_map=event_map)
    _write_part(feats, dst)
    return {"info": info, "ids": feats["session_id"].to_numpy(),
            "columns": [c for c in feats.columns if c != "session_id"]}


def embed_file(f: Path, dst: Path, model: Path, device=None) -> dict:
    """``embed --model`` inference of one click file into the part file ``dst``."""
    import pandas as pd

    from gpuforge.plugins.fraud.embed import train_and_embed
    from gpuforge.plugins.fraud.features import check_clicks, sort_events

    df, _, _ = sort_events(check_clicks(_read_clicks_file(f), str(f)))
    sids, Z, _ = train_and_embed(df, reuse=Path(model), device=device)
    del df
    emb = pd.DataFrame(Z, columns=[f"e{i}" for i in range(Z.shape[1])])
    emb.insert(0, "session_id", sids)
    _write_part(emb, dst)
    return {"sessions": int(len(sids)), "dim": int(Z.shape[1])}


def map_files(fn, inputs: list[Path], folder: str | Path, *args, force: bool = False, client=None,
              check=None, on_done=None) -> list[dict]:
    """``fn(input_i, part_i, *args)`` for every input file, part ``i`` of the output folder,
    results in input order. Here, one file after another (memory: one file); with a Dask
    ``client``, one task per file on its workers (each worker holds the files it works
    on; input and output paths must be the same on the workers: a local cluster, or a
    shared filesystem). A worker that dies has its tasks rerun elsewhere. ``check(results)``
    may refuse the results before the folder is renamed into place; ``on_done()`` is
    called as each file finishes (a progress bar's ``advance``)."""
    tick = on_done or (lambda: None)
    with DatasetWriter(folder, force) as w:
        parts = [w.tmp / PART_NAME.format(i) for i in range(len(inputs))]
        if client is None:
            out = []
            for f, dst in zip(inputs, parts):
                out.append(fn(f, dst, *args))
                tick()
        else:
            from dask.distributed import as_completed

            futures = [client.submit(fn, f, dst, *args, pure=False) for f, dst in zip(inputs, parts)]
            for _ in as_completed(futures):
                tick()
            out = client.gather(futures)
        w.n = len(parts)
        if check is not None:
            check(out)
    return out


def features_dataset(clicks: str | Path, folder: str | Path, force: bool = False, event_map=None,
                     client=None, on_done=None) -> dict:
    """``compute_features`` file by file (a per-partition map, on Dask with ``client``):
    every session must lie in one file, and per-user/device/IP history is that file's (as
    ``simulate_dataset`` writes them). Memory: one input file and its features per
    process; the session ids of every file come back to check that none spans two."""
    import numpy as np

    def one_file_per_session(res: list[dict]) -> None:
        ids = np.concatenate([r["ids"] for r in res])
        if np.unique(ids).size != ids.size:
            raise BadInputError(f"click dataset {clicks}: some sessions span several files; "
                                "write each session's events into one file")

    res = map_files(features_file, files(clicks, "click dataset"), folder, event_map, force=force, client=client,
                    check=one_file_per_session, on_done=on_done)
    info_all = {k: sum(int(r["info"][k]) for r in res)
                for k in ("sessions", "events", "unsorted_sessions", "sessions_with_duplicate_timestamps")}
    return {"output": str(folder), **info_all, "features": res[0]["columns"]}


def embed_dataset(clicks: str | Path, folder: str | Path, model: str | Path, force: bool = False,
                  device=None, client=None, on_done=None) -> dict:
    """``embed --model`` inference file by file (a per-partition map, on Dask with
    ``client``): each file's sessions through the saved encoder, written as
    ``session_id, e0, e1, ...`` (the columns ``fraud embed`` writes). Memory: one input
    file and its embeddings per process."""
    res = map_files(embed_file, files(clicks, "click dataset"), folder, Path(model), device, force=force,
                    client=client, on_done=on_done)
    return {"output": str(folder), "sessions": sum(r["sessions"] for r in res), "dim": res[-1]["dim"],
            "model": str(model)}
