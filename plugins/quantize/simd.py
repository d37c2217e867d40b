"""Explicit SIMD for the quantize kernels, emitted as LLVM IR through Numba intrinsics,
for the places where Numba's auto-vectorizer cannot help or does not get there.

NF4/FP4 code lookups: a 4-bit code indexes a 16-entry float table; written as
``code[q]`` LLVM emits gathers (measured 2-3x slower than scalar lookups). Two ways
around it, both for one weight row of the bitsandbytes layout (values in C order, the
first of each byte in the high nibble, one absmax per block of ``bs`` values):

- :func:`nf4_row_dot` (AVX-512F): the table is one ``vpermps`` on a 512-bit register
  (``llvm.x86.avx512.permvar.sf.512``). Per 16 values: load 8 packed bytes, split them
  into 16 nibble indices (high nibble first), permute the code table by them, fused
  multiply-add with 16 values of x; per block: scale the block's vector sum by its
  absmax; per row: one horizontal sum. Used when :data:`AVAILABLE`.
- :func:`nf4_row_dot_bytes` (AVX2 ``vpshufb``, SSSE3 ``pshufb``, NEON ``tbl``): the
  16-entry *byte* lookup every SIMD ISA has. The float32 code table is split into its
  four byte planes; per ``W`` packed bytes (``2W`` values) the high and the low nibbles
  each look up the four planes (8 byte lookups) and interleave them back into float32
  with per-lane unpacks (``punpck*`` / ``zip1``/``zip2``: 12 shuffles), then 8 fused
  multiply-adds. The unpacks put the values in a fixed lane order, so ``x`` is permuted
  once per call to match (:func:`bytes_value_order`) instead of unscrambling every row.
  Exact: the table values are rebuilt bit for bit. ``W`` is 32 on AVX2, 16 elsewhere;
  only the lookup instruction differs between ISAs (:data:`BYTES_ISA`).

GPTQ 4-bit: :func:`gptq4_group_dot` is plain vector IR (no target intrinsics: LLVM
lowers it to AVX2, AVX-512 or NEON alike) for one group of rows and a range of
columns: per 32-bit word of 8 inputs, each nibble is masked in place (``q * 16^j``,
exact in float32) and multiplied with ``x`` pre-scaled by ``16^-j``; 16 columns at a
time with the sums kept in registers over the group's words; then
``y += scale * (sum - zero * sum(x))`` once per group.

Same sums in a different order than the references (tolerance as the other numba-cpu
kernels).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _has(feature: str) -> bool:
    """Whether Numba compiles for a CPU with ``feature`` (an LLVM feature name)."""
    try:
        import llvmlite.binding as llvm
        from numba.core import config

        if config.CPU_NAME not in (None, "host"):
            return f"+{feature}" in (config.CPU_FEATURES or "")
        return bool(llvm.get_host_cpu_features().get(feature))
    except Exception:  # no feature query on this platform: stay portable
        return False


def _arch() -> str:
    try:
        import llvmlite.binding as llvm

        return llvm.get_process_triple().split("-")[0]
    except Exception:
        return ""


AVAILABLE = _has("avx512f")
"""Whether :func:`nf4_row_dot` can be compiled and run here."""


def _bytes_isa() -> str | None:
    arch = _arch()
    if arch == "x86_64":
        return "avx2" if _has("avx2") and _has("fma") else "ssse3" if _has("ssse3") else None
    if arch in ("aarch64", "arm64"):
        return "neon"   # Advanced SIMD is part of every AArch64 CPU
    return None


BYTES_ISA = _bytes_isa()
"""Which byte lookup :func:`nf4_row_dot_bytes` uses here: ``"avx2"`` (32-byte ``vpshufb``),
``"ssse3"`` (16-byte ``pshufb``), ``"neon"`` (16-byte ``tbl``), or None (not available)."""

BYTES_WIDTH = {"avx2": 32, "ssse3": 16, "neon": 16}
"""Packed bytes per step of :func:`nf4_row_dot_bytes` for each ISA (values per step: twice that)."""

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


# --- byte-shuffle lookups (AVX2 / SSSE3 / NEON) ------------------------------------------

def _unpack_mask(n: int, lane: int, high: bool) -> list[int]:
    """Shuffle mask interleaving two n-element vectors within each ``lane`` elements, from
    the low (or high) half of the lane: x86 ``punpckl*``/``punpckh*``, NEON ``zip1``/``zip2``."""
    half = lane // 2
    out = []
    for start in range(0, n, lane):
        for i in range(half):
            k = start + (half if high else 0) + i
            out += [k, n + k]
    return out


def bytes_value_order(width: int) -> np.ndarray:
    """For one step of :func:`nf4_row_dot_bytes` (``2 * width`` values), the value index
    behind each lane of the 8 float vectors it multiplies with x (high-nibble vectors
    first): ``x`` permuted by this order lines up with the rebuilt table values. Derived
    by running the emitter's own shuffle masks on index arrays."""
    def unpack(a, b, lane, high):
        return np.concatenate([a, b])[_unpack_mask(a.size, lane, high)]

    out = []
    for h in (0, 1):                                  # high nibbles: even values; low: odd
        src = 2 * np.arange(width) + h
        lo8, hi8 = unpack(src, src, 16, False)[::2], unpack(src, src, 16, True)[::2]   # one index per 16-bit pair
        for half in (lo8, hi8):
            for high in (False, True):
                out.append(unpack(half, half, 8, high)[::2])                          # one per 32-bit value
    return np.concatenate(out)


