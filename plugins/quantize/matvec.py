"""Dequantize kernels and fused dequantize + matrix-vector products (W4A16, the decode
path of a quantized model: one token, weights read once in 4 bits).

- ``nf4_matvec(packed, absmax, x, out_features, blocksize=64, quant_type="nf4") -> float32 (out,)``:
  ``y = W @ x`` with ``W`` (out, in) stored as :func:`.nf4.nf4_encode` of its C-order
  flattening (bitsandbytes Linear4bit), ``in = x.size``.
- ``gptq_dequantize(qweight, qzeros, scales, g_idx, bits) -> float32 (in, out)``: GPTQ v1,
  ``W[i, o] = scales[g_idx[i], o] * (q[i, o] - (z[g_idx[i], o] + 1))`` with ``q`` from
  ``qweight`` (packed along the input dimension) and ``z`` from ``qzeros`` (packed along
  the output dimension), bits in {2, 3, 4, 8}.
- ``gptq_matvec(qweight, qzeros, scales, g_idx, bits, x) -> float32 (out,)``: ``W.T @ x``
  of that ``W`` (the nn.Linear product), without materializing ``W``.

The numba-cpu kernels sum in a different order than the references (tolerance 1e-4).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from gpuforge.kernels.arguments import KernelArgumentError, check_choice, check_float32, check_int, check_ndim
from gpuforge.kernels.packing import gptq_group, unpack_int32_cpu, word_value_cpu
from gpuforge.plugins.quantize import simd
from gpuforge.plugins.quantize.nf4 import _workspace, check_decode, code_table
from gpuforge.plugins.quantize.simd import gptq4_group_dot, nf4_row_dot, nf4_row_dot_bytes, nf4_row_dot_bytes_128


def check_nf4_matvec(packed, absmax, x, out_features, blocksize, quant_type):
    check_float32("x", x.dtype)
    check_ndim("x", x.shape, 1)
    out_features = check_int("out_features", out_features, 0)
    n, blocksize = check_decode(packed, absmax, out_features * x.shape[0], blocksize, quant_type)
    return out_features, blocksize


def check_gptq(qweight, qzeros, scales, g_idx, bits):
    bits = check_choice("bits", bits, (2, 3, 4, 8))
    for name, t, dt in (("qweight", qweight, np.int32), ("qzeros", qzeros, np.int32), ("g_idx", g_idx, np.int32)):
        if np.dtype(t.dtype) != dt:
            raise KernelArgumentError(f"{name} must be {np.dtype(dt)}, got {np.dtype(t.dtype)}")
    check_float32("scales", scales.dtype)
    check_ndim("qweight", qweight.shape, 2)
    check_ndim("qzeros", qzeros.shape, 2)
    check_ndim("scales", scales.shape, 2)
    check_ndim("g_idx", g_idx.shape, 1)
    group, words = gptq_group(bits)
    rows = g_idx.shape[0]
    out = qweight.shape[1]
    if qweight.shape[0] != -(-rows // group) * words:
        raise KernelArgumentError(f"qweight has {qweight.shape[0]} rows; {rows} inputs of {bits} bits need "
                                  f"{-(-rows // group) * words}")
    if scales.shape[1] != out or qzeros.shape[0] != scales.shape[0]:
        raise KernelArgumentError(f"scales {tuple(scales.shape)} and qzeros {tuple(qzeros.shape)} do not match "
                                  f"qweight {tuple(qweight.shape)}")
    if qzeros.shape[1] != -(-out // group) * words:
        raise KernelArgumentError(f"qzeros has {qzeros.shape[1]} columns; {out} outputs of {bits} bits need "
                                  f"{-(-out // group) * words}")
    return bits


def check_gptq_matvec(qweight, qzeros, scales, g_idx, bits, x):
    """:func:`check_gptq` and an ``x`` of one float32 value per input; the checked bits."""
    bits = check_gptq(qweight, qzeros, scales, g_idx, bits)
    check_float32("x", x.dtype)
    check_ndim("x", x.shape, 1)
    if x.shape[0] != g_idx.shape[0]:
        raise KernelArgumentError(f"x has {x.shape[0]} values; the layer has {g_idx.shape[0]} inputs")
    return bits


# --- reference ---------------------------------------------------------------------------

def nf4_matvec(packed, absmax, x, out_features: int, blocksize: int = 64, quant_type: str = "nf4"):
    from gpuforge.plugins.quantize.nf4 import nf4_decode

    packed, absmax, x = np.asarray(packed), np.asarray(absmax), np.asarray(x)
    out_features, blocksize = check_nf4_matvec(packed, absmax, x, out_features, blocksize, quant_type)
    w = nf4_decode(packed, absmax, out_features * x.size, blocksize, quant_type).reshape(out_features, x.size)
    return (w.astype(np.float64) @ x.astype(np.float64)).astype(np.float32)


def _unpack_rows(packed: np.ndarray, bits: int, rows: int) -> np.ndarray:
    from gpuforge.kernels.packing import unpack_int32

    return unpack_int32(packed, bits, rows).astype(np.int64)


def gptq_dequantize(qweight, qzeros, scales, g_idx, bits: int):
    qweight, qzeros, scales, g_idx = (np.asarray(a) for a in (qweight, qzeros, scales, g_idx))
    bits = check_gptq(qweight, qzeros, scales, g_idx, bits)
    rows, out = g_idx.shape[0], qweight.shape[1]
    q = _unpack_rows(qweight, bits, rows)                              # (in, out)
    z = _unpack_rows(np.ascontiguousarray(qzeros.T), bits, out).T + 1  # (groups, out)
    g = g_idx.astype(np.int64)
    if rows and (g.min() < 0 or g.max() >= scales.shape[0]):
        raise KernelArgumentError(f"g_idx must lie in [0, {scales.shape[0]})")
    return (scales[g] * (q - z[g]).astype(np.float32)).astype(np.float32)


def gptq_matvec(qweight, qzeros, scales, g_idx, bits: int, x):
    x = np.asarray(x)
    check_float32("x", x.dtype)
    check_ndim("x", x.shape, 1)
    w = gptq_dequantize(qweight, qzeros, scales, g_idx, bits)
    if x.shape[0] != w.shape[0]:
        raise KernelArgumentError(f"x has {x.shape[0]} values; the layer has {w.shape[0]} inputs")
    return (x.astype(np.float64) @ w.astype(np.float64)).astype(np.float32)


# --- numba-cpu ---------------------------------------------------------------------------

@njit(parallel=True, cache=True, fastmath=True)
def _nf4_matvec_rows(packed, absmax, x, out_features, bs, code, y):
    n_in = x.size
    for o in prange(out_features):
        acc = np.float32(0.0)
        base = o * n_in
        j = 0
        while j < n_in:
            i = base + j
            b = i // bs
            stop = min(n_in, j + (b + 1) * bs - i)   # end of this quantization block in this row
            s = np.float32(0.0)
            if i % 2 == 0 and (stop - j) % 2 == 0:
                for k in range(j, stop, 2):
                    byte = np.int64(packed[(base + k) // 2])
                    s += code[byte >> 4] * x[k] + code[byte & 15] * x[k + 1]
            else:
                for k in range(j, stop):
                    byte = np.int64(packed[(base + k) // 2])
                    q = byte >> 4 if (base + k) % 2 == 0 else byte & 15
                    s += code[q] * x[k]
            acc += s * absmax[b]
            j = stop
        y[o] = acc


# Byte-pair lookup tables (the T-MAC idea without its SIMD shuffles): for input pair p,
# lut[p, b] = code[b >> 4] * x[2p] + code[b & 15] * x[2p + 1], so one table load replaces
# two decodes and two multiplies. The tables for all pairs are built once per call
# (256 * in/2 floats); rows are processed four at a time so each table row loaded for one
# is reused by the next three, the weights are read as 32-bit words (four pairs each),
# and the input is walked in chunks of LUT_WORDS words so that the chunk's tables
# (LUT_WORDS * 4 KiB) stay in L2 while a tile of LUT_ROWS rows streams past them.
# Measured on the 2-core Zen 4 VM (`gpuforge bench quantize`): 4096x4096 in ~2.6 ms
# against 60 ms for the per-value decode above; wider chunks, eight rows at a time and
# 64-bit words were all slower there. The sums stay scalar on purpose: with fastmath
# LLVM turns the lookups into AVX-512 gathers, which measured 2-3x slower.
USE_AVX512 = True
"""Take the AVX-512 path (simd.py) when the CPU has it; tests switch it off to check the
portable kernels on machines that have it."""
USE_BYTES = True
"""Take the byte-shuffle path (simd.py: AVX2, SSSE3 or NEON) when the CPU has one; tests
switch it off to check the lookup-table kernel."""
BYTES_WIDTH: int | None = None
"""None: the widest byte-shuffle variant this CPU has; 16 forces the 16-byte one (on AVX2
machines the SSSE3 build of the code NEON runs; tests use it)."""
LUT_ROWS = 256
LUT_WORDS = 64


@njit(cache=True)
def _pair_tables(code, x, lut):
    # serial on purpose: 0.1-0.2 ms for 4096 inputs, less than a second parallel region
    # costs on a busy 2-core machine
    for p in range(lut.shape[0]):
        x0 = x[2 * p]
        x1 = x[2 * p + 1]
        for b in range(256):
            lut[p, b] = code[b >> 4] * x0 + code[b & 15] * x1


@njit(inline="always")
def _start_tile(y, t, tile, n, step):
    """Outputs [lo, hi) of task ``t`` of a tiled kernel (tiles of ``tile`` of the ``n``
    outputs in ``y``), zeroed for the task to add into, and the end of its whole runs of
    ``step``."""
    lo = t * tile
    hi = min(lo + tile, n)
    for i in range(lo, hi):
        y[i] = 0.0
    return lo, hi, lo + (hi - lo) // step * step


@njit(inline="always")
def _word_sum(lut, p, w):
    return (lut[p, w & 255] + lut[p + 1, (w >> 8) & 255]) + (lut[p + 2, (w >> 16) & 255] + lut[p + 3, w >> 24])


@njit(parallel=True, cache=True)
def _nf4_matvec_lut(words, absmax, lut, out_features, bs, chunk, tile, y):
    nw = lut.shape[0] // 4          # 32-bit words per row
    hw = bs // 8                    # words per quantization block
    nb = nw // hw                   # blocks per row
    for t in prange((out_features + tile - 1) // tile):
        r0, r1, quad_end = _start_tile(y, t, tile, out_features, 4)
        for c0 in range(0, nw, chunk):
            c1 = min(c0 + chunk, nw)
            for r in range(r0, quad_end, 4):
                ra = r * nw
                rb = ra + nw
                rc = rb + nw
                rd = rc + nw
                a0 = np.float32(0.0)
                a1 = np.float32(0.0)
                a2 = np.float32(0.0)
                a3 = np.float32(0.0)
                for b0 in range(c0, c1, hw):
                    s0 = np.float32(0.0)
                    s1 = np.float32(0.0)
                    s2 = np.float32(0.0)
                    s3 = np.float32(0.0)
                    for q in range(b0, b0 + hw):
                        p = 4 * q
                        s0 += _word_sum(lut, p, words[ra + q])
                        s1 += _word_sum(lut, p, words[rb + q])
                        s2 += _word_sum(lut, p, words[rc + q])
                        s3 += _word_sum(lut, p, words[rd + q])
                    k = b0 // hw
                    a0 += s0 * absmax[r * nb + k]
                    a1 += s1 * absmax[(r + 1) * nb + k]
                    a2 += s2 * absmax[(r + 2) * nb + k]
                    a3 += s3 * absmax[(r + 3) * nb + k]
                y[r] += a0
                y[r + 1] += a1
                y[r + 2] += a2
                y[r + 3] += a3
            for r in range(quad_end, r1):
                ra = r * nw
                a0 = np.float32(0.0)
                for b0 in range(c0, c1, hw):
                    s0 = np.float32(0.0)
                    for q in range(b0, b0 + hw):
                        s0 += _word_sum(lut, 4 * q, words[ra + q])
                    a0 += s0 * absmax[r * nb + b0 // hw]
                y[r] += a0


@njit(parallel=True, cache=True)
def _nf4_matvec_avx512(packed, absmax, x, out_features, bs, code, y):
    # one row per iteration, 16 values per vpermps + FMA (see simd.py): 4096x4096 in
    # ~0.5 ms on the Zen 4 VM against ~2.8 ms for the lookup-table kernel below
    n_in = x.size
    nb = n_in // bs
    for o in prange(out_features):
        y[o] = nf4_row_dot(packed, o * (n_in // 2), x, absmax, o * nb, code, n_in, bs)


@njit(parallel=True, cache=True)
def _nf4_matvec_bytes(packed, absmax, xp, out_features, bs, planes, narrow, y):
    # one row per iteration, 2W values per step of byte lookups + unpacks + FMAs (simd.py):
    # 4096x4096 in ~1.3-1.6 ms on one Zen 2 core against ~3.5 ms for torch's fp32 mv.
    # narrow: the 16-byte build where the native one is wider (tests, bench)
    n_in = xp.size
    nb = n_in // bs
    for o in prange(out_features):
        if narrow:
            y[o] = nf4_row_dot_bytes_128(packed, o * (n_in // 2), xp, absmax, o * nb, planes, n_in, bs)
        else:
            y[o] = nf4_row_dot_bytes(packed, o * (n_in // 2), xp, absmax, o * nb, planes, n_in, bs)


def _bytes_variant() -> tuple[str, int] | None:
    """(ISA, bytes per step) of the byte-shuffle kernel to use here, or None."""
    if not USE_BYTES or simd.BYTES_ISA is None:
        return None
    if BYTES_WIDTH == 16:
        return simd.BYTES_ISA_128, 16
    return simd.BYTES_ISA, simd.BYTES_WIDTH[simd.BYTES_ISA]


PATH_NAMES = {"avx512": "AVX-512 vpermps", "avx2": "AVX2 vpshufb", "ssse3": "SSSE3 pshufb", "neon": "NEON tbl",
              "lut": "portable lookup tables", "rows": "per-value decode"}


def nf4_matvec_path(n_in: int, blocksize: int = 64) -> str:
    """Which numba-cpu kernel :func:`nf4_matvec_cpu` runs for rows of ``n_in`` values
    here: a key of :data:`PATH_NAMES` (benchmarks report it)."""
    whole = blocksize > 0 and n_in % blocksize == 0
    if simd.AVAILABLE and USE_AVX512 and blocksize % 16 == 0 and whole:
        return "avx512"
    variant = _bytes_variant()
    if variant and blocksize % (2 * variant[1]) == 0 and whole:
        return variant[0]
    if blocksize % 8 == 0 and whole:
        return "lut"
    return "rows"


_BYTES_TABLES: dict = {}


def _bytes_inputs(code: np.ndarray, x: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(byte planes of the code table, x in the kernel's lane order), see simd.py."""
    key = (code.tobytes(), width)
    if key not in _BYTES_TABLES:
        _BYTES_TABLES[key] = (simd.bytes_planes(code, width), simd.bytes_value_order(width))
    planes, order = _BYTES_TABLES[key]
    return planes, np.ascontiguousarray(x.reshape(-1, 2 * width)[:, order].reshape(-1))


