"""The W4A16 matvec kernels' SIMD paths (plugins/quantize/simd.py) against the references,
each path forced on the same layers, and the NEON build compiled for AArch64."""
from __future__ import annotations

import numpy as np
import pytest

from gpuforge.plugins.quantize import matvec, simd
from gpuforge.plugins.quantize.kernel_cases import _gptq
from gpuforge.plugins.quantize.nf4 import code_table, nf4_encode


def _normal(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _force(monkeypatch, path):
    monkeypatch.setattr(matvec, "USE_AVX512", path == "avx512")
    monkeypatch.setattr(matvec, "USE_BYTES", path in ("bytes", "bytes-16"))
    monkeypatch.setattr(matvec, "BYTES_WIDTH", 16 if path == "bytes-16" else None)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("rows,cols,bs", [(13, 384, 64), (5, 1024, 128), (3, 512, 256), (7, 192, 32)])
@pytest.mark.parametrize("path", ["bytes", "bytes-16"])
def test_byte_shuffle_matvec_matches_reference(monkeypatch, quant_type, rows, cols, bs, path):
    """The portable fast path (AVX2 vpshufb here; its 16-byte build is the code NEON runs
    with pshufb in place of tbl) against the float64 reference, several blocks per step
    and steps per block; block sizes it cannot take fall back and must still agree."""
    if simd.BYTES_ISA is None:
        pytest.skip("no byte-shuffle ISA on this CPU")
    _force(monkeypatch, path)
    width = 16 if path == "bytes-16" else simd.BYTES_WIDTH[simd.BYTES_ISA]
    taken = matvec.nf4_matvec_path(cols, bs)
    assert (taken in ("avx2", "ssse3", "neon")) == (bs % (2 * width) == 0), taken
    p, a = nf4_encode(_normal((rows, cols), rows + cols), bs, quant_type)
    x = _normal(cols, 3)
    y = matvec.nf4_matvec_cpu(p, a, x, rows, bs, quant_type)
    np.testing.assert_allclose(y, matvec.nf4_matvec(p, a, x, rows, bs, quant_type), rtol=1e-5, atol=1e-4)


def test_byte_planes_rebuild_the_code_table_exactly():
    """The byte planes and the lane order together are a permutation of exact table values:
    decoding one step by hand in NumPy gives each code bit for bit at its lane."""
    for width in (16, 32):
        order = simd.bytes_value_order(width)
        assert sorted(order) == list(range(2 * width))
        for qt in ("nf4", "fp4"):
            code = code_table(qt)
            planes = simd.bytes_planes(code, width).reshape(4, width)
            bytes_ = np.random.default_rng(width).integers(0, 256, width).astype(np.uint8)
            nibbles = np.empty(2 * width, np.uint8)
            nibbles[0::2], nibbles[1::2] = bytes_ >> 4, bytes_ & 15
            rebuilt = np.stack([planes[k][nibbles] for k in range(4)], axis=1).copy().view("<f4").reshape(-1)
            assert np.array_equal(rebuilt.view(np.uint32), code[nibbles].view(np.uint32))
            assert np.array_equal(code[nibbles][order], code[nibbles[order]])


@pytest.mark.parametrize("rows,cols,gs", [(256, 96, 128), (64, 45, 32), (60, 16, 60), (1024, 520, 128), (512, 64, -1)])
@pytest.mark.parametrize("groups_kernel", [True, False])
def test_gptq4_matvec_both_kernels_match_reference(monkeypatch, rows, cols, gs, groups_kernel):
    """4-bit without act-order takes simd.gptq4_group_dot (16-column register blocks, then
    single vectors, then scalar tail columns; one partial word when rows % 8); switched off,
    the general word kernel runs on the same layers."""
    monkeypatch.setattr(matvec, "USE_GPTQ4_GROUPS", groups_kernel)
    args = _gptq(rows + cols, rows, cols, 4, rows if gs == -1 else gs)
    x = _normal(rows, 5)
    y = matvec.gptq_matvec_cpu(*args, x)
    np.testing.assert_allclose(y, matvec.gptq_matvec(*args, x), rtol=1e-5, atol=1e-4)


def test_gptq4_group_kernel_is_taken_only_for_plain_group_order():
    def gs(g_idx, groups):
        x = _normal(g_idx.size, 1)
        got, xq, xsum = matvec._gptq4_plan(g_idx.astype(np.int32), groups, x, -(-g_idx.size // 8), matvec._X_SCALE)
        if got > 0:   # x scaled by 16^-min(j, 6) per word position, sums per group
            j = np.arange(x.size) % 8
            assert np.array_equal(xq[:x.size], x * np.float32(16.0) ** -np.minimum(j, 6).astype(np.float32))
            np.testing.assert_allclose(xsum, np.add.reduceat(x, np.arange(0, x.size, got)), rtol=1e-5)
        return got

    g = np.arange(256) // 128
    assert gs(g, 2) == 128
    assert gs(g, 1) == -1                                  # g_idx beyond the scales
    assert gs(np.arange(60) // 20, 3) == -1                 # groups split words
    assert gs(np.zeros(60, np.int64), 1) == 60              # one group, partial last word
    assert gs(np.random.default_rng(0).permutation(g), 2) == -1


def _aarch64_asm(build) -> str:
    llvm = pytest.importorskip("llvmlite.binding")
    from llvmlite import ir

    try:
        llvm.initialize_all_targets()
        llvm.initialize_all_asmprinters()
        target = llvm.Target.from_triple("aarch64-unknown-linux-gnu")
    except RuntimeError:
        pytest.skip("this llvmlite has no AArch64 target")
    mod = ir.Module(name="neon_check")
    mod.triple = "aarch64-unknown-linux-gnu"
    build(mod, ir)
    parsed = llvm.parse_assembly(str(mod))
    parsed.verify()
    tm = target.create_target_machine(cpu="generic", features="+neon", opt=3)
    return tm.emit_assembly(parsed)


def test_neon_builds_compile_for_aarch64():
    """The NEON variant cannot run here; check that both emitters give valid AArch64 code
    with the instructions the design relies on (tbl lookups, zip interleaves, fmla)."""
    def build(mod, ir):
        i8p, f32p, i32p = ir.IntType(8).as_pointer(), ir.FloatType().as_pointer(), ir.IntType(32).as_pointer()
        i64, f32 = ir.IntType(64), ir.FloatType()
        fn = ir.Function(mod, ir.FunctionType(f32, [i8p, i64, f32p, f32p, i64, i8p, i64, i64]), "nf4_bytes_dot")
        b = ir.IRBuilder(fn.append_basic_block())
        b.ret(simd.emit_nf4_bytes_dot(b, "neon", *fn.args))
        fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [i32p, i64, i64, i64, i64, i64, f32p, f32, f32p, i32p,
                                                              i64, i64, f32p]), "gptq4_group")
        b = ir.IRBuilder(fn.append_basic_block())
        simd.emit_gptq4_group(b, *fn.args)
        b.ret_void()

    asm = _aarch64_asm(build)
    body = asm.split("gptq4_group:")
    assert "tbl\tv" in body[0] and "zip1\tv" in body[0] and "fmla\tv" in body[0], body[0][:2000]
    assert "scvtf\tv" in body[1] and "fmla\tv" in body[1], body[1][:2000]
