"""User configuration: ``$XDG_CONFIG_HOME/gpuforge/config.toml`` (``~/.config`` default).

```toml
[plugins]
disabled = ["radiance"]
```
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from gpuforge.core.errors import BadInputError
from gpuforge.core.tomlread import read_toml


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gpuforge"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gpuforge"


def config_path() -> Path:
    return config_dir() / "config.toml"


@lru_cache(maxsize=None)
def _load(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        return {}
    data = read_toml(p, "config file")
    disabled = data.get("plugins", {}).get("disabled", [])
    if not isinstance(disabled, list) or not all(isinstance(x, str) for x in disabled):
        raise BadInputError(f"config file {p}: [plugins] disabled must be a list of plugin names")
    return data


def load_config() -> dict[str, Any]:
    return _load(str(config_path()))


def env_list(name: str) -> list[str] | None:
    """A comma-separated environment variable as a list; None when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]
