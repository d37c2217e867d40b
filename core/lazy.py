"""Resolve ``"module:attr"`` strings: plugins register names, not objects."""
from __future__ import annotations

import importlib
from typing import Any


def resolve(target: str) -> Any:
    """Import ``module`` and return ``attr`` (dotted attributes allowed)."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected 'module:attr', got {target!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
