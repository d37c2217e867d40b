"""Results on stdout: JSON with ``--json``, readable text otherwise.

Logs and progress go to stderr; stdout carries only the result, so
``gpuforge ... --json | jq`` works in batch jobs.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

from gpuforge.core.context import get_context


def _default(obj: Any):
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _clean(obj: Any):
    """JSON has no NaN/inf: write them as null so every parser reads the result."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def to_json(result: Any) -> str:
    return json.dumps(_clean(json.loads(json.dumps(result, default=_default))), indent=2)


def emit(result: Any, human: str | Callable[[], None] | None = None, *, as_json: bool | None = None) -> None:
    """Print ``result``: as JSON when ``--json`` (global or the command's own) is on,
    otherwise ``human`` (a string, or a callable that prints with rich)."""
    if as_json is None:
        as_json = get_context().json
    if as_json:
        sys.stdout.write(to_json(result) + "\n")
        return
    if human is None:
        sys.stdout.write(to_json(result) + "\n")
    elif callable(human):
        human()
    else:
        sys.stdout.write(human.rstrip("\n") + "\n")


def print_table(rows: list[dict], columns: list[str] | None = None, title: str | None = None) -> None:
    """A plain rich table of ``rows`` on stdout. Cells, headers and the title are text,
    never rich markup: plugin summaries such as ``y[i] = sqrt(sum_j x[i, j]^2)`` would
    otherwise lose their ``[i]`` and ``[i, j]`` as unknown style tags."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    columns = columns or (list(rows[0].keys()) if rows else [])
    table = Table(title=None if title is None else escape(title), show_lines=False)
    for col in columns:
        table.add_column(escape(str(col)))
    for row in rows:
        table.add_row(*("" if row.get(c) is None else escape(str(row.get(c))) for c in columns))
    # Piped output (batch jobs, logs) gets a wide fixed width instead of 80 columns.
    Console(width=None if sys.stdout.isatty() else 200).print(table)
