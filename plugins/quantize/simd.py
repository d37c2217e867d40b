"""Explicit AVX-512 for the one place where Numba's auto-vectorizer cannot help: NF4/FP4
code lookups. A 4-bit code indexes a 16-entry float table, which is exactly one
``vpermps`` on a 512-bit register (``llvm.x86.avx512.permvar.sf.512``); written as
``code[q]`` LLVM emits gathers instead (measured 2-3x slower than scalar lookups here).

:func:`nf4_row_dot` is a Numba intrinsic that emits that instruction sequence for one
weight row of the bitsandbytes layout (values in C order, the first of each byte in the
high nibble, one absmax per block of ``bs`` values):

    per 16 values: load 8 packed bytes, split them into 16 nibble indices (high nibble
    first), permute the code table by them, fused multiply-add with 16 values of x;
    per block: scale the block's vector sum by its absmax; per row: one horizontal sum.

Use it only when :data:`AVAILABLE` (the CPU has AVX-512F and Numba compiles for the host
CPU); otherwise the callers keep their portable kernels. Same sums in a different order
than the reference (tolerance as the other numba-cpu kernels).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _available() -> bool:
    try:
        import llvmlite.binding as llvm
        from numba.core import config

        if config.CPU_NAME not in (None, "host"):
            return "+avx512f" in (config.CPU_FEATURES or "")
        return bool(llvm.get_host_cpu_features().get("avx512f"))
    except Exception:  # no feature query on this platform: stay portable
        return False


AVAILABLE = _available()
"""Whether :func:`nf4_row_dot` can be compiled and run here."""

_f32 = ir.FloatType()
_i32 = ir.IntType(32)
_i64 = ir.IntType(64)
_v16f = ir.VectorType(_f32, 16)
_v16i = ir.VectorType(_i32, 16)
_v8i = ir.VectorType(_i32, 8)
_v8b = ir.VectorType(ir.IntType(8), 8)


@intrinsic
def nf4_row_dot(typingctx, packed, byte_offset, x, absmax, block_offset, table, n_in, bs):
    """``sum_b absmax[block_offset + b] * sum_j table[q_j] * x[j]`` over one row of
    ``n_in`` values starting at byte ``byte_offset`` of ``packed`` (uint8, C-contiguous);
    ``x`` float32 (n_in,), ``absmax`` float32, ``table`` float32 (16,). Requires
    ``bs % 16 == 0`` and ``n_in % bs == 0`` (the caller checks)."""
    arrays = (packed, x, absmax, table)
    dtypes = (types.uint8, types.float32, types.float32, types.float32)
    if not all(isinstance(a, types.Array) and a.dtype == d and a.ndim == 1 and a.layout == "C"
               for a, d in zip(arrays, dtypes)):
        return None   # a typing error: only the layouts the loads below assume
    sig = types.float32(packed, types.int64, x, absmax, types.int64, table, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        pk, byte_offset, xs, am, block_offset, tb, n_in, bs = args

        def data(i, value):
            return cgutils.create_struct_proxy(signature.args[i])(context, builder, value=value).data

        pk_p, x_p, a_p, t_p = data(0, pk), data(2, xs), data(3, am), data(5, tb)
        mod = builder.module
        permute = cgutils.get_or_insert_function(mod, ir.FunctionType(_v16f, [_v16f, _v16i]),
                                                 "llvm.x86.avx512.permvar.sf.512")
        fma = cgutils.get_or_insert_function(mod, ir.FunctionType(_v16f, [_v16f, _v16f, _v16f]), "llvm.fma.v16f32")
        reduce_add = cgutils.get_or_insert_function(mod, ir.FunctionType(_f32, [_f32, _v16f]),
                                                    "llvm.vector.reduce.fadd.v16f32")
        table_v = builder.load(builder.bitcast(t_p, _v16f.as_pointer()), align=4)
        zero = ir.Constant(_v16f, [0.0] * 16)
        row_acc = cgutils.alloca_once_value(builder, zero)
        chunks = builder.sdiv(bs, ir.Constant(_i64, 16))
        four, fifteen = ir.Constant(_v8i, [4] * 8), ir.Constant(_v8i, [15] * 8)
        interleave = ir.Constant(_v16i, [v for k in range(8) for v in (k, k + 8)])   # hi0 lo0 hi1 lo1 ...
        with cgutils.for_range(builder, builder.sdiv(n_in, bs)) as block:
            block_acc = cgutils.alloca_once_value(builder, zero)
            with cgutils.for_range(builder, chunks) as chunk:
                j = builder.add(builder.mul(block.index, chunks), chunk.index)       # 16-value chunk of the row
                src = builder.gep(pk_p, [builder.add(byte_offset, builder.mul(j, ir.Constant(_i64, 8)))])
                nibbles = builder.zext(builder.bitcast(builder.load(builder.bitcast(src, _i64.as_pointer()), align=1),
                                                       _v8b), _v8i)
                idx = builder.shuffle_vector(builder.lshr(nibbles, four), builder.and_(nibbles, fifteen), interleave)
                xv = builder.load(builder.bitcast(builder.gep(x_p, [builder.mul(j, ir.Constant(_i64, 16))]),
                                                  _v16f.as_pointer()), align=4)
                builder.store(builder.call(fma, [builder.call(permute, [table_v, idx]), xv, builder.load(block_acc)]),
                              block_acc)
            a = builder.load(builder.gep(a_p, [builder.add(block_offset, block.index)]))
            a_v = builder.insert_element(ir.Constant(_v16f, ir.Undefined), a, ir.Constant(_i32, 0))
            a_v = builder.shuffle_vector(a_v, a_v, ir.Constant(_v16i, [0] * 16))
            builder.store(builder.call(fma, [builder.load(block_acc), a_v, builder.load(row_acc)]), row_acc)
        return builder.call(reduce_add, [ir.Constant(_f32, 0.0), builder.load(row_acc)], fastmath=("reassoc",))

    return sig, codegen