def bytes_planes(code: np.ndarray, width: int) -> np.ndarray:
    """The 16-entry float32 table as four byte planes (least significant byte first),
    each repeated to ``width`` bytes (one copy per 16-byte lane): uint8 ``(4 * width,)``."""
    b = np.ascontiguousarray(code, dtype="<f4").view(np.uint8).reshape(16, 4)
    return np.ascontiguousarray(np.concatenate([np.tile(b[:, k], width // 16) for k in range(4)]))


_i8 = ir.IntType(8)
_i16 = ir.IntType(16)


def _lookup(builder, isa: str, width: int):
    """``f(table, idx)``: ``table[idx]`` per byte, 16-entry tables per 16-byte lane,
    indices in 0..15 (where pshufb and tbl agree)."""
    v16 = ir.VectorType(_i8, 16)
    mod = builder.module
    if isa == "avx2":
        vw = ir.VectorType(_i8, width)
        fn = cgutils.get_or_insert_function(mod, ir.FunctionType(vw, [vw, vw]), "llvm.x86.avx2.pshuf.b")
        return lambda t, i: builder.call(fn, [t, i])
    name = {"ssse3": "llvm.x86.ssse3.pshuf.b.128", "neon": "llvm.aarch64.neon.tbl1.v16i8"}[isa]
    fn = cgutils.get_or_insert_function(mod, ir.FunctionType(v16, [v16, v16]), name)
    return lambda t, i: builder.call(fn, [t, i])


def emit_nf4_bytes_dot(builder, isa, pk_p, byte_offset, x_p, a_p, block_offset, planes_p, n_in, bs):
    """Emit the row dot product of :func:`nf4_row_dot_bytes` at ``builder`` (raw pointers:
    ``i8*`` packed and planes, ``float*`` x (permuted) and absmax; ``i64`` offsets and
    sizes); returns the float32 value. Shared by the Numba intrinsic and the tests that
    compile it for other targets."""
    width = BYTES_WIDTH[isa]
    lanes = width // 4
    vb, vh, vf = ir.VectorType(_i8, width), ir.VectorType(_i16, width // 2), ir.VectorType(_f32, lanes)
    vmask = lambda m: ir.Constant(ir.VectorType(_i32, len(m)), m)   # noqa: E731
    lookup = _lookup(builder, isa, width)
    mod = builder.module
    fma = cgutils.get_or_insert_function(mod, ir.FunctionType(vf, [vf, vf, vf]), f"llvm.fma.v{lanes}f32")
    reduce_add = cgutils.get_or_insert_function(mod, ir.FunctionType(_f32, [_f32, vf]),
                                                f"llvm.vector.reduce.fadd.v{lanes}f32")
    i64 = lambda v: ir.Constant(_i64, v)   # noqa: E731
    planes = [builder.load(builder.bitcast(builder.gep(planes_p, [i64(k * width)]), vb.as_pointer()), align=1)
              for k in range(4)]
    lo8, hi8 = vmask(_unpack_mask(width, 16, False)), vmask(_unpack_mask(width, 16, True))
    lo16, hi16 = vmask(_unpack_mask(width // 2, 8, False)), vmask(_unpack_mask(width // 2, 8, True))
    zero = ir.Constant(vf, [0.0] * lanes)
    row_acc = cgutils.alloca_once_value(builder, zero)
    steps = builder.sdiv(bs, i64(2 * width))
    with cgutils.for_range(builder, builder.sdiv(n_in, bs)) as block:
        # four accumulators: the sums of one block stay independent chains
        accs = [cgutils.alloca_once_value(builder, zero) for _ in range(4)]
        with cgutils.for_range(builder, steps) as step:
            j = builder.add(builder.mul(block.index, steps), step.index)
            src = builder.gep(pk_p, [builder.add(byte_offset, builder.mul(j, i64(width)))])
            packed = builder.load(builder.bitcast(src, vb.as_pointer()), align=1)
            nibbles = (builder.lshr(packed, ir.Constant(vb, [4] * width)),
                       builder.and_(packed, ir.Constant(vb, [15] * width)))
            x0 = builder.mul(j, i64(2 * width))
            for h, idx in enumerate(nibbles):
                p0, p1, p2, p3 = (lookup(planes[k], idx) for k in range(4))
                u01 = [builder.bitcast(builder.shuffle_vector(p0, p1, m), vh) for m in (lo8, hi8)]
                u23 = [builder.bitcast(builder.shuffle_vector(p2, p3, m), vh) for m in (lo8, hi8)]
                values = [builder.bitcast(builder.shuffle_vector(u01[a], u23[a], m), vf)
                          for a in (0, 1) for m in (lo16, hi16)]
                for q, val in enumerate(values):
                    xp = builder.gep(x_p, [builder.add(x0, i64((4 * h + q) * lanes))])
                    xv = builder.load(builder.bitcast(xp, vf.as_pointer()), align=4)
                    builder.store(builder.call(fma, [val, xv, builder.load(accs[q])]), accs[q])
        s = builder.fadd(builder.fadd(builder.load(accs[0]), builder.load(accs[1])),
                         builder.fadd(builder.load(accs[2]), builder.load(accs[3])))
        a = builder.load(builder.gep(a_p, [builder.add(block_offset, block.index)]))
        a_v = builder.insert_element(ir.Constant(vf, ir.Undefined), a, ir.Constant(_i32, 0))
        a_v = builder.shuffle_vector(a_v, a_v, vmask([0] * lanes))
        builder.store(builder.call(fma, [s, a_v, builder.load(row_acc)]), row_acc)
    return builder.call(reduce_add, [ir.Constant(_f32, 0.0), builder.load(row_acc)], fastmath=("reassoc",))


def _bytes_intrinsic(isa: str | None):
    @intrinsic
    def row_dot(typingctx, packed, byte_offset, x, absmax, block_offset, planes, n_in, bs):
        arrays = (packed, x, absmax, planes)
        dtypes = (types.uint8, types.float32, types.float32, types.uint8)
        if isa is None or not all(isinstance(a, types.Array) and a.dtype == d and a.ndim == 1 and a.layout == "C"
                                  for a, d in zip(arrays, dtypes)):
            return None   # a typing error: no such ISA here, or a layout the loads do not assume
        sig = types.float32(packed, types.int64, x, absmax, types.int64, planes, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            pk, byte_offset, xs, am, block_offset, pl, n_in, bs = args

            def data(i, value):
                return cgutils.create_struct_proxy(signature.args[i])(context, builder, value=value).data

            return emit_nf4_bytes_dot(builder, isa, data(0, pk), byte_offset, data(2, xs), data(3, am),
                                      block_offset, data(5, pl), n_in, bs)

        return sig, codegen

    return row_dot


BYTES_ISA_128 = {"avx2": "ssse3", "ssse3": "ssse3", "neon": "neon"}.get(BYTES_ISA or "")
"""The 16-byte variant available here (on AVX2 machines: SSSE3, the same code NEON runs
but for the lookup instruction; tests force it)."""

nf4_row_dot_bytes = _bytes_intrinsic(BYTES_ISA)
"""``sum_b absmax[block_offset + b] * sum_j table[q_j] * x[perm_j]`` over one row: the
arguments of :func:`nf4_row_dot` with ``x`` permuted per step by
:func:`bytes_value_order` and the table as :func:`bytes_planes`; requires
``bs % (2 * BYTES_WIDTH[BYTES_ISA]) == 0`` and ``n_in % bs == 0`` (the caller checks)."""

nf4_row_dot_bytes_128 = _bytes_intrinsic(BYTES_ISA_128)
"""The same with 16-byte vectors (:data:`BYTES_ISA_128`)."""


# --- GPTQ 4-bit --------------------------------------------------------------------------

GPTQ_COLS = 16
"""Columns one register block of :func:`gptq4_group_dot` covers: 2 vectors of 8, two
accumulators each (even and odd nibbles), so four FMA chains in flight. Measured on one
Zen 2 core, 4096x4096: 0.94-0.97 ms, against 1.10-1.24 ms for 32 columns with two
accumulators each (register spills) and 1.5-2.7 ms for 8 or fewer chains."""


def emit_gptq4_group(builder, q_p, cols, w0, w1, c0, c1, x_p, xs, s_p, z_p, zcols, g, y_p):
    """Emit :func:`gptq4_group_dot` at ``builder`` (raw pointers ``i32*`` qweight and
    qzeros, ``float*`` x (scaled), scales, y; ``i64`` sizes, ``float`` xs)."""
    lanes = 8
    vi, vf = ir.VectorType(_i32, lanes), ir.VectorType(_f32, lanes)
    i64 = lambda v: ir.Constant(_i64, v)   # noqa: E731
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vf, [vf, vf, vf]), "llvm.fma.v8f32")
    zero = ir.Constant(vf, [0.0] * lanes)
    splat0 = ir.Constant(ir.VectorType(_i32, lanes), [0] * lanes)
    # nibble j of a word masked in place: q_j * 16^j, >= 0 as int32 for j < 7; the top
    # nibble is shifted down by 4 first and then weighs 16^6 like nibble 6
    masks = [ir.Constant(vi, [15 << (4 * j)] * lanes) for j in range(7)]
    four = ir.Constant(vi, [4] * lanes)

    def splat(value):
        v = builder.insert_element(ir.Constant(vf, ir.Undefined), value, ir.Constant(_i32, 0))
        return builder.shuffle_vector(v, v, splat0)

    def vptr(ptr, idx):
        return builder.bitcast(builder.gep(ptr, [idx]), vf.as_pointer() if ptr is not q_p else vi.as_pointer())

    xs_v = splat(xs)
    row0 = builder.mul(g, cols)

    def columns(unroll, start, stop):
        n = builder.sdiv(builder.sub(stop, start), i64(lanes * unroll))
        with cgutils.for_range(builder, n) as blk:
            c = builder.add(start, builder.mul(blk.index, i64(lanes * unroll)))
            # two accumulators per vector (even and odd nibbles): shorter FMA chains
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(2)] for _ in range(unroll)]
            with cgutils.for_range(builder, builder.sub(w1, w0)) as wl:
                w = builder.add(w0, wl.index)
                base = builder.add(builder.mul(w, cols), c)
                words = [builder.load(vptr(q_p, builder.add(base, i64(lanes * u))), align=4) for u in range(unroll)]
                sums = [[builder.load(accs[u][k]) for k in range(2)] for u in range(unroll)]
                for j in range(8):
                    xv = splat(builder.load(builder.gep(x_p, [builder.add(builder.mul(w, i64(8)), i64(j))])))
                    for u in range(unroll):
                        q = (builder.and_(words[u], masks[j]) if j < 7
                             else builder.and_(builder.ashr(words[u], four), masks[6]))
                        sums[u][j % 2] = builder.call(fma, [xv, builder.sitofp(q, vf), sums[u][j % 2]])
                for u in range(unroll):
                    for k in range(2):
                        builder.store(sums[u][k], accs[u][k])
            for u in range(unroll):
                cc = builder.add(c, i64(lanes * u))
                t = builder.fadd(builder.load(accs[u][0]), builder.load(accs[u][1]))
                s = builder.load(vptr(s_p, builder.add(row0, cc)), align=4)
                # zero points: one packed word per 8 columns (nibble k = column c + k), stored minus 1
                zw = builder.load(builder.gep(z_p, [builder.add(builder.mul(g, zcols), builder.sdiv(cc, i64(8)))]))
                zw = builder.shuffle_vector(builder.insert_element(ir.Constant(vi, ir.Undefined), zw, ir.Constant(_i32, 0)),
                                            ir.Constant(vi, ir.Undefined), splat0)
                zq = builder.and_(builder.lshr(zw, ir.Constant(vi, [4 * k for k in range(lanes)])), masks[0])
                z = builder.sitofp(builder.add(zq, ir.Constant(vi, [1] * lanes)), vf)
                y = builder.load(vptr(y_p, cc), align=4)
                y = builder.call(fma, [s, builder.fsub(t, builder.fmul(z, xs_v)), y])
                builder.store(y, vptr(y_p, cc), align=4)
        return builder.add(start, builder.mul(n, i64(lanes * unroll)))

    columns(1, columns(GPTQ_COLS // lanes, c0, c1), c1)


@intrinsic
def gptq4_group_dot(typingctx, qweight, w0, w1, c0, c1, xq, xs, scales, qzeros, g, y):
    """``y[c] += scales[g, c] * (sum_r x_r q[r, c] - z[g, c] * xs)`` for ``c0 <= c < c1``
    (``c0`` and ``c1 - c0`` multiples of 8) over the words ``w0 <= w < w1`` of ``qweight``
    (int32 ``(words, cols)``, GPTQ 4-bit packing along the inputs), where ``xq[8w + j]``
    is ``x[8w + j] * 16^-min(j, 6)`` (float32, padded to ``8 * words``), ``xs`` the sum
    of the group's x, ``scales`` float32 ``(groups, cols)``, ``qzeros`` int32
    ``(groups, cols / 8)`` (GPTQ v1: ``z - 1`` packed along the outputs), ``y`` float32.
    All arrays C-contiguous."""
    arrays = (qweight, xq, scales, qzeros, y)
    dtypes = (types.int32, types.float32, types.float32, types.int32, types.float32)
    ndims = (2, 1, 2, 2, 1)
    if not all(isinstance(a, types.Array) and a.dtype == d and a.ndim == nd and a.layout == "C"
               for a, d, nd in zip(arrays, dtypes, ndims)):
        return None
    sig = types.void(qweight, types.int64, types.int64, types.int64, types.int64, xq, types.float32, scales, qzeros,
                     types.int64, y)

    def codegen(context, builder, signature, args):
        qw, w0, w1, c0, c1, xq_, xs, sc, ze, g, y_ = args

        def proxy(i, value):
            return cgutils.create_struct_proxy(signature.args[i])(context, builder, value=value)

        q, z = proxy(0, qw), proxy(8, ze)
        emit_gptq4_group(builder, q.data, builder.extract_value(q.shape, 1), w0, w1, c0, c1, proxy(5, xq_).data, xs,
                         proxy(7, sc).data, z.data, builder.extract_value(z.shape, 1), g, proxy(10, y_).data)
        return context.get_dummy_value()

    return sig, codegen
