"""Ray marching through an occupancy grid and front-to-back compositing with early
termination (Instant-NGP section 4 / appendix E: samples only in occupied cells,
stop once transmittance falls below 1e-4).

- ``march_rays(origins[R,3], dirs[R,3], aabb[2,3], occ[G,G,G] uint8, step, max_samples,
  offsets[R])`` -> ``(ray_ranges[R+1] int32, ts[M] float32, deltas[M] float32)``:
  candidate samples at ``t_k = t_near + (offset + k) * step`` inside the box, kept when
  their grid cell is occupied, at most ``max_samples`` per ray (computed in float64).
- ``composite_fwd(sigmas[M], rgbs[M,3], deltas[M], ray_ranges)`` -> ``(color[R,3],
  opacity[R], n_used[R] int32)``: ``T_i = exp(-sum_{k<i} sigma_k delta_k)``,
  ``alpha_i = 1 - exp(-sigma_i delta_i)``, weight ``T_i alpha_i``; a sample is used while
  ``T_i >= 1e-4`` (the sample that crosses the threshold still counts).
- ``composite_bwd(sigmas, rgbs, deltas, ray_ranges, color, opacity, n_used, grad_color,
  grad_opacity)`` -> ``(grad_sigmas[M], grad_rgbs[M,3])``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import float64, njit, prange

T_MIN = 1e-4
EPS_DIR = 1e-12


# ============================================================================ marching
def _check_march(origins, dirs, aabb, occ, offsets):
    if np.ndim(origins) != 2 or np.shape(origins)[1] != 3 or np.shape(dirs) != np.shape(origins):
        raise ValueError("origins and dirs must be [R, 3]")
    if np.shape(aabb) != (2, 3) or np.ndim(occ) != 3 or len(offsets) != len(origins):
        raise ValueError("need aabb [2, 3], a 3-D occupancy grid and one offset per ray")


def _safe_dirs(d):
    d = np.asarray(d, np.float64).copy()
    small = np.abs(d) < EPS_DIR
    d[small] = np.where(d[small] < 0, -EPS_DIR, EPS_DIR)
    return d


def march_rays(origins, dirs, aabb, occ, step, max_samples, offsets):
    """Reference: all candidate samples of all rays at once (numpy, float64)."""
    _check_march(origins, dirs, aabb, occ, offsets)
    o = np.asarray(origins, np.float64)
    d = _safe_dirs(dirs)
    lo, hi = np.asarray(aabb, np.float64)
    occ = np.asarray(occ)
    G = np.array(occ.shape)
    t0, t1 = (lo - o) / d, (hi - o) / d
    tnear = np.maximum(np.minimum(t0, t1).max(1), 0.0)
    tfar = np.maximum(t0, t1).min(1)
    R = len(o)
    span = np.where(tfar > tnear, tfar - tnear, 0.0)
    S = int(np.ceil(span.max() / step)) + 1 if R else 0
    k = np.arange(S, dtype=np.float64)
    t = tnear[:, None] + (np.asarray(offsets, np.float64)[:, None] + k[None]) * step
    valid = t < tfar[:, None]
    p = o[:, None] + t[..., None] * d[:, None]
    cell = np.floor((p - lo) / (hi - lo) * G).astype(np.int64)
    cell = np.clip(cell, 0, G - 1)
    valid &= occ[cell[..., 0], cell[..., 1], cell[..., 2]] > 0
    valid &= np.cumsum(valid, 1) <= max_samples
    counts = valid.sum(1)
    ranges = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    ts = t[valid].astype(np.float32)
    return ranges, ts, np.full(len(ts), step, np.float32)


@njit(cache=True, inline="always")
def _ray_box(o0, o1, o2, d0, d1, d2, aabb):
    tn = 0.0
    tf = 1e30
    for a in range(3):
        o = (o0, o1, o2)[a]
        d = (d0, d1, d2)[a]
        if abs(d) < EPS_DIR:
            d = -EPS_DIR if d < 0 else EPS_DIR
        ta = (aabb[0, a] - o) / d
        tb = (aabb[1, a] - o) / d
        tn = max(tn, min(ta, tb))
        tf = min(tf, max(ta, tb))
    return tn, tf


@njit(cache=True, inline="always")
def _march_one(o, d, aabb, occ, step, max_samples, off, ts, start, write):
    d0, d1, d2 = d[0], d[1], d[2]
    if abs(d0) < EPS_DIR:
        d0 = -EPS_DIR if d0 < 0 else EPS_DIR
    if abs(d1) < EPS_DIR:
        d1 = -EPS_DIR if d1 < 0 else EPS_DIR
    if abs(d2) < EPS_DIR:
        d2 = -EPS_DIR if d2 < 0 else EPS_DIR
    tn, tf = _ray_box(o[0], o[1], o[2], d0, d1, d2, aabb)
    G0, G1, G2 = occ.shape
    n = 0
    if not tf > tn:
        return 0
    k = 0
    while True:
        t = tn + (off + k) * step
        if not t < tf or n >= max_samples:
            break
        c0 = min(max(int(math.floor((o[0] + t * d0 - aabb[0, 0]) / (aabb[1, 0] - aabb[0, 0]) * G0)), 0), G0 - 1)
        c1 = min(max(int(math.floor((o[1] + t * d1 - aabb[0, 1]) / (aabb[1, 1] - aabb[0, 1]) * G1)), 0), G1 - 1)
        c2 = min(max(int(math.floor((o[2] + t * d2 - aabb[0, 2]) / (aabb[1, 2] - aabb[0, 2]) * G2)), 0), G2 - 1)
        if occ[c0, c1, c2]:
            if write:
                ts[start + n] = t
            n += 1
        k += 1
    return n


@njit(parallel=True, cache=True)
def _march_count(o, d, aabb, occ, step, max_samples, offsets, counts):
    dummy = np.zeros(1, np.float32)
    for r in prange(o.shape[0]):
        counts[r + 1] = _march_one(o[r], d[r], aabb, occ, step, max_samples, offsets[r], dummy, 0, False)


@njit(parallel=True, cache=True)
def _march_fill(o, d, aabb, occ, step, max_samples, offsets, ranges, ts):
    for r in prange(o.shape[0]):
        _march_one(o[r], d[r], aabb, occ, step, max_samples, offsets[r], ts, ranges[r], True)


def march_rays_cpu(origins, dirs, aabb, occ, step, max_samples, offsets):
    _check_march(origins, dirs, aabb, occ, offsets)
    o = np.ascontiguousarray(origins, np.float64)
    d = np.ascontiguousarray(dirs, np.float64)
    aabb = np.ascontiguousarray(aabb, np.float64)
    occ = np.ascontiguousarray(occ, np.uint8)
    off = np.ascontiguousarray(offsets, np.float64)
    R = len(o)
    counts = np.zeros(R + 1, np.int64)
    if R:
        _march_count(o, d, aabb, occ, float(step), int(max_samples), off, counts)
    ranges = np.cumsum(counts).astype(np.int32)
    ts = np.empty(int(ranges[-1]), np.float32)
    if len(ts):
        _march_fill(o, d, aabb, occ, float(step), int(max_samples), off, ranges.astype(np.int64), ts)
    return ranges, ts, np.full(len(ts), step, np.float32)


# ============================================================================ compositing
def _check_comp(sigmas, rgbs, deltas, ranges):
    m = len(sigmas)
    if np.shape(rgbs) != (m, 3) or np.shape(deltas) != (m,) or np.ndim(ranges) != 1 or len(ranges) < 1:
        raise ValueError("need sigmas [M], rgbs [M, 3], deltas [M], ray_ranges [R+1]")
    if int(ranges[-1]) != m:
        raise ValueError(f"ray_ranges ends at {int(ranges[-1])}, but there are {m} samples")


def composite_torch(sigmas, rgbs, deltas, ranges):
    """Differentiable reference: pad rays to a [R, S] grid and use cumulative sums."""
    import torch

    ranges = np.asarray(ranges, np.int64)
    R = len(ranges) - 1
    counts = np.diff(ranges)
    S = int(counts.max()) if R else 0
    ray = torch.as_tensor(np.repeat(np.arange(R), counts))
    pos = torch.as_tensor(np.arange(len(sigmas)) - np.repeat(ranges[:-1], counts))
    sd = torch.zeros((R, S), dtype=sigmas.dtype).index_put((ray, pos), sigmas * deltas)
    col = torch.zeros((R, S, 3), dtype=rgbs.dtype).index_put((ray, pos), rgbs)
    excl = torch.cumsum(sd, 1) - sd
    T = torch.exp(-excl)
    used = T >= T_MIN
    alpha = torch.where(used, 1 - torch.exp(-sd), torch.zeros_like(sd))
    w = alpha * T
    color = (w[..., None] * col).sum(1)
    opacity = w.sum(1)
    exists = torch.zeros((R, S), dtype=torch.bool).index_put((ray, pos), torch.ones(len(sigmas), dtype=torch.bool))
    n_used = (used & exists).sum(1).to(torch.int32)
    return color, opacity, n_used


def composite_fwd(sigmas, rgbs, deltas, ray_ranges):
    import torch

    _check_comp(sigmas, rgbs, deltas, ray_ranges)
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    with torch.no_grad():
        return tuple(v.numpy() for v in composite_torch(t(sigmas), t(rgbs), t(deltas), ray_ranges))


def composite_bwd(sigmas, rgbs, deltas, ray_ranges, color, opacity, n_used, grad_color, grad_opacity):
    import torch

    _check_comp(sigmas, rgbs, deltas, ray_ranges)
    s = torch.tensor(np.asarray(sigmas, np.float32), requires_grad=True)
    c = torch.tensor(np.asarray(rgbs, np.float32), requires_grad=True)
    col, op, _ = composite_torch(s, c, torch.as_tensor(np.asarray(deltas, np.float32)), ray_ranges)
    loss = (col * torch.as_tensor(np.asarray(grad_color, np.float32))).sum() + \
        (op * torch.as_tensor(np.asarray(grad_opacity, np.float32))).sum()
    if loss.requires_grad:
        loss.backward()
    return ((s.grad if s.grad is not None else torch.zeros_like(s)).numpy(),
            (c.grad if c.grad is not None else torch.zeros_like(c)).numpy())


# Per-ray compositing, plain Python: compiled inline by the Numba CPU kernels below and
# as device functions by the CUDA kernels (raymarch_cuda.py). Optical depth in float64.

def composite_ray(sig, rgb, dl, a, b):
    """Front to back over samples a..b-1 of one ray (NeRF's quadrature): colour, opacity
    and how many samples were used before the transmittance fell under T_MIN."""
    s = 0.0
    c0 = 0.0
    c1 = 0.0
    c2 = 0.0
    op = 0.0
    n = 0
    for i in range(a, b):
        T = math.exp(-s)
        if T < T_MIN:
            break
        sd = float64(sig[i]) * dl[i]
        w = T * (1 - math.exp(-sd))
        c0 += w * rgb[i, 0]
        c1 += w * rgb[i, 1]
        c2 += w * rgb[i, 2]
        op += w
        s += sd
        n += 1
    return c0, c1, c2, op, n


def composite_ray_bwd(sig, rgb, dl, r, start, count, color, opacity, gc, go, gsig, grgb):
    """Gradients of ray r's colour and opacity with respect to its first ``count`` samples'
    densities and colours, written to gsig / grgb (each sample belongs to one ray)."""
    s = 0.0
    a0 = 0.0  # colour / opacity accumulated up to and including sample i
    a1 = 0.0
    a2 = 0.0
    aop = 0.0
    for i in range(start, start + count):
        T = math.exp(-s)
        sd = float64(sig[i]) * dl[i]
        w = T * (1 - math.exp(-sd))
        a0 += w * rgb[i, 0]
        a1 += w * rgb[i, 1]
        a2 += w * rgb[i, 2]
        aop += w
        s += sd
        T_next = math.exp(-s)
        grgb[i, 0] = w * gc[r, 0]
        grgb[i, 1] = w * gc[r, 1]
        grgb[i, 2] = w * gc[r, 2]
        g = gc[r, 0] * (T_next * rgb[i, 0] - (color[r, 0] - a0))
        g += gc[r, 1] * (T_next * rgb[i, 1] - (color[r, 1] - a1))
        g += gc[r, 2] * (T_next * rgb[i, 2] - (color[r, 2] - a2))
        g += go[r] * (T_next - (opacity[r] - aop))
        gsig[i] = dl[i] * g


_composite_ray = njit(inline="always")(composite_ray)
_composite_ray_bwd = njit(inline="always")(composite_ray_bwd)


@njit(parallel=True, cache=True)
def _comp_fwd_cpu(sig, rgb, dl, ranges, color, opacity, n_used):
    for r in prange(ranges.shape[0] - 1):
        c0, c1, c2, op, n = _composite_ray(sig, rgb, dl, ranges[r], ranges[r + 1])
        color[r, 0], color[r, 1], color[r, 2] = c0, c1, c2
        opacity[r] = op
        n_used[r] = n


@njit(parallel=True, cache=True)
def _comp_bwd_cpu(sig, rgb, dl, ranges, color, opacity, n_used, gc, go, gsig, grgb):
    for r in prange(ranges.shape[0] - 1):
        _composite_ray_bwd(sig, rgb, dl, r, ranges[r], n_used[r], color, opacity, gc, go, gsig, grgb)


def composite_fwd_cpu(sigmas, rgbs, deltas, ray_ranges):
    _check_comp(sigmas, rgbs, deltas, ray_ranges)
    R = len(ray_ranges) - 1
    color, opacity, n_used = np.zeros((R, 3), np.float32), np.zeros(R, np.float32), np.zeros(R, np.int32)
    if R:
        _comp_fwd_cpu(np.ascontiguousarray(sigmas, np.float32), np.ascontiguousarray(rgbs, np.float32),
                      np.ascontiguousarray(deltas, np.float32), np.ascontiguousarray(ray_ranges, np.int64),
                      color, opacity, n_used)
    return color, opacity, n_used


def composite_bwd_cpu(sigmas, rgbs, deltas, ray_ranges, color, opacity, n_used, grad_color, grad_opacity):
    _check_comp(sigmas, rgbs, deltas, ray_ranges)
    M = len(sigmas)
    gsig, grgb = np.zeros(M, np.float32), np.zeros((M, 3), np.float32)
    if len(ray_ranges) > 1 and M:
        _comp_bwd_cpu(np.ascontiguousarray(sigmas, np.float32), np.ascontiguousarray(rgbs, np.float32),
                      np.ascontiguousarray(deltas, np.float32), np.ascontiguousarray(ray_ranges, np.int64),
                      np.ascontiguousarray(color, np.float32), np.ascontiguousarray(opacity, np.float32),
                      np.ascontiguousarray(n_used, np.int64), np.ascontiguousarray(grad_color, np.float32),
                      np.ascontiguousarray(grad_opacity, np.float32), gsig, grgb)
    return gsig, grgb


# ============================================================================ cases
def march_cases():
    from gpuforge.core.specs import KernelCase

    rng = np.random.default_rng(0)
    out = []
    for name, R, G, sim in (("small", 40, 8, True), ("odd", 53, 5, True), ("big", 2000, 32, False)):
        o = rng.normal(size=(R, 3)).astype(np.float32)
        o = o / np.linalg.norm(o, axis=1, keepdims=True) * 3
        d = -o + rng.normal(size=(R, 3)).astype(np.float32) * 0.5
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        occ = (rng.random((G, G, G)) < 0.4).astype(np.uint8)
        out.append(KernelCase(name, (o, d.astype(np.float32), np.array([[-1, -1, -1], [1, 1, 1]], np.float32), occ,
                                     0.05, 64, rng.random(R).astype(np.float32)), simulator=sim))
    o = np.array([[0, 0, 3], [0, 0, 3], [5, 5, 5]], np.float32)
    d = np.array([[0, 0, -1], [0, 0, 1], [1, 0, 0]], np.float32)  # axis-aligned, away, miss
    out.append(KernelCase("axis", (o, d, np.array([[-1, -1, -1], [1, 1, 1]], np.float32), np.ones((4, 4, 4), np.uint8),
                                   0.1, 8, np.full(3, 0.5, np.float32))))
    out.append(KernelCase("empty", (o[:0], d[:0], np.array([[-1] * 3, [1] * 3], np.float32),
                                    np.ones((2, 2, 2), np.uint8), 0.1, 8, np.zeros(0, np.float32))))
    out.append(KernelCase("bad-shape", (o[:, :2], d, np.zeros((2, 3), np.float32), np.ones((2, 2, 2), np.uint8),
                                        0.1, 8, np.zeros(3, np.float32))))
    return out


def _comp_inputs(R, maxs, seed, dense=1.0):
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, maxs + 1, R)
    ranges = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    M = int(ranges[-1])
    sig = (rng.exponential(1.0, M) * dense).astype(np.float32)
    rgb = rng.random((M, 3)).astype(np.float32)
    dl = np.full(M, 0.05, np.float32)
    return sig, rgb, dl, ranges


def composite_cases():
    from gpuforge.core.specs import KernelCase

    out = [KernelCase("small", _comp_inputs(30, 20, 0)), KernelCase("odd", _comp_inputs(17, 33, 1)),
           KernelCase("terminating", _comp_inputs(20, 40, 2, dense=60.0)),
           KernelCase("big", _comp_inputs(2000, 64, 3, 5.0), simulator=False)]
    s, c, d, r = _comp_inputs(5, 3, 4)
    out.append(KernelCase("empty", (s[:0], c[:0], d[:0], np.zeros(1, np.int32))))
    out.append(KernelCase("bad-ranges", (s, c, d, r[:-1])))
    return out


def composite_bwd_cases():
    from gpuforge.core.specs import KernelCase

    rng = np.random.default_rng(5)
    out = []
    for c in composite_cases():
        if c.name == "bad-ranges":
            out.append(KernelCase(c.name, c.args + (np.zeros((4, 3), np.float32), np.zeros(4, np.float32),
                                                    np.zeros(4, np.int32), np.zeros((4, 3), np.float32),
                                                    np.zeros(4, np.float32))))
            continue
        col, op, n = composite_fwd(*c.args)
        R = len(op)
        out.append(KernelCase(c.name, c.args + (col, op, n, rng.standard_normal((R, 3)).astype(np.float32),
                                                rng.standard_normal(R).astype(np.float32)), simulator=c.simulator))
    return out
