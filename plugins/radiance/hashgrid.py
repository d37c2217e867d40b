"""Multi-resolution hash encoding (Instant-NGP, Mueller et al. 2022, section 3), with
tiny-cuda-nn's exact indexing:

- level l has scale ``s_l = base * b**l - 1`` and resolution ``ceil(s_l) + 1``;
- a point x in [0, 1]^3 sits at ``x * s_l + 0.5`` (the +0.5 offset); its 8 corners are
  ``floor`` of that plus {0, 1}^3, blended trilinearly;
- a level whose dense grid fits the table (``res**3 <= T``) is indexed densely
  (``x + y*res + z*res*res``); otherwise by the spatial hash
  ``(x * 1) ^ (y * 2654435761) ^ (z * 805459861)`` in uint32 arithmetic; both mod T.

Kernels (numpy in, numpy out; the same signature on every backend):
``hash_encode(x[N,3], table[L,T,F], scales[L], resolutions[L]) -> feats[N, L*F]`` and
``hash_encode_bwd(x, grad_feats[N, L*F], scales, resolutions, T) -> grad_table[L,T,F]``.
Points are clamped to [0, 1]. No gradient with respect to x (NeRF does not need it).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

PRIMES = (1, 2654435761, 805459861)


def level_params(levels: int, base_resolution: int, per_level_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(scales float32 [L], resolutions int32 [L]) as tiny-cuda-nn computes them."""
    scales = np.array([math.exp2(l * math.log2(per_level_scale)) * base_resolution - 1.0 for l in range(levels)],
                      np.float32)
    res = np.array([math.ceil(float(s)) + 1 for s in scales], np.int32)
    return scales, res


def per_level_scale_for(levels: int, base_resolution: int, max_resolution: int) -> float:
    return math.exp(math.log(max_resolution / base_resolution) / max(levels - 1, 1))


def _check(x, table_or_T, scales, resolutions):
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"x must be [N, 3], got {x.shape}")
    if len(scales) != len(resolutions):
        raise ValueError("scales and resolutions must have the same length")


# ----------------------------------------------------------------------------- reference (torch)
def _torch_indices(xl, scale: float, res: int, T: int):
    """Corner indices [N, 8] and trilinear weights [N, 8] of one level (torch)."""
    import torch

    pos = xl * torch.tensor(scale, dtype=xl.dtype) + 0.5
    grid = torch.floor(pos)
    frac = pos - grid
    grid = grid.to(torch.int64)
    idx, w = [], []
    for c in range(8):
        bits = torch.tensor([(c >> d) & 1 for d in range(3)], dtype=torch.int64)
        p = grid + bits
        wc = torch.prod(torch.where(bits.bool(), frac, 1 - frac), dim=1)
        if res ** 3 <= T:  # dense: the level fits the table
            i = p[:, 0] + p[:, 1] * res + p[:, 2] * res * res
        else:
            i = p[:, 0] ^ ((p[:, 1] * PRIMES[1]) & 0xFFFFFFFF) ^ ((p[:, 2] * PRIMES[2]) & 0xFFFFFFFF)
        idx.append(i % T)
        w.append(wc)
    return torch.stack(idx, 1), torch.stack(w, 1)


def hash_encode_torch(x, table, scales, resolutions):
    """Differentiable (w.r.t. ``table``) torch version: the specification."""
    import torch

    L, T, F = table.shape
    x = x.clamp(0, 1)
    out = []
    for l in range(L):
        idx, w = _torch_indices(x, float(scales[l]), int(resolutions[l]), T)
        out.append((table[l][idx] * w[..., None]).sum(1))
    return torch.cat(out, 1) if out else x.new_zeros((x.shape[0], 0))


def hash_encode(x, table, scales, resolutions):
    import torch

    _check(x, table, scales, resolutions)
    with torch.no_grad():
        return hash_encode_torch(torch.as_tensor(np.asarray(x)), torch.as_tensor(np.asarray(table)),
                                 np.asarray(scales), np.asarray(resolutions)).numpy()


def hash_encode_bwd(x, grad_feats, scales, resolutions, T):
    import torch

    _check(x, T, scales, resolutions)
    grad_feats = torch.as_tensor(np.asarray(grad_feats))
    L = len(scales)
    F = grad_feats.shape[1] // max(L, 1)
    table = torch.zeros((L, int(T), F), dtype=grad_feats.dtype, requires_grad=True)
    out = hash_encode_torch(torch.as_tensor(np.asarray(x)).to(grad_feats.dtype), table, np.asarray(scales),
                            np.asarray(resolutions))
    if out.numel():
        out.backward(grad_feats)
        return table.grad.numpy()
    return np.zeros((L, int(T), F), grad_feats.numpy().dtype)


