"""Expert features per session, named so that rules read naturally.

Events are ordered within a session by ``timestamp`` with a STABLE sort: unsorted input
is sorted, and events with duplicate timestamps keep their file order (their
inter-event time is 0). Rows with a missing session id or timestamp are rejected
(BadInputError); a missing amount counts as 0.
"""
from __future__ import annotations

from pathlib import Path

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.core.log import get_logger

log = get_logger("fraud.features")

REQUIRED = ("session_id", "timestamp", "event")
OPTIONAL = ("user_id", "device", "ip", "amount")
"""The click table's columns (``--column-map`` renames the user's own to these)."""


def parse_column_map(items: list[str] | None) -> dict[str, str]:
    """``["session_id=visit,timestamp=ts", ...]`` -> {their column: our column}."""
    out: dict[str, str] = {}
    for item in items or []:
        for pair in filter(None, (x.strip() for x in item.split(","))):
            ours, eq, theirs = pair.partition("=")
            ours, theirs = ours.strip(), theirs.strip()
            if not eq or not theirs or ours not in REQUIRED + OPTIONAL:
                raise UsageError(f"--column-map {pair!r}: use OURS=THEIRS with OURS one of "
                                 f"{', '.join(REQUIRED + OPTIONAL)} (e.g. session_id=visit_id)")
            out[theirs] = ours
    return out


def apply_column_map(df, mapping: dict[str, str], where: str):
    """The click table with the user's column names renamed to gpuforge's."""
    if not mapping:
        return df
    missing = [c for c in mapping if c not in df.columns]
    if missing:
        raise BadInputError(f"{where}: --column-map names column(s) {', '.join(missing)}, which it lacks; "
                            f"it has {', '.join(map(str, df.columns[:20]))}")
    clash = [ours for theirs, ours in mapping.items() if ours in df.columns and ours not in mapping]
    if clash:
        df = df.drop(columns=clash)  # the mapped column replaces a same-named one
    return df.rename(columns=mapping)


def read_event_map(path: str | Path | None) -> dict[str, str] | None:
    """``--event-map FILE``: the user's event names -> gpuforge page groups (or pages).

    JSON (``{"their_event": "payment", ...}``) or CSV with columns ``event,group``. A
    value is a group name of :data:`simulate.GROUPS` or one of :data:`simulate.PAGES`."""
    import json

    from gpuforge.plugins.fraud.simulate import GROUPS, PAGES

    if path is None:
        return None
    path = Path(path)
    where = f"--event-map {path}"
    if not path.is_file():
        raise BadInputError(f"{where}: file not found")
    try:
        if path.suffix.lower() == ".json":
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
                raise ValueError('expected one object of "event": "group" strings')
            mapping = {str(k): v for k, v in raw.items()}
        elif path.suffix.lower() == ".csv":
            import pandas as pd

            t = pd.read_csv(path, dtype=str)
            if list(t.columns[:2]) != ["event", "group"]:
                raise ValueError("expected the columns event,group")
            mapping = dict(zip(t["event"].astype(str), t["group"].astype(str)))
        else:
            raise ValueError("use a .json or .csv file")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInputError(f"{where}: {str(exc).splitlines()[0]}") from None
    known = set(GROUPS) | set(PAGES)
    bad = sorted({v for v in mapping.values() if v not in known})
    if bad:
        raise BadInputError(f"{where}: unknown group(s) {', '.join(bad[:5])}; use one of {', '.join(GROUPS)} "
                            "(or a page name of the README's list)")
    return mapping


def event_groups(events, event_map: dict[str, str] | None):
    """Per event, its gpuforge group (None when it belongs to none): a gpuforge page name
    is in its group, and ``event_map`` sends the user's names to a group or a page. The
    event names themselves are kept (distinct-page counts, the embedding's vocabulary)."""
    from gpuforge.plugins.fraud.simulate import GROUPS

    group_of = {p: g for g, pages in GROUPS.items() for p in pages}
    group_of.update({g: g for g in GROUPS})
    table = {e: group_of.get(e) for e in group_of}
    for k, v in (event_map or {}).items():
        table[k] = group_of.get(v)
    ev = events.astype(str)
    return ev.map(table)


