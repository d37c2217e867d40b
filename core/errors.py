"""Errors a user can act on, each with the exit code DESIGN.md documents.

The CLI catches :class:`GpuforgeError` and prints one line ``error: <message>``
(what, where, what to do) and exits with ``exit_code``; anything else is an
internal error (exit 1) and shows a traceback only with ``--debug``.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_BAD_INPUT = 3
EXIT_UNSUPPORTED = 4
EXIT_INTERRUPTED = 130


class GpuforgeError(Exception):
    """Base class: a problem the user can fix. ``str(err)`` is the one line shown."""

    exit_code = EXIT_INTERNAL


class UsageError(GpuforgeError):
    """Wrong command-line usage: unknown option value, conflicting flags."""

    exit_code = EXIT_USAGE


class BadInputError(GpuforgeError):
    """An input file or value is missing, malformed or out of range."""

    exit_code = EXIT_BAD_INPUT


class UnknownGpuError(BadInputError):
    """A GPU id that no hardware profile has."""


class OutputExistsError(BadInputError):
    """The output path exists and ``--force`` was not given."""


class UnsupportedError(GpuforgeError):
    """The hardware, backend or file format is not supported here."""

    exit_code = EXIT_UNSUPPORTED


class BackendUnavailableError(UnsupportedError):
    """A kernel backend was asked for but cannot run on this machine."""


class PluginError(GpuforgeError):
    """A plugin failed to load while ``--strict-plugins`` is on, or is not installed."""

    exit_code = EXIT_USAGE