# ----------------------------------------------------------------------------- numba-cpu
def grid_index(gx, gy, gz, res, T):
    """tiny-cuda-nn ``grid_index``: dense when the level fits, else the spatial hash; mod T.
    Plain Python: compiled inline by the CPU kernels below and as a CUDA device function
    in hashgrid_cuda."""
    if res * res * res <= T:
        idx = gx + gy * res + gz * res * res
    else:
        idx = gx ^ ((gy * np.int64(2654435761)) & np.int64(0xFFFFFFFF)) ^ ((gz * np.int64(805459861)) & np.int64(0xFFFFFFFF))
    if T & (T - 1) == 0:  # a power of two (the usual table): the same as % for idx >= 0, without a division
        return idx & (T - 1)
    return idx % T


corner_index = njit(inline="always")(grid_index)


@njit(inline="always")
def _cell(x, n, sc, half):
    """Point ``n`` (already clamped to [0, 1]^3) on a level of scale ``sc``: the low corner
    of its grid cell and its trilinear fractions in the cell (gx, gy, gz, tx, ty, tz)."""
    px = x[n, 0] * sc + half[0]
    py = x[n, 1] * sc + half[0]
    pz = x[n, 2] * sc + half[0]
    fx, fy, fz = math.floor(px), math.floor(py), math.floor(pz)
    return np.int64(fx), np.int64(fy), np.int64(fz), px - fx, py - fy, pz - fz


@njit(parallel=True, cache=True)
def _fwd_cpu(x, table, scales, resolutions, half, out):
    # Levels outermost: each task streams all points through one level's table (a few MB),
    # which stays in cache, instead of every point touching all L tables.
    N = x.shape[0]
    L, T, F = table.shape
    for l in prange(L):
        sc = scales[l]
        res = np.int64(resolutions[l])
        for n in range(N):
            gx, gy, gz, tx, ty, tz = _cell(x, n, sc, half)
            for f in range(F):
                out[n, l * F + f] = 0
            for c in range(8):
                bx, by, bz = c & 1, (c >> 1) & 1, (c >> 2) & 1
                w = (tx if bx else 1 - tx) * (ty if by else 1 - ty) * (tz if bz else 1 - tz)
                i = corner_index(gx + bx, gy + by, gz + bz, res, np.int64(T))
                for f in range(F):
                    out[n, l * F + f] += w * table[l, i, f]


@njit(parallel=True, cache=True)
def _fwd_cpu_f2(x, table, scales, resolutions, half, out):
    # _fwd_cpu for float32 tables of two features (the NeRF default): the sums are kept in
    # registers instead of read back from ``out`` at every corner, each add rounded to
    # float32 as the store in _fwd_cpu rounds it, so the bits are the same.
    N = x.shape[0]
    L, T, F = table.shape
    for l in prange(L):
        sc = scales[l]
        res = np.int64(resolutions[l])
        for n in range(N):
            gx, gy, gz, tx, ty, tz = _cell(x, n, sc, half)
            a0 = np.float32(0)
            a1 = np.float32(0)
            for c in range(8):
                bx, by, bz = c & 1, (c >> 1) & 1, (c >> 2) & 1
                w = (tx if bx else 1 - tx) * (ty if by else 1 - ty) * (tz if bz else 1 - tz)
                i = corner_index(gx + bx, gy + by, gz + bz, res, np.int64(T))
                a0 = np.float32(a0 + w * table[l, i, 0])
                a1 = np.float32(a1 + w * table[l, i, 1])
            out[n, 2 * l] = a0
            out[n, 2 * l + 1] = a1


@njit(parallel=True, cache=True)
def _bwd_cpu(x, grad, scales, resolutions, half, gtable):
    # One level per parallel task: each level owns its slice of the table, so no races.
    N = x.shape[0]
    L, T, F = gtable.shape
    for l in prange(L):
        sc = scales[l]
        res = np.int64(resolutions[l])
        for n in range(N):
            gx, gy, gz, tx, ty, tz = _cell(x, n, sc, half)
            for c in range(8):
                bx, by, bz = c & 1, (c >> 1) & 1, (c >> 2) & 1
                w = (tx if bx else 1 - tx) * (ty if by else 1 - ty) * (tz if bz else 1 - tz)
                i = corner_index(gx + bx, gy + by, gz + bz, res, np.int64(T))
                for f in range(F):
                    gtable[l, i, f] += w * grad[n, l * F + f]


def _prep(x, scales, resolutions, dtype):
    """Clamped contiguous points, scales in the table's dtype (so x * s + 0.5 rounds as the
    float32 reference does), int64 resolutions, and 0.5 in that dtype."""
    x = np.ascontiguousarray(np.clip(np.asarray(x, dtype=dtype), 0, 1))
    return (x, np.ascontiguousarray(np.asarray(scales), dtype=dtype), np.ascontiguousarray(resolutions, dtype=np.int64),
            np.array([0.5], dtype))