def _as_words(packed: np.ndarray) -> np.ndarray:
    """The packed bytes as native 32-bit words (byte 4k is the low byte of word k on the
    little-endian CPUs numba-cpu targets); copies only when the buffer is misaligned."""
    packed = np.ascontiguousarray(packed)
    if packed.ctypes.data % 4:
        packed = packed.copy()
    return packed.view("<u4")


def nf4_matvec_cpu(packed, absmax, x, out_features: int, blocksize: int = 64, quant_type: str = "nf4"):
    packed, absmax, x = np.asarray(packed), np.asarray(absmax), np.asarray(x)
    out_features, blocksize = check_nf4_matvec(packed, absmax, x, out_features, blocksize, quant_type)
    y = np.zeros(out_features, np.float32)
    if not (out_features and x.size):
        return y
    code = code_table(quant_type)
    absmax = np.ascontiguousarray(absmax)
    x = np.ascontiguousarray(x)
    path = nf4_matvec_path(x.size, blocksize)
    if path == "avx512":
        _nf4_matvec_avx512(np.ascontiguousarray(packed), absmax, x, out_features, blocksize, code, y)
    elif path in ("avx2", "ssse3", "neon"):
        width = _bytes_variant()[1]
        planes, xp = _bytes_inputs(code, x, width)
        _nf4_matvec_bytes(np.ascontiguousarray(packed), absmax, xp, out_features, blocksize, planes,
                          width != simd.BYTES_WIDTH[simd.BYTES_ISA], y)
    elif path == "lut":
        # whole blocks per row, whole 32-bit words per block: the lookup-table path
        lut = np.empty((x.size // 2, 256), np.float32)
        _pair_tables(code, x, lut)
        hw = blocksize // 8
        _nf4_matvec_lut(_as_words(packed), absmax, lut, out_features, blocksize,
                        max(hw, LUT_WORDS // hw * hw), LUT_ROWS, y)
    else:
        _nf4_matvec_rows(np.ascontiguousarray(packed), absmax, x, out_features, blocksize, code, y)
    return y


@njit(parallel=True, cache=True)
def _gptq_deq(qweight, z, scales, g_idx, bits, group, words, out):
    rows, cols = out.shape
    bad = 0
    for r in prange(rows):
        g = g_idx[r]
        if g < 0 or g >= scales.shape[0]:
            bad += 1
            continue
        for c in range(cols):
            out[r, c] = scales[g, c] * np.float32(word_value_cpu(qweight, r, c, bits, group, words) - z[g, c])
    return bad


COLS = 256


@njit(parallel=True, cache=True, fastmath=True)
def _gptq_mv(qweight, z, scales, g_idx, bits, group, words, x, y):
    rows = x.size
    cols = y.size
    ntask = (cols + COLS - 1) // COLS
    bad = 0
    for t in prange(ntask):
        c0 = t * COLS
        c1 = min(c0 + COLS, cols)
        acc = np.zeros(c1 - c0, np.float32)
        for r in range(rows):
            g = g_idx[r]
            if g < 0 or g >= scales.shape[0]:
                bad += 1
                continue
            xr = x[r]
            for c in range(c0, c1):
                acc[c - c0] += xr * scales[g, c] * np.float32(word_value_cpu(qweight, r, c, bits, group, words) - z[g, c])
        for c in range(c0, c1):
            y[c] = acc[c - c0]
    return bad


WORD_COLS = 512
USE_GPTQ4_GROUPS = True
"""4-bit layers without act-order take simd.gptq4_group_dot; tests switch it off to check
the general kernel below on the same layers."""


@njit(parallel=True, cache=True, fastmath=True)
def _gptq_mv_words(qweight, zf, scales, g_idx, bits, x, y):
    # bits dividing 32 (2, 4, 8): word w of column o holds inputs w*per .. w*per+per-1.
    # Per tile of outputs, inputs are taken in storage order and summed as integers times
    # x while their group stays the same: t[o] = sum x_r q[r, o], xs = sum x_r; when the
    # group changes, y[o] += s[g, o] * (t[o] - z[g, o] * xs). The inner loops read
    # contiguous words and do shift, mask, convert, multiply-add: no lookups, so LLVM
    # vectorizes them. 4-bit words whose 8 inputs share the running group (all of them
    # without act-order) are applied in one pass. Any g_idx works (act-order only flushes
    # more often); the caller has checked its range.
    rows = x.size
    cols = y.size
    per = 32 // bits
    mask = np.int32((1 << bits) - 1)
    for t in prange((cols + WORD_COLS - 1) // WORD_COLS):
        c0 = t * WORD_COLS
        c1 = min(c0 + WORD_COLS, cols)
        n = c1 - c0
        acc = np.zeros(n, np.float32)
        tq = np.zeros(n, np.float32)
        gcur = g_idx[0]
        xs = np.float32(0.0)
        for w in range(qweight.shape[0]):
            qr = qweight[w, c0:c1]
            r0 = w * per
            whole = bits == 4 and r0 + 8 <= rows
            if whole:
                for j in range(8):
                    if g_idx[r0 + j] != gcur:
                        whole = False
            if whole:
                x0, x1, x2, x3 = x[r0], x[r0 + 1], x[r0 + 2], x[r0 + 3]
                x4, x5, x6, x7 = x[r0 + 4], x[r0 + 5], x[r0 + 6], x[r0 + 7]
                xs += ((x0 + x1) + (x2 + x3)) + ((x4 + x5) + (x6 + x7))
                for k in range(n):
                    v = qr[k]
                    tq[k] += ((x0 * np.float32(v & 15) + x1 * np.float32((v >> 4) & 15))
                              + (x2 * np.float32((v >> 8) & 15) + x3 * np.float32((v >> 12) & 15))) \
                        + ((x4 * np.float32((v >> 16) & 15) + x5 * np.float32((v >> 20) & 15))
                           + (x6 * np.float32((v >> 24) & 15) + x7 * np.float32((v >> 28) & 15)))
                continue
            for j in range(per):
                r = r0 + j
                if r >= rows:
                    break
                g = g_idx[r]
                if g != gcur:
                    sr = scales[gcur, c0:c1]
                    zr = zf[gcur, c0:c1]
                    for k in range(n):
                        acc[k] += sr[k] * (tq[k] - zr[k] * xs)
                        tq[k] = 0.0
                    xs = np.float32(0.0)
                    gcur = g
                xr = x[r]
                xs += xr
                shift = np.int32(bits * j)
                for k in range(n):
                    tq[k] += xr * np.float32((qr[k] >> shift) & mask)
        sr = scales[gcur, c0:c1]
        zr = zf[gcur, c0:c1]
        for k in range(n):
            acc[k] += sr[k] * (tq[k] - zr[k] * xs)
        y[c0:c1] = acc


GPTQ4_TILE = 512


@njit(parallel=True, cache=True)
def _gptq4_mv_groups(qweight, qzeros, scales, group_words, xq, xsum, y):
    # 4-bit, groups of whole words in storage order (no act-order): per tile of columns
    # and group, simd.gptq4_group_dot keeps 16 columns' sums in registers over the
    # group's words; the last cols % 8 columns are summed here.
    nwr, cols = qweight.shape
    for t in prange((cols + GPTQ4_TILE - 1) // GPTQ4_TILE):
        c0, c1, cv = _start_tile(y, t, GPTQ4_TILE, cols, 8)
        for g in range(xsum.size):
            w0 = g * group_words
            w1 = min(w0 + group_words, nwr)
            gptq4_group_dot(qweight, w0, w1, c0, cv, xq, xsum[g], scales, qzeros, g, y)
            for c in range(cv, c1):
                t_q = np.float32(0.0)
                for w in range(w0, w1):
                    v = qweight[w, c]
                    for j in range(8):
                        t_q += xq[8 * w + j] * np.float32(((v >> (4 * j)) & 15) << (4 * min(j, 6)))
                z = np.float32(((qzeros[g, c // 8] >> (4 * (c % 8))) & 15) + 1)
                y[c] += scales[g, c] * (t_q - z * xsum[g])


_X_SCALE = np.ldexp(np.float32(1), -4 * np.minimum(np.arange(8), 6)).astype(np.float32)


@njit(cache=True)
def _gptq4_plan(g_idx, groups, x, words, x_scale):
    """(gs, xq, xsum) for the group kernel: ``gs`` when ``g_idx == arange(rows) // gs``
    with groups of whole 32-bit words (or one group) inside ``groups``, else -1 (act-order
    and other orders); ``xq`` x scaled by 16^-min(j, 6) for input j of each word, padded
    to whole words; ``xsum`` the sum of x per group (see simd.gptq4_group_dot)."""
    rows = g_idx.size
    xq = np.zeros(8 * words, np.float32)
    gs = 0
    while gs < rows and g_idx[gs] == 0:
        gs += 1
    if gs == 0 or (gs % 8 != 0 and gs < rows) or (rows + gs - 1) // gs > groups:
        return -1, xq, xq
    for r in range(rows):
        if g_idx[r] != r // gs:
            return -1, xq, xq
    xsum = np.zeros((rows + gs - 1) // gs, np.float32)
    for r in range(rows):
        xq[r] = x[r] * x_scale[r % 8]
        xsum[r // gs] += x[r]
    return gs, xq, xsum


def _zeros(qzeros, bits, out, dtype=np.int64):
    """The true zero points (groups, out): ``qzeros`` stores ``zero - 1`` packed along the
    output dimension, i.e. the transpose of a ``pack_int32`` array."""
    if not qzeros.shape[0]:
        return np.zeros((0, out), dtype)
    return (unpack_int32_cpu(np.ascontiguousarray(qzeros.T), bits, out).T + 1).astype(dtype)


def gptq_dequantize_cpu(qweight, qzeros, scales, g_idx, bits: int, *, out=None):
    """``out``: an optional float32 (in, out) C-contiguous workspace to write into."""
    qweight, qzeros, scales, g_idx = (np.asarray(a) for a in (qweight, qzeros, scales, g_idx))
    bits = check_gptq(qweight, qzeros, scales, g_idx, bits)
    group, words = gptq_group(bits)
    out = _workspace(out, (g_idx.shape[0], qweight.shape[1]))
    if not out.size:
        return out
    args = (np.ascontiguousarray(qweight), _zeros(qzeros, bits, qweight.shape[1]), np.ascontiguousarray(scales),
            np.ascontiguousarray(g_idx), bits)
    if _gptq_deq(*args, group, words, out):
        raise KernelArgumentError(f"g_idx must lie in [0, {scales.shape[0]})")
    return out


def gptq_matvec_cpu(qweight, qzeros, scales, g_idx, bits: int, x):
    qweight, qzeros, scales, g_idx, x = (np.asarray(a) for a in (qweight, qzeros, scales, g_idx, x))
    bits = check_gptq_matvec(qweight, qzeros, scales, g_idx, bits, x)
    group, words = gptq_group(bits)
    y = np.zeros(qweight.shape[1], np.float32)
    if not (y.size and x.size):
        return y
    qweight, scales, g_idx, x = (np.ascontiguousarray(a) for a in (qweight, scales, g_idx, x))
    gs, xq, xsum = (_gptq4_plan(g_idx, scales.shape[0], x, qweight.shape[0], _X_SCALE)
                    if bits == 4 and USE_GPTQ4_GROUPS else (-1, None, None))
    if gs > 0:
        bad = False
        _gptq4_mv_groups(qweight, np.ascontiguousarray(qzeros), scales, -(-gs // 8), xq, xsum, y)
    elif 32 % bits == 0:
        bad = g_idx.min() < 0 or g_idx.max() >= scales.shape[0]
        if not bad:
            _gptq_mv_words(qweight, _zeros(qzeros, bits, qweight.shape[1], np.float32), scales, g_idx, bits, x, y)
    else:
        bad = _gptq_mv(qweight, _zeros(qzeros, bits, qweight.shape[1]), scales, g_idx, bits, group, words, x, y)
    if bad:
        raise KernelArgumentError(f"g_idx must lie in [0, {scales.shape[0]})")
    return y
