"""The numerics fingerprint is deterministic in one process and across processes."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")

from gpuforge.hardware.fingerprint import SUITE_VERSION, fingerprint, suite  # noqa: E402


def test_same_in_one_process():
    a, b = fingerprint("cpu"), fingerprint("cpu")
    assert a["sha256"] == b["sha256"] and a["parts"] == b["parts"]
    assert len(a["sha256"]) == 64 and a["suite_version"] == SUITE_VERSION
    assert set(a["parts"]) == {"mm_fp32", "mm_fp16", "mm_bf16", "bmm_fp32", "sum_fp32", "sum_fp16", "sum_bf16",
                               "mean_rows_fp32", "var_fp32", "softmax_fp32", "cumsum_fp32"}


def test_parts_hash_the_bits_of_each_dtype():
    parts = suite("cpu")
    assert len(parts["mm_fp32"]) == 67 * 93 * 4
    assert len(parts["mm_fp16"]) == len(parts["mm_bf16"]) == 67 * 93 * 2
    assert parts["mm_fp16"] != parts["mm_bf16"]


def test_same_in_two_processes(run_cli):
    here = fingerprint("cpu")["sha256"]
    other = run_cli("--device", "cpu", "hw", "fingerprint")
    assert other.code == 0, other
    # The subprocess uses torch's default thread count, as this process does.
    assert other.stdout.split()[0] == here
