"""CUDA backend of :mod:`gpuforge.plugins.radiance.raymarch`: one thread per ray.
Marching runs twice (count, prefix sum, fill) so samples are packed ray by ray."""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64, int64

from gpuforge.core.tuning import launch_config
from gpuforge.kernels.cuda_arrays import Placement
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list
from gpuforge.plugins.radiance.cuda_util import as_host, put_f32, put_i32, zeros
from gpuforge.plugins.radiance.raymarch import (
    EPS_DIR, _check_comp, _check_march, composite_ray, composite_ray_bwd,
)


_MIN = "float32[:, ::1], float32[:, ::1], float64[:, ::1], uint8[:, :, ::1], float64, int64, float32[::1]"
_CIN = "float32[::1], float32[:, ::1], float32[::1], int32[::1]"


def _tpb(kernel: str) -> int:
    return launch_config(f"radiance.{kernel}", {"threads_per_block": 128}).threads


def _march(o, d, aabb, occ, step, max_samples, off, r, ts, start, write):
    o0, o1, o2 = float64(o[r, 0]), float64(o[r, 1]), float64(o[r, 2])
    d0, d1, d2 = float64(d[r, 0]), float64(d[r, 1]), float64(d[r, 2])
    if abs(d0) < EPS_DIR:
        d0 = -EPS_DIR if d0 < 0 else EPS_DIR
    if abs(d1) < EPS_DIR:
        d1 = -EPS_DIR if d1 < 0 else EPS_DIR
    if abs(d2) < EPS_DIR:
        d2 = -EPS_DIR if d2 < 0 else EPS_DIR
    ta, tb = (aabb[0, 0] - o0) / d0, (aabb[1, 0] - o0) / d0
    tn, tf = max(0.0, min(ta, tb)), max(ta, tb)
    ta, tb = (aabb[0, 1] - o1) / d1, (aabb[1, 1] - o1) / d1
    tn, tf = max(tn, min(ta, tb)), min(tf, max(ta, tb))
    ta, tb = (aabb[0, 2] - o2) / d2, (aabb[1, 2] - o2) / d2
    tn, tf = max(tn, min(ta, tb)), min(tf, max(ta, tb))
    tf = min(tf, 1e30)
    if not tf > tn:
        return 0
    G0, G1, G2 = occ.shape[0], occ.shape[1], occ.shape[2]
    n = 0
    k = 0
    while True:
        t = tn + (off[r] + k) * step
        if not t < tf or n >= max_samples:
            break
        c0 = min(max(int64(math.floor((o0 + t * d0 - aabb[0, 0]) / (aabb[1, 0] - aabb[0, 0]) * G0)), 0), G0 - 1)
        c1 = min(max(int64(math.floor((o1 + t * d1 - aabb[0, 1]) / (aabb[1, 1] - aabb[0, 1]) * G1)), 0), G1 - 1)
        c2 = min(max(int64(math.floor((o2 + t * d2 - aabb[0, 2]) / (aabb[1, 2] - aabb[0, 2]) * G2)), 0), G2 - 1)
        if occ[c0, c1, c2]:
            if write:
                ts[start + n] = t
            n += 1
        k += 1
    return n


_march_dev = cuda.jit(device=True, inline="always")(_march)


@cuda_kernel(f"void({_MIN}, int32[::1])")
def march_count_kernel(o, d, aabb, occ, step, max_samples, off, counts):
    r = cuda.grid(1)
    if r < o.shape[0]:
        counts[r] = _march_dev(o, d, aabb, occ, step, max_samples, off, r, off, 0, False)


@cuda_kernel(f"void({_MIN}, int32[::1], float32[::1], float32[::1])")
def march_fill_kernel(o, d, aabb, occ, step, max_samples, off, ranges, ts, deltas):
    r = cuda.grid(1)
    if r < o.shape[0]:
        n = _march_dev(o, d, aabb, occ, step, max_samples, off, r, ts, ranges[r], True)
        for i in range(ranges[r], ranges[r] + n):
            deltas[i] = step


