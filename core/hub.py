"""Offline by construction: Hugging Face libraries never reach the network for gpuforge.

gpuforge reads local model folders only (nothing is downloaded at run time), but
transformers, huggingface_hub and bitsandbytes may look things up on the Hub by
themselves: bitsandbytes 0.50 asks Hugging Face's ``kernels`` for a CPU kernel when
imported on AVX512-BF16 CPUs and logs "Failed to load CPU gemm_4bit_forward from
kernels-community ..." when that fails. Every such call goes through :func:`offline`:

    with offline():
        model = AutoModel.from_pretrained(folder)

which switches the Hub off for the call (unless the user set the switches), turns
third-party progress bars off (gpuforge's own rich progress covers long steps) and keeps
their warnings out of gpuforge's output; :func:`import_bitsandbytes` does the same
around bitsandbytes' import.
"""
from __future__ import annotations

import logging
import os
import sys
from contextlib import contextmanager
from typing import Iterator

SWITCHES = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
}
QUIET_LOGGERS = ("transformers", "huggingface_hub", "bitsandbytes", "kernels", "accelerate", "peft")


@contextmanager
def offline(quiet: bool = True) -> Iterator[None]:
    """Hub off, third-party progress bars off, their warnings below ERROR, for the body.

    Switches the user set in the environment are left as they are. Libraries read
    some switches once, at import: one imported inside the body keeps them (gpuforge
    never wants the Hub or their bars); for one imported earlier, its constants are
    set for the body and restored afterwards."""
    saved_env: dict[str, str | None] = {}
    for name, value in SWITCHES.items():
        if name not in os.environ:
            saved_env[name] = None
            os.environ[name] = value
    patched: list[tuple[object, str, object]] = []

    def patch(module_name: str, attr: str, value: object) -> None:
        mod = sys.modules.get(module_name)
        if mod is not None and hasattr(mod, attr):
            patched.append((mod, attr, getattr(mod, attr)))
            setattr(mod, attr, value)

    if "HF_HUB_OFFLINE" in saved_env and "TRANSFORMERS_OFFLINE" in saved_env:
        patch("huggingface_hub.constants", "HF_HUB_OFFLINE", True)
    bars = _progress_bars_off()
    levels = {}
    if quiet:
        for name in QUIET_LOGGERS:
            lg = logging.getLogger(name)
            levels[name] = lg.level
            lg.setLevel(logging.ERROR)
    tf_verbosity = _transformers_verbosity_error() if quiet else None
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if tf_verbosity is not None:
            tf_verbosity()
        bars()
        for mod, attr, old in reversed(patched):
            setattr(mod, attr, old)
        for name in saved_env:
            os.environ.pop(name, None)


def _progress_bars_off():
    """Turn transformers' and huggingface_hub's tqdm bars off; returns the undo."""
    undo = []
    tf_logging = sys.modules.get("transformers.utils.logging")
    if tf_logging is None and "transformers" in sys.modules:
        from transformers.utils import logging as tf_logging  # type: ignore[no-redef]
    if tf_logging is not None and tf_logging.is_progress_bar_enabled():
        tf_logging.disable_progress_bar()
        undo.append(tf_logging.enable_progress_bar)
    hub_tqdm = sys.modules.get("huggingface_hub.utils.tqdm")
    if hub_tqdm is not None and not hub_tqdm.are_progress_bars_disabled():
        hub_tqdm.disable_progress_bars()
        undo.append(hub_tqdm.enable_progress_bars)

    def restore() -> None:
        for fn in undo:
            fn()

    return restore


def _transformers_verbosity_error():
    tf_logging = sys.modules.get("transformers.utils.logging")
    if tf_logging is None:
        return None
    old = tf_logging.get_verbosity()
    tf_logging.set_verbosity_error()
    return lambda: tf_logging.set_verbosity(old)


def import_bitsandbytes():
    """``bitsandbytes``, imported with the Hub off and its Hub warnings kept quiet."""
    with offline():
        import bitsandbytes

        return bitsandbytes
