"""CUDA backend of :mod:`gpuforge.plugins.radiance.rasterize`.

- projection: one thread per Gaussian (float64 arithmetic, as the CPU backend);
- binning: a counting pass (atomics per tile), a prefix sum, a fill pass (atomic
  cursor per tile), then one thread per tile insertion-sorts its list by (depth, id),
  which makes the result deterministic whatever order the atomics filled it in;
- rasterization: one 16x16 thread block per tile, one thread per pixel, as in
  diff-gaussian-rasterization (without its shared-memory batching); the backward
  scatters into the per-Gaussian gradients with ``cuda.atomic.add``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float32, float64, int32

from gpuforge.core.tuning import launch_config
from gpuforge.kernels.cuda_arrays import Placement
from gpuforge.kernels.cuda_kernel import cuda_kernel, ptx_list
from gpuforge.plugins.radiance.cuda_util import as_host, put_f32, put_i32, zeros
from gpuforge.plugins.radiance.rasterize import (
    ALPHA_MAX, ALPHA_MIN, DILATION, NEAR, POWER_MIN, TILE, _check_bin, _check_project, _check_raster, blend_pixel,
    n_tiles,
)


_RIN = "float32[:, ::1], float32[:, ::1], float32[:, ::1], float32[::1], int32[::1], int32[::1], int64, int64, float64[::1]"


def _tpb(kernel: str, default: int = 256) -> int:
    return launch_config(f"radiance.{kernel}", {"threads_per_block": default}).threads


# ============================================================================ projection
@cuda_kernel("void(float32[:, ::1], float32[:, ::1], float32[:, ::1], float64[:, ::1], float64[::1], "
              "int64, int64, float64, float32[:, ::1], float32[:, ::1], float32[::1], int32[::1])")
def project_kernel(means, scales, quats, V, K, width, height, dilation, m2d, conics, depths, radii):
    i = cuda.grid(1)
    if i >= means.shape[0]:
        return
    m0, m1, m2 = float64(means[i, 0]), float64(means[i, 1]), float64(means[i, 2])
    x = V[0, 0] * m0 + V[0, 1] * m1 + V[0, 2] * m2 + V[0, 3]
    y = V[1, 0] * m0 + V[1, 1] * m1 + V[1, 2] * m2 + V[1, 3]
    z = V[2, 0] * m0 + V[2, 1] * m1 + V[2, 2] * m2 + V[2, 3]
    m2d[i, 0] = 0
    m2d[i, 1] = 0
    conics[i, 0] = 0
    conics[i, 1] = 0
    conics[i, 2] = 0
    depths[i] = 0
    radii[i] = 0
    if not z > NEAR:
        return
    fx, fy, cx, cy = K[0], K[1], K[2], K[3]
    limx = 1.3 * 0.5 * width / fx
    limy = 1.3 * 0.5 * height / fy
    tx = min(max(x / z, -limx), limx) * z
    ty = min(max(y / z, -limy), limy) * z
    j00, j02 = fx / z, -fx * tx / (z * z)
    j11, j12 = fy / z, -fy * ty / (z * z)
    q0, q1, q2, q3 = float64(quats[i, 0]), float64(quats[i, 1]), float64(quats[i, 2]), float64(quats[i, 3])
    qn = math.sqrt(q0 * q0 + q1 * q1 + q2 * q2 + q3 * q3)
    w, qx, qy, qz = q0 / qn, q1 / qn, q2 / qn, q3 / qn
    r00, r01, r02 = 1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - w * qz), 2 * (qx * qz + w * qy)
    r10, r11, r12 = 2 * (qx * qy + w * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - w * qx)
    r20, r21, r22 = 2 * (qx * qz - w * qy), 2 * (qy * qz + w * qx), 1 - 2 * (qx * qx + qy * qy)
    t00 = j00 * V[0, 0] + j02 * V[2, 0]
    t01 = j00 * V[0, 1] + j02 * V[2, 1]
    t02 = j00 * V[0, 2] + j02 * V[2, 2]
    t10 = j11 * V[1, 0] + j12 * V[2, 0]
    t11 = j11 * V[1, 1] + j12 * V[2, 1]
    t12 = j11 * V[1, 2] + j12 * V[2, 2]
    s0, s1, s2 = float64(scales[i, 0]), float64(scales[i, 1]), float64(scales[i, 2])
    u0a = (t00 * r00 + t01 * r10 + t02 * r20) * s0
    u1a = (t10 * r00 + t11 * r10 + t12 * r20) * s0
    u0b = (t00 * r01 + t01 * r11 + t02 * r21) * s1
    u1b = (t10 * r01 + t11 * r11 + t12 * r21) * s1
    u0c = (t00 * r02 + t01 * r12 + t02 * r22) * s2
    u1c = (t10 * r02 + t11 * r12 + t12 * r22) * s2
    a = u0a * u0a + u0b * u0b + u0c * u0c + dilation
    b = u0a * u1a + u0b * u1b + u0c * u1c
    c = u1a * u1a + u1b * u1b + u1c * u1c + dilation
    det = a * c - b * b
    if not det > 0:
        return
    u = fx * x / z + cx
    v = fy * y / z + cy
    mid = 0.5 * (a + c)
    lam = mid + math.sqrt(max(mid * mid - det, 0.1))
    r = math.ceil(3 * math.sqrt(lam))
    tw = (width + TILE - 1) // TILE
    th = (height + TILE - 1) // TILE
    xmin = min(max(math.floor((u - r) / TILE), 0), tw)
    xmax = min(max(math.floor((u + r + TILE - 1) / TILE), 0), tw)
    ymin = min(max(math.floor((v - r) / TILE), 0), th)
    ymax = min(max(math.floor((v + r + TILE - 1) / TILE), 0), th)
    if (xmax - xmin) * (ymax - ymin) <= 0:
        return
    m2d[i, 0] = u
    m2d[i, 1] = v
    conics[i, 0] = c / det
    conics[i, 1] = -b / det
    conics[i, 2] = a / det
    depths[i] = z
    radii[i] = int32(r)


def gs_project_cuda(means, scales, quats, viewmat, intrinsics, width, height, dilation=DILATION):
    _check_project(np.empty(tuple(means.shape)), np.empty(tuple(scales.shape)), np.empty(tuple(quats.shape)),
                   np.empty(tuple(np.shape(viewmat))), np.empty(tuple(np.shape(intrinsics))), dilation)
    place = Placement()
    m, s, q = (put_f32(place, a, nm) for a, nm in ((means, "means"), (scales, "scales"), (quats, "quats")))
    V = as_host(viewmat, np.float64)
    K = as_host(intrinsics, np.float32).astype(np.float64)
    n = m.shape[0]
    d2, h2 = place.empty((n, 2), np.float32)
    dc, hc = place.empty((n, 3), np.float32)
    dd, hd = place.empty((n,), np.float32)
    dr, hr = place.empty((n,), np.int32)
    t = _tpb("gs_project")
    place.launch(project_kernel, (n + t - 1) // t, t, place.to_device(m), place.to_device(s), place.to_device(q),
                 place.to_device(V), place.to_device(K), int(width), int(height), float(dilation), d2, dc, dd, dr)
    return tuple(place.result(h) for h in (h2, hc, hd, hr))


gs_project_ptx = ptx_list(project_kernel)


# ============================================================================ binning
def _rect(m2d, radii, g, tw, th):
    r = float32(radii[g])
    f = float32(TILE)
    x0 = min(max(int32(math.floor((m2d[g, 0] - r) / f)), 0), tw)
    x1 = min(max(int32(math.floor((m2d[g, 0] + r + f - float32(1)) / f)), 0), tw)
    y0 = min(max(int32(math.floor((m2d[g, 1] - r) / f)), 0), th)
    y1 = min(max(int32(math.floor((m2d[g, 1] + r + f - float32(1)) / f)), 0), th)
    return x0, x1, y0, y1


_rect_dev = cuda.jit(device=True, inline="always")(_rect)


@cuda_kernel("void(float32[:, ::1], int32[::1], int64, int64, int32[::1])")
def bin_count_kernel(m2d, radii, tw, th, counts):
    g = cuda.grid(1)
    if g >= m2d.shape[0] or radii[g] <= 0:
        return
    x0, x1, y0, y1 = _rect_dev(m2d, radii, g, tw, th)
    for ty in range(y0, y1):
        for tx in range(x0, x1):
            cuda.atomic.add(counts, ty * tw + tx, 1)


@cuda_kernel("void(float32[:, ::1], int32[::1], int64, int64, int32[::1], int32[::1])")
def bin_fill_kernel(m2d, radii, tw, th, cursor, ids):
    g = cuda.grid(1)
    if g >= m2d.shape[0] or radii[g] <= 0:
        return
    x0, x1, y0, y1 = _rect_dev(m2d, radii, g, tw, th)
    for ty in range(y0, y1):
        for tx in range(x0, x1):
            k = cuda.atomic.add(cursor, ty * tw + tx, 1)
            ids[k] = g


@cuda_kernel("void(int32[::1], float32[::1], int32[::1])")
def bin_sort_kernel(ranges, depths, ids):
    t = cuda.grid(1)
    if t >= ranges.shape[0] - 1:
        return
    a, b = ranges[t], ranges[t + 1]
    for i in range(a + 1, b):  # insertion sort by (depth, id)
        g = ids[i]
        d = depths[g]
        j = i - 1
        while j >= a and (depths[ids[j]] > d or (depths[ids[j]] == d and ids[j] > g)):
            ids[j + 1] = ids[j]
            j -= 1
        ids[j + 1] = g


def gs_bin_tiles_cuda(means2d, radii, depths, width, height):
    _check_bin(np.empty(tuple(means2d.shape)), np.empty(len(radii)), np.empty(len(depths)))
    place = Placement()
    m = place.to_device(put_f32(place, means2d, "means2d"))
    r = place.to_device(put_i32(place, radii, "radii"))
    d = place.to_device(put_f32(place, depths, "depths"))
    tw, th = n_tiles(int(width), int(height))
    n = m.shape[0]
    counts = cuda.to_device(np.zeros(tw * th, np.int32), stream=place.stream)
    t = _tpb("gs_bin_tiles")
    blocks = (n + t - 1) // t
    place.launch(bin_count_kernel, blocks, t, m, r, tw, th, counts)
    ranges_h = np.concatenate([[0], np.cumsum(counts.copy_to_host(stream=place.stream))]).astype(np.int32)
    total = int(ranges_h[-1])
    ranges_d, ranges_handed = place.empty((tw * th + 1,), np.int32)
    ranges_d.copy_to_device(ranges_h, stream=place.stream)
    cursor = cuda.to_device(ranges_h[:-1].copy(), stream=place.stream)
    ids_d, ids_handed = place.empty((total,), np.int32)
    if total:
        place.launch(bin_fill_kernel, blocks, t, m, r, tw, th, cursor, ids_d)
        place.launch(bin_sort_kernel, (tw * th + t - 1) // t, t, ranges_d, d, ids_d)
    return place.result(ranges_handed), place.result(ids_handed)


gs_bin_tiles_ptx = ptx_list(bin_count_kernel, bin_fill_kernel, bin_sort_kernel)


# ============================================================================ rasterization
_blend_pixel_dev = cuda.jit(device=True, inline="always")(blend_pixel)


@cuda_kernel(f"void({_RIN}, float32[:, :, ::1], float32[:, ::1], int32[:, ::1])",
             threads_per_block=TILE * TILE)
def raster_fwd_kernel(m2d, conics, colors, opac, ranges, ids, W, H, bg, image, final_T, n_contrib):
    tw = (W + TILE - 1) // TILE
    t = cuda.blockIdx.x
    px = (t % tw) * TILE + cuda.threadIdx.x
    py = (t // tw) * TILE + cuda.threadIdx.y
    if px >= W or py >= H:
        return
    c0, c1, c2, T, last = _blend_pixel_dev(m2d, conics, colors, opac, ids, ranges[t], ranges[t + 1],
                                           float64(px) + 0.5, float64(py) + 0.5)
    image[py, px, 0] = c0 + T * bg[0]
    image[py, px, 1] = c1 + T * bg[1]
    image[py, px, 2] = c2 + T * bg[2]
    final_T[py, px] = T
    n_contrib[py, px] = last


@cuda_kernel(f"void({_RIN}, float32[:, ::1], int32[:, ::1], float32[:, :, ::1], "
             "float32[:, ::1], float32[:, ::1], float32[:, ::1], float32[::1])", threads_per_block=TILE * TILE)
def raster_bwd_kernel(m2d, conics, colors, opac, ranges, ids, W, H, bg, final_T, n_contrib, gimg,
                      g_m2d, g_con, g_col, g_op):
    tw = (W + TILE - 1) // TILE
    t = cuda.blockIdx.x
    px = (t % tw) * TILE + cuda.threadIdx.x
    py = (t // tw) * TILE + cuda.threadIdx.y
    if px >= W or py >= H:
        return
    last = n_contrib[py, px]
    if last == 0:
        return
    fx = float64(px) + 0.5
    fy = float64(py) + 0.5
    a = ranges[t]
    Tf = float64(final_T[py, px])
    T = Tf
    gp0, gp1, gp2 = float64(gimg[py, px, 0]), float64(gimg[py, px, 1]), float64(gimg[py, px, 2])
    acc0 = 0.0
    acc1 = 0.0
    acc2 = 0.0
    last_alpha = 0.0
    lc0 = 0.0
    lc1 = 0.0
    lc2 = 0.0
    bg_dot = bg[0] * gp0 + bg[1] * gp1 + bg[2] * gp2
    for k in range(a + last - 1, a - 1, -1):
        g = ids[k]
        dx = m2d[g, 0] - fx
        dy = m2d[g, 1] - fy
        A, B, C = float64(conics[g, 0]), float64(conics[g, 1]), float64(conics[g, 2])
        power = -0.5 * (A * dx * dx + C * dy * dy) - B * dx * dy
        if power > 0 or (power < POWER_MIN and opac[g] <= 1):
            continue
        e = math.exp(power)
        raw = opac[g] * e
        alpha = min(ALPHA_MAX, raw)
        if alpha < ALPHA_MIN:
            continue
        T = T / (1 - alpha)
        w = alpha * T
        acc0 = last_alpha * lc0 + (1 - last_alpha) * acc0
        acc1 = last_alpha * lc1 + (1 - last_alpha) * acc1
        acc2 = last_alpha * lc2 + (1 - last_alpha) * acc2
        lc0, lc1, lc2 = float64(colors[g, 0]), float64(colors[g, 1]), float64(colors[g, 2])
        cuda.atomic.add(g_col, (g, 0), float32(w * gp0))
        cuda.atomic.add(g_col, (g, 1), float32(w * gp1))
        cuda.atomic.add(g_col, (g, 2), float32(w * gp2))
        dL_dalpha = ((lc0 - acc0) * gp0 + (lc1 - acc1) * gp1 + (lc2 - acc2) * gp2) * T
        dL_dalpha += -Tf / (1 - alpha) * bg_dot
        last_alpha = alpha
        if raw > ALPHA_MAX:
            continue
        cuda.atomic.add(g_op, g, float32(e * dL_dalpha))
        dp = raw * dL_dalpha
        cuda.atomic.add(g_m2d, (g, 0), float32(dp * (-(A * dx) - B * dy)))
        cuda.atomic.add(g_m2d, (g, 1), float32(dp * (-(C * dy) - B * dx)))
        cuda.atomic.add(g_con, (g, 0), float32(dp * (-0.5 * dx * dx)))
        cuda.atomic.add(g_con, (g, 1), float32(dp * (-dx * dy)))
        cuda.atomic.add(g_con, (g, 2), float32(dp * (-0.5 * dy * dy)))


def _raster_inputs(place, means2d, conics, colors, opacities, tile_ranges, ids):
    return (place.to_device(put_f32(place, means2d, "means2d")), place.to_device(put_f32(place, conics, "conics")),
            place.to_device(put_f32(place, colors, "colors")), place.to_device(put_f32(place, opacities, "opacities")),
            place.to_device(put_i32(place, tile_ranges, "tile_ranges")), place.to_device(put_i32(place, ids, "ids")))


def _shape_check(means2d, conics, colors, opacities, tile_ranges, width, height, background):
    _check_raster(np.empty(tuple(means2d.shape)), np.empty(tuple(conics.shape)), np.empty(tuple(colors.shape)),
                  np.empty(tuple(opacities.shape)), np.empty(len(tile_ranges)), width, height,
                  np.empty(tuple(np.shape(background))))


def gs_rasterize_fwd_cuda(means2d, conics, colors, opacities, tile_ranges, ids, width, height, background):
    _shape_check(means2d, conics, colors, opacities, tile_ranges, width, height, background)
    place = Placement()
    ins = _raster_inputs(place, means2d, conics, colors, opacities, tile_ranges, ids)
    W, H = int(width), int(height)
    tw, th = n_tiles(W, H)
    di, hi = place.empty((H, W, 3), np.float32)
    dT, hT = place.empty((H, W), np.float32)
    dn, hn = place.empty((H, W), np.int32)
    bg = place.to_device(as_host(background, np.float64))
    if W and H:
        raster_fwd_kernel[tw * th, (TILE, TILE), place.stream](*ins, W, H, bg, di, dT, dn)
    return place.result(hi), place.result(hT), place.result(hn)


def gs_rasterize_bwd_cuda(means2d, conics, colors, opacities, tile_ranges, ids, width, height, background, final_T,
                          n_contrib, grad_image):
    _shape_check(means2d, conics, colors, opacities, tile_ranges, width, height, background)
    place = Placement()
    ins = _raster_inputs(place, means2d, conics, colors, opacities, tile_ranges, ids)
    W, H = int(width), int(height)
    tw, th = n_tiles(W, H)
    n = ins[0].shape[0]
    outs = [zeros(place, s) for s in ((n, 2), (n, 3), (n, 3), (n,))]
    bg = place.to_device(as_host(background, np.float64))
    fT = place.to_device(put_f32(place, final_T, "final_T"))
    nc = place.to_device(put_i32(place, n_contrib, "n_contrib"))
    gi = place.to_device(put_f32(place, grad_image, "grad_image"))
    if W and H and n:
        raster_bwd_kernel[tw * th, (TILE, TILE), place.stream](*ins, W, H, bg, fT, nc, gi, *(o[0] for o in outs))
    return tuple(place.result(o[1]) for o in outs)


gs_rasterize_fwd_ptx = ptx_list(raster_fwd_kernel)
gs_rasterize_bwd_ptx = ptx_list(raster_bwd_kernel)
