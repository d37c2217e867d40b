"""Global options of one ``gpuforge`` invocation, shared with every command.

The CLI's root callback fills the context; plugin commands read it with
:func:`get_context` instead of re-declaring ``--device``/``--backend``/``--seed``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Context:
    device: str = "auto"
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    backend: str | None = None
    """Forced kernel backend (``--backend`` / ``GPUFORGE_BACKEND``), or None to choose by data."""
    seed: int | None = None
    json: bool = False
    """Print the result as JSON on stdout."""
    log_format: str = "console"
    verbosity: int = 0
    """-1 quiet, 0 normal, 1+ verbose."""
    debug: bool = False
    strict_plugins: bool = False
    cluster: object = None
    """A :class:`gpuforge.core.cluster.ClusterSpec` (``--cluster``/``--scheduler``), or None."""


_current = Context(backend=os.environ.get("GPUFORGE_BACKEND") or None)


def get_context() -> Context:
    return _current


def set_context(ctx: Context) -> Context:
    global _current
    _current = ctx
    return ctx


def update_context(**changes) -> Context:
    return set_context(replace(_current, **changes))