def march_rays_cuda(origins, dirs, aabb, occ, step, max_samples, offsets):
    _check_march(np.empty(tuple(origins.shape)), np.empty(tuple(dirs.shape)), np.empty(tuple(np.shape(aabb))),
                 np.empty(tuple(occ.shape)), np.empty(len(offsets)))
    place = Placement()
    o = place.to_device(put_f32(place, origins, "origins"))
    d = place.to_device(put_f32(place, dirs, "dirs"))
    occ_ = place.put(occ, "occ")
    occ_d = place.to_device(occ_.astype(np.uint8, copy=False) if isinstance(occ_, np.ndarray) else occ_)
    off = place.to_device(put_f32(place, offsets, "offsets"))
    box = place.to_device(as_host(aabb, np.float64))
    R = o.shape[0]
    counts = cuda.to_device(np.zeros(R, np.int32), stream=place.stream)
    t = _tpb("march_rays")
    blocks = (R + t - 1) // t
    place.launch(march_count_kernel, blocks, t, o, d, box, occ_d, float(step), int(max_samples), off, counts)
    ranges_h = np.concatenate([[0], np.cumsum(counts.copy_to_host(stream=place.stream))]).astype(np.int32)
    M = int(ranges_h[-1])
    rd, rh = place.empty((R + 1,), np.int32)
    rd.copy_to_device(ranges_h, stream=place.stream)
    td, th = place.empty((M,), np.float32)
    dd, dh = place.empty((M,), np.float32)
    if M:
        place.launch(march_fill_kernel, blocks, t, o, d, box, occ_d, float(step), int(max_samples), off, rd, td, dd)
    return place.result(rh), place.result(th), place.result(dh)


march_rays_ptx = ptx_list(march_count_kernel, march_fill_kernel)


_composite_ray_dev = cuda.jit(device=True, inline="always")(composite_ray)
_composite_ray_bwd_dev = cuda.jit(device=True, inline="always")(composite_ray_bwd)


@cuda_kernel(f"void({_CIN}, float32[:, ::1], float32[::1], int32[::1])")
def comp_fwd_kernel(sig, rgb, dl, ranges, color, opacity, n_used):
    r = cuda.grid(1)
    if r >= ranges.shape[0] - 1:
        return
    c0, c1, c2, op, n = _composite_ray_dev(sig, rgb, dl, ranges[r], ranges[r + 1])
    color[r, 0] = c0
    color[r, 1] = c1
    color[r, 2] = c2
    opacity[r] = op
    n_used[r] = n


@cuda_kernel(f"void({_CIN}, float32[:, ::1], float32[::1], int32[::1], float32[:, ::1], "
              "float32[::1], float32[::1], float32[:, ::1])")
def comp_bwd_kernel(sig, rgb, dl, ranges, color, opacity, n_used, gc, go, gsig, grgb):
    r = cuda.grid(1)
    if r >= ranges.shape[0] - 1:
        return
    _composite_ray_bwd_dev(sig, rgb, dl, r, ranges[r], n_used[r], color, opacity, gc, go, gsig, grgb)


def _comp_in(place, sigmas, rgbs, deltas, ray_ranges):
    _check_comp(np.empty(len(sigmas)), np.empty(tuple(rgbs.shape)), np.empty(tuple(deltas.shape)),
                as_host(ray_ranges, np.int64) if not hasattr(ray_ranges, "__cuda_array_interface__")
                else np.array([len(ray_ranges) and len(sigmas)]))
    return (place.to_device(put_f32(place, sigmas, "sigmas")), place.to_device(put_f32(place, rgbs, "rgbs")),
            place.to_device(put_f32(place, deltas, "deltas")), place.to_device(put_i32(place, ray_ranges, "ray_ranges")))


def composite_fwd_cuda(sigmas, rgbs, deltas, ray_ranges):
    place = Placement()
    s, c, d, r = _comp_in(place, sigmas, rgbs, deltas, ray_ranges)
    R = r.shape[0] - 1
    oc, hc = place.empty((R, 3), np.float32)
    oo, ho = place.empty((R,), np.float32)
    on, hn = place.empty((R,), np.int32)
    t = _tpb("composite_fwd")
    place.launch(comp_fwd_kernel, (R + t - 1) // t, t, s, c, d, r, oc, oo, on)
    return place.result(hc), place.result(ho), place.result(hn)


def composite_bwd_cuda(sigmas, rgbs, deltas, ray_ranges, color, opacity, n_used, grad_color, grad_opacity):
    place = Placement()
    s, c, d, r = _comp_in(place, sigmas, rgbs, deltas, ray_ranges)
    col = place.to_device(put_f32(place, color, "color"))
    op = place.to_device(put_f32(place, opacity, "opacity"))
    nu = place.to_device(put_i32(place, n_used, "n_used"))
    gcl = place.to_device(put_f32(place, grad_color, "grad_color"))
    gop = place.to_device(put_f32(place, grad_opacity, "grad_opacity"))
    M = s.shape[0]
    R = r.shape[0] - 1
    (gs, hs), (gr, hr) = zeros(place, (M,)), zeros(place, (M, 3))
    t = _tpb("composite_bwd")
    if M:
        place.launch(comp_bwd_kernel, (R + t - 1) // t, t, s, c, d, r, col, op, nu, gcl, gop, gs, gr)
    return place.result(hs), place.result(hr)


composite_fwd_ptx = ptx_list(comp_fwd_kernel)
composite_bwd_ptx = ptx_list(comp_bwd_kernel)