def warn_missing_groups(groups, where: str) -> list[str]:
    """Page groups that never occur (their features would be all zero): warned once."""
    from gpuforge.plugins.fraud.simulate import GROUPS

    seen = set(groups.dropna().unique())
    missing = [g for g in GROUPS if g not in seen]
    if missing:
        log.warning(f"{where}: page group(s) {', '.join(missing)} never occur, so their features are all zero; "
                    "map your event names to groups with --event-map FILE (see the fraud README)")
    return missing


def check_clicks(df, where: str):
    import pandas as pd

    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise BadInputError(f"{where}: column(s) {', '.join(missing)} missing; a click table needs "
                            "session_id, timestamp, event (and optionally user_id, device, ip, amount)")
    if not pd.api.types.is_numeric_dtype(df["timestamp"]):
        if pd.api.types.is_datetime64_any_dtype(df["timestamp"]):
            df = df.assign(timestamp=df["timestamp"].astype("int64") / 1e9)
        else:
            raise BadInputError(f"{where}: column timestamp is not numeric (seconds) or a datetime")
    if df["session_id"].isna().any() or df["timestamp"].isna().any():
        raise BadInputError(f"{where}: {int(df['session_id'].isna().sum() + df['timestamp'].isna().sum())} row(s) "
                            "with a missing session_id or timestamp; drop or fill them")
    import numpy as np

    if not np.isfinite(df["timestamp"].to_numpy(np.float64)).all():
        raise BadInputError(f"{where}: non-finite timestamps; fix or drop those rows")
    return df


def sort_events(df):
    """Stable (session, timestamp) order; returns the sorted frame and how many sessions
    arrived unsorted / held duplicate timestamps."""
    import numpy as np

    df = df.reset_index(drop=True)
    order = np.lexsort((np.arange(len(df)), df["timestamp"].to_numpy(), df["session_id"].to_numpy()))
    s = df["session_id"].to_numpy()[order]
    t = df["timestamp"].to_numpy()[order]
    same = s[1:] == s[:-1]
    dup_sessions = len(np.unique(s[1:][same & (t[1:] == t[:-1])]))
    ts_in = df["timestamp"].to_numpy()
    ss_in = df["session_id"].to_numpy()
    back = (ss_in[1:] == ss_in[:-1]) & (ts_in[1:] < ts_in[:-1])
    unsorted_sessions = len(np.unique(ss_in[1:][back]))
    return df.iloc[order].reset_index(drop=True), unsorted_sessions, dup_sessions


