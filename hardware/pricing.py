"""Price per GPU-hour for each GPU profile, from ``hardware/pricing.toml``.

The file holds dated snapshots of public list prices (see its header); planning shows
the date and provider next to every cost so nobody mistakes them for a quote.
"""
from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from gpuforge.core.errors import BadInputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PRICING_PATH = Path(__file__).resolve().parent / "pricing.toml"


@dataclass(frozen=True)
class Price:
    usd_per_hour: float
    provider: str
    date: str
    """Year-month (or date) the list price was observed."""
    note: str = ""
    region: str = ""
    instance: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _parse(gpu_id: str, entry: object, path: Path) -> Price:
    where = f"{path} [{gpu_id}]"
    if not isinstance(entry, dict):
        raise BadInputError(f"{where}: must be a table with usd_per_hour, provider and date")
    usd = entry.get("usd_per_hour")
    if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not math.isfinite(usd) or usd <= 0:
        raise BadInputError(f"{where}: usd_per_hour must be a positive number, got {usd!r}")
    for key in ("provider", "date"):
        if not (isinstance(entry.get(key), str) and entry[key].strip()):
            raise BadInputError(f"{where}: {key} is missing; every price needs its provider and date")
    unknown = set(entry) - {"usd_per_hour", "provider", "date", "note", "region", "instance"}
    if unknown:
        raise BadInputError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    return Price(usd_per_hour=float(usd), provider=entry["provider"], date=entry["date"],
                 note=entry.get("note", ""), region=entry.get("region", ""),
                 instance=entry.get("instance", ""))


@lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Price]:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise BadInputError(f"GPU pricing file {p}: cannot read it ({exc})") from None
    return {gpu_id: _parse(gpu_id, entry, p) for gpu_id, entry in data.items()}


def load_pricing(path: str | Path | None = None) -> dict[str, Price]:
    """Price per GPU id; ``path`` defaults to the built-in ``pricing.toml``."""
    return dict(_load(str(Path(path or PRICING_PATH).resolve())))
