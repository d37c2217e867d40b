"""The numba-cpu backend of every shared kernel equals the reference on every case and
rejects the same invalid inputs; layouts are checked against independent decoders."""
from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from gpuforge.core.safepath import python_argv
from gpuforge.kernels.specs import kernel_specs
from prim_specs import SPECS, cases_of, resolve


# --- layouts, written independently of the kernels ---------------------------------------

def gptq_unpack_bit_by_bit(packed: np.ndarray, bits: int, rows: int) -> np.ndarray:
    """Documented layout: in each column, value j occupies bits [bits*j, bits*j + bits) of
    a little-endian stream of 32-bit words; 3-bit groups are 32 values in 3 words."""
    group, words = (32, 3) if bits == 3 else (32 // bits, 1)
    out = np.zeros((rows, packed.shape[1]), np.int64)
    for col in range(packed.shape[1]):
        for r in range(rows):
            g, j = divmod(r, group)
            for b in range(bits):
                pos = bits * j + b
                word = int(packed[g * words + pos // 32, col]) & 0xFFFFFFFF
                out[r, col] |= ((word >> (pos % 32)) & 1) << b
    return out


def autogptq_pack(intweight: np.ndarray, bits: int) -> np.ndarray:
    """Transcription of AutoGPTQ's QuantLinear.pack loop (rows % 32 == 0)."""
    intweight = intweight.astype(np.uint32)
    qweight = np.zeros((intweight.shape[0] // 32 * bits, intweight.shape[1]), np.uint32)
    i = row = 0
    while row < qweight.shape[0]:
        if bits in (2, 4, 8):
            for j in range(i, i + 32 // bits):
                qweight[row] |= intweight[j] << (bits * (j - i))
            i += 32 // bits
            row += 1
        else:
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i))
            i += 10
            qweight[row] |= intweight[i] << 30
            row += 1
            qweight[row] |= (intweight[i] >> 2) & 1
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i) + 1)
            i += 10
            qweight[row] |= intweight[i] << 31
            row += 1
            qweight[row] |= (intweight[i] >> 1) & 0x3
            i += 1
            for j in range(i, i + 10):
                qweight[row] |= intweight[j] << (3 * (j - i) + 2)
            i += 10
            row += 1
    return qweight.astype(np.int32)


@pytest.mark.parametrize("backend", ["reference", "numba-cpu"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_int32_is_gptq_v1_layout(backend, bits):
    pack = resolve(SPECS["kernels.pack_int32"].backends[backend])
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 2 ** bits, (96, 5))
    packed = pack(values, bits)
    assert packed.dtype == np.int32 and packed.shape == (96 * bits // 32, 5)
    np.testing.assert_array_equal(gptq_unpack_bit_by_bit(packed, bits, 96), values)
    np.testing.assert_array_equal(packed, autogptq_pack(values, bits))
    odd = rng.integers(0, 2 ** bits, (45, 3))  # padded with zeros to a whole group
    np.testing.assert_array_equal(gptq_unpack_bit_by_bit(pack(odd, bits), bits, 45), odd)


@pytest.mark.parametrize("backend", ["reference", "numba-cpu"])
def test_pack_bits_first_value_in_high_bits(backend):
    pack = resolve(SPECS["kernels.pack_bits"].backends[backend])
    np.testing.assert_array_equal(pack(np.array([0xA, 0x3, 0x7], np.uint8), 4), [0xA3, 0x70])
    np.testing.assert_array_equal(pack(np.array([1, 2, 3, 0, 3]), 2), [0b01101100, 0b11000000])


@pytest.mark.parametrize("backend", ["reference", "numba-cpu"])
def test_quantize_rounds_half_to_even_and_zero_blocks(backend):
    quantize = resolve(SPECS["kernels.blockwise_quantize_absmax_int8"].backends[backend])
    x = np.array([127, 0.5, 1.5, 2.5, -2.5, 0, 0, 0], np.float32)
    codes, absmax = quantize(x, 5)
    np.testing.assert_array_equal(codes, [127, 0, 2, 2, -2, 0, 0, 0])
    np.testing.assert_array_equal(absmax, [127, 0])


@pytest.mark.parametrize("backend", ["reference", "numba-cpu"])
def test_topk_ties_go_to_smaller_index(backend):
    topk = resolve(SPECS["kernels.pairwise_topk"].backends[backend])
    y = np.array([[2.0], [-1.0], [1.0], [-2.0], [0.0]], np.float32)
    dist, idx = topk(np.zeros((1, 1), np.float32), y, 5)
    np.testing.assert_array_equal(idx, [[4, 1, 2, 0, 3]])
    np.testing.assert_array_equal(dist, [[0, 1, 1, 2, 2]])


def test_specs_metadata_is_complete():
    names = [spec.name for spec in kernel_specs()]
    assert names == sorted(set(names), key=names.index)
    for spec in kernel_specs():
        assert spec.name.startswith("kernels.")
        assert set(spec.backends) == {"reference", "numba-cpu", "numba-cuda"}
        assert spec.cases and spec.ptx
        for target in (spec.backends["reference"], spec.backends["numba-cpu"], spec.cases):
            assert callable(resolve(target))
        valid, invalid = cases_of(spec, "valid"), cases_of(spec, "invalid")
        assert valid and invalid, spec.name
        names = [case.name for case in resolve(spec.cases)()]
        assert names == [case.name for case in valid + invalid], spec.name
        assert len(set(names)) == len(names), spec.name


def test_specs_import_nothing_heavy():
    code = ("import sys, gpuforge.kernels, gpuforge.kernels.specs as s; s.kernel_specs(); "
            "print(','.join(m for m in ('numpy', 'numba', 'torch') if m in sys.modules))")
    out = subprocess.run([*python_argv(), "-c", code], capture_output=True, text=True,
                         env=os.environ.copy(), check=True).stdout.strip()
    assert out == ""
