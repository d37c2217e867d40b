"""The click that typer runs on. Typer >= 0.2x vendors click as ``typer._click``;
older typer depends on click. Our root group subclasses typer's group, so it must
use the same click classes typer does."""
from __future__ import annotations

try:
    from typer import _click as click  # noqa: F401
except ImportError:  # pragma: no cover - typer that still depends on click
    import click  # type: ignore[no-redef]  # noqa: F401

try:
    from typer._click.globals import get_current_context as current_context  # noqa: F401
except ImportError:  # pragma: no cover
    from click import get_current_context as current_context  # type: ignore[no-redef]  # noqa: F401
