"""Read TOML with one clear error on a malformed file."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from gpuforge.core.errors import BadInputError


def read_toml(path: str | Path, what: str = "TOML file") -> dict[str, Any]:
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise BadInputError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise BadInputError(f"{what} is a folder, expected a file: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInputError(f"malformed {what} {path}: {exc}") from None
    except UnicodeDecodeError:
        raise BadInputError(f"malformed {what} {path}: not UTF-8 text") from None
