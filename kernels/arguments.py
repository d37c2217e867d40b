"""Argument checks shared by every backend, so that all three raise the same error for
the same bad input. Only metadata is inspected here (dtype, shape, ints), never data, so
the checks work on NumPy arrays and on Numba device arrays alike.
"""
from __future__ import annotations

import operator

import numpy as np

from gpuforge.core.errors import BadInputError


class KernelArgumentError(BadInputError, ValueError):
    """A kernel was called with an argument it does not accept (exit code 3 in the CLI;
    also a ``ValueError`` for callers that use the kernels as a library)."""


def check_int(name: str, value, minimum: int) -> int:
    """``value`` as a Python int >= ``minimum`` (bools and floats are rejected)."""
    if isinstance(value, (bool, np.bool_)):
        raise KernelArgumentError(f"{name} must be an integer, got a bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise KernelArgumentError(
            f"{name} must be an integer, got {type(value).__name__}") from None
    if value < minimum:
        raise KernelArgumentError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_choice(name: str, value, choices: tuple[int, ...]) -> int:
    value = check_int(name, value, min(choices))
    if value not in choices:
        raise KernelArgumentError(f"{name} must be one of {choices}, got {value}")
    return value


def check_float32(name: str, dtype) -> None:
    if np.dtype(dtype) != np.float32:
        raise KernelArgumentError(
            f"{name} must be float32, got {np.dtype(dtype)}; cast it with .astype(np.float32)")


def check_integer(name: str, dtype) -> None:
    if not np.issubdtype(np.dtype(dtype), np.integer):
        raise KernelArgumentError(f"{name} must have an integer dtype, got {np.dtype(dtype)}")


def check_ndim(name: str, shape: tuple, ndim: int | None = None, min_ndim: int = 0) -> None:
    if ndim is not None and len(shape) != ndim:
        raise KernelArgumentError(f"{name} must be {ndim}-D, got shape {tuple(shape)}")
    if len(shape) < min_ndim:
        raise KernelArgumentError(
            f"{name} must have at least {min_ndim} dimension(s), got shape {tuple(shape)}")


def out_of_range(name: str, bits: int) -> KernelArgumentError:
    return KernelArgumentError(f"{name} must lie in [0, {2 ** bits}) for bits={bits}")