def compute_features(clicks, where: str = "clicks", event_map: dict[str, str] | None = None):
    """(features per session, info, the sorted click frame). ``event_map``: the user's
    event names -> gpuforge groups/pages (:func:`read_event_map`)."""
    import numpy as np
    import pandas as pd

    from gpuforge.plugins.fraud.simulate import GROUPS

    df = check_clicks(clicks, where)
    df, unsorted, dups = sort_events(df)
    for col, default in (("user_id", None), ("device", "unknown"), ("ip", "unknown"), ("amount", 0.0)):
        if col not in df.columns:
            df[col] = df["session_id"].astype(str) if col == "user_id" else default
    df["amount"] = pd.to_numeric(df["amount"], errors="coerce").fillna(0.0)
    sid = df["session_id"].to_numpy()
    t = df["timestamp"].to_numpy(np.float64)
    new = np.ones(len(df), bool)
    new[1:] = sid[1:] != sid[:-1]
    dt = np.zeros(len(df))
    dt[1:] = t[1:] - t[:-1]
    dt[new] = np.nan  # first event of a session has no gap
    df["_dt"] = dt
    hour = (t % 86400.0) / 3600.0
    df["_night"] = (hour < 6).astype(np.float64)
    ev = df["event"].astype(str)
    grp = event_groups(df["event"], event_map)
    missing_groups = warn_missing_groups(grp, where)
    failed = ev == "payment_failed"
    for k, v in (event_map or {}).items():
        if v == "payment_failed":
            failed |= ev == k
    g = df.groupby("session_id", sort=True)
    out = pd.DataFrame(index=g.size().index)
    out["n_events"] = g.size().astype(np.float64)
    out["duration_s"] = g["timestamp"].max() - g["timestamp"].min()
    for name in GROUPS:
        out[f"n_{name}_pages"] = (grp == name).groupby(df["session_id"]).sum().astype(np.float64)
    out["n_payment_failed"] = failed.groupby(df["session_id"]).sum().astype(np.float64)
    out["n_distinct_pages"] = g["event"].nunique().astype(np.float64)
    dtg = df.groupby("session_id")["_dt"]
    out["dt_mean_s"] = dtg.mean().fillna(0.0)
    out["dt_std_s"] = dtg.std(ddof=0).fillna(0.0)
    out["dt_min_s"] = dtg.min().fillna(0.0)
    out["dt_cv"] = (out["dt_std_s"] / out["dt_mean_s"].where(out["dt_mean_s"] > 0)).fillna(0.0)
    med = dtg.median()
    df["_reg"] = (np.abs(df["_dt"] - df["session_id"].map(med)) <= 0.1 * df["session_id"].map(med)).astype(float)
    df.loc[new, "_reg"] = np.nan
    out["dt_regularity"] = df.groupby("session_id")["_reg"].mean().fillna(0.0)
    out["night_share"] = g["_night"].mean()
    out["start_hour"] = (g["timestamp"].min() % 86400.0) / 3600.0
    out["amount_sum"] = g["amount"].sum()
    out["amount_max"] = g["amount"].max()
    pay = df["amount"] > 0
    out["n_payments"] = pay.groupby(df["session_id"]).sum().astype(np.float64)
    out["n_small_payments"] = (pay & (df["amount"] < 5)).groupby(df["session_id"]).sum().astype(np.float64)
    out["amount_mean_paid"] = (out["amount_sum"] / out["n_payments"].where(out["n_payments"] > 0)).fillna(0.0)
    # cross-session context: how shared are this session's device / ip / user
    first = df.loc[new, ["session_id", "user_id", "device", "ip", "timestamp"]].set_index("session_id")
    dev_users = df.groupby("device")["user_id"].nunique()
    ip_users = df.groupby("ip")["user_id"].nunique()
    user_devs = df.groupby("user_id")["device"].nunique()
    user_ips = df.groupby("user_id")["ip"].nunique()
    user_sessions = df.groupby("user_id")["session_id"].nunique()
    out["device_distinct_users"] = first["device"].map(dev_users).astype(np.float64).to_numpy()
    out["ip_distinct_users"] = first["ip"].map(ip_users).astype(np.float64).to_numpy()
    out["user_distinct_devices"] = first["user_id"].map(user_devs).astype(np.float64).to_numpy()
    out["user_distinct_ips"] = first["user_id"].map(user_ips).astype(np.float64).to_numpy()
    out["user_sessions"] = first["user_id"].map(user_sessions).astype(np.float64).to_numpy()
    # a device seen with this user for the first time, on a user with history
    pair_first = df.groupby(["user_id", "device"])["timestamp"].min()
    key = list(zip(first["user_id"], first["device"]))
    first_seen = pair_first.reindex(key).to_numpy()
    user_first = df.groupby("user_id")["timestamp"].min()
    out["new_device_for_user"] = ((first_seen >= first["timestamp"].to_numpy()) &
                                  (first["user_id"].map(user_first).to_numpy() < first["timestamp"].to_numpy())
                                  ).astype(np.float64)
    out = out.reset_index().rename(columns={"index": "session_id"})
    info = {"sessions": int(len(out)), "events": int(len(df)), "unsorted_sessions": int(unsorted),
            "sessions_with_duplicate_timestamps": int(dups), "groups_never_seen": missing_groups}
    return out, info, df


def session_labels(clicks):
    """Per session: is_fraud (max over events) and the fraud type, when the columns exist."""
    import pandas as pd

    cols = [c for c in ("is_fraud", "label") if c in clicks.columns]
    if not cols:
        return None
    g = clicks.groupby("session_id", sort=True)
    out = pd.DataFrame(index=g.size().index)
    if "is_fraud" in clicks.columns:
        out["is_fraud"] = g["is_fraud"].max().astype(int)
    else:
        out["is_fraud"] = (g["label"].first() != "normal").astype(int)
    if "label" in clicks.columns:
        out["fraud_type"] = g["label"].first()
    return out.reset_index().rename(columns={"index": "session_id"})