def hash_encode_cpu(x, table, scales, resolutions):
    _check(x, table, scales, resolutions)
    table = np.ascontiguousarray(table)
    x, sc, res, half = _prep(x, scales, resolutions, table.dtype)
    L, T, F = table.shape
    out = np.empty((x.shape[0], L * F), table.dtype)
    if out.size:
        (_fwd_cpu_f2 if F == 2 and table.dtype == np.float32 else _fwd_cpu)(x, table, sc, res, half, out)
    return out


def hash_encode_bwd_cpu(x, grad_feats, scales, resolutions, T):
    _check(x, T, scales, resolutions)
    grad = np.ascontiguousarray(grad_feats)
    x, sc, res, half = _prep(x, scales, resolutions, grad.dtype)
    L = len(sc)
    F = grad.shape[1] // max(L, 1)
    out = np.zeros((L, int(T), F), grad.dtype)
    if x.shape[0] and L:
        _bwd_cpu(x, grad, sc, res, half, out)
    return out


# ----------------------------------------------------------------------------- autograd
class HashEncodeFn:
    """``HashEncodeFn.apply(x, table, scales, resolutions, backend=None)``: a
    torch.autograd.Function (built lazily so this module imports without torch) whose
    backward gives d/d table. Both passes go through the kernel registry on the tensors'
    device (``backend`` forces one, e.g. in tests)."""

    _fn = None

    @classmethod
    def apply(cls, x, table, scales, resolutions, backend: str | None = None):
        if cls._fn is None:
            cls._fn = _make_fn()
        return cls._fn.apply(x, table, scales, resolutions, backend)


def _make_fn():
    import torch

    from gpuforge.core.kernels import call
    from gpuforge.plugins.radiance import kernel_io as kio

    class _Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, table, scales, resolutions, backend):
            ctx.save_for_backward(x)
            ctx.meta = (scales, resolutions, table.shape[1], backend)
            out = call("radiance.hash_encode", kio.arg(x), kio.arg(table), scales, resolutions, backend=backend)
            return kio.tensor(out, x.device)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            scales, resolutions, T, backend = ctx.meta
            g = call("radiance.hash_encode_bwd", kio.arg(x), kio.arg(grad), scales, resolutions, T, backend=backend)
            return None, kio.tensor(g, grad.device), None, None, None

    return _Fn


# ----------------------------------------------------------------------------- cases
def cases():
    from gpuforge.core.specs import KernelCase

    rng = np.random.default_rng(0)
    out = []
    for name, N, L, T, F, base, b, sim in (("small", 50, 4, 2 ** 10, 2, 4, 2.0, True),
                                         ("odd", 37, 3, 999, 3, 3, 1.7, True),
                                         ("dense+hash", 200, 6, 2 ** 12, 2, 8, 1.6, True),
                                         ("big", 3000, 16, 2 ** 14, 2, 16, 1.38, False)):
        x = rng.random((N, 3)).astype(np.float32)
        x[:3] = [[0, 0, 0], [1, 1, 1], [0.5, 1, 0]]  # corners of the unit cube
        table = (rng.standard_normal((L, T, F)) * 0.1).astype(np.float32)
        sc, res = level_params(L, base, b)
        out.append(KernelCase(name, (x, table, sc, res), simulator=sim))
    x = rng.random((20, 3)).astype(np.float32) * 1.4 - 0.2  # outside the cube: clamped
    table = rng.standard_normal((2, 64, 2)).astype(np.float32)
    sc, res = level_params(2, 4, 2.0)
    out.append(KernelCase("clamped", (x, table, sc, res)))
    xs = rng.random((40, 6)).astype(np.float32)[:, ::2]  # non-contiguous
    out.append(KernelCase("noncontiguous", (xs, table, sc, res)))
    out.append(KernelCase("empty", (np.zeros((0, 3), np.float32), table, sc, res)))
    out.append(KernelCase("bad-shape", (np.zeros((4, 2), np.float32), table, sc, res)))
    return out


def bwd_cases():
    from gpuforge.core.specs import KernelCase

    rng = np.random.default_rng(1)
    out = []
    for c in cases():
        if c.name == "bad-shape":
            out.append(KernelCase(c.name, (c.args[0], np.zeros((4, 4), np.float32), c.args[2], c.args[3], 64)))
            continue
        x, table, sc, res = c.args
        L, T, F = table.shape
        g = rng.standard_normal((x.shape[0], L * F)).astype(np.float32)
        out.append(KernelCase(c.name, (x, g, sc, res, T), simulator=c.simulator))
    return out
