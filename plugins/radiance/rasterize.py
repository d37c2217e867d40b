"""3D Gaussian Splatting's tile rasterizer (Kerbl et al. 2023, section 6 and the
diff-gaussian-rasterization code), as four kernels with one signature per backend:

- ``gs_project(means, scales, quats, viewmat, intrinsics, width, height, dilation=0.3)`` ->
  ``(means2d[N,2], conics[N,3], depths[N], radii[N] int32)``: EWA splatting,
  ``cov2d = J W cov3d W^T J^T + dilation I`` (3DGS's 0.3 low-pass dilation, in pixels²;
  Mip-Splatting's 2-D filter uses 0.1 with opacity compensation, see ``splat``), conic = cov2d^-1
  as (a, b, c) of [[a, b], [b, c]], radius = ceil(3 sqrt(largest eigenvalue)); culled
  (radius 0) when depth <= 0.2, when cov2d is singular or when it covers no tile.
  ``viewmat`` is world -> camera in the OpenCV convention (+Z forward, +Y down);
  pixel centres are at (i + 0.5, j + 0.5).
- ``gs_bin_tiles(means2d, radii, depths, width, height)`` -> ``(tile_ranges[n_tiles+1],
  ids[M])``: every Gaussian is listed in each 16x16 tile its 3-sigma square touches;
  each tile's list is sorted front to back by depth (ties by id).
- ``gs_rasterize_fwd(means2d, conics, colors[N,3], opacities[N], tile_ranges, ids, width,
  height, background[3])`` -> ``(image[H,W,3], final_T[H,W], n_contrib[H,W] int32)``:
  front-to-back alpha blending, alpha = min(0.99, o * exp(power)), Gaussians with
  alpha < 1/255 (or power > 0) skipped, stop before transmittance would fall below
  1e-4; ``n_contrib`` = 1 + position in the tile list of the last blended Gaussian.
- ``gs_rasterize_bwd(..., final_T, n_contrib, grad_image)`` -> gradients of means2d,
  conics (a, b, c as independent inputs), colors and opacities.

The references are plain torch (autograd gives the backward); the numba-cpu backward
walks each pixel back to front as the CUDA original does.
"""
from __future__ import annotations

import math

import numpy as np
from numba import get_num_threads, njit, prange

TILE = 16
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4
POWER_MIN = math.log(ALPHA_MIN) - 1e-6
"""Below this power even an opaque Gaussian (opacity <= 1) stays under ALPHA_MIN: such a
pair is skipped without calling exp (most of a tile's pairs), with the same result."""
NEAR = 0.2
DILATION = 0.3


def n_tiles(width: int, height: int) -> tuple[int, int]:
    return (width + TILE - 1) // TILE, (height + TILE - 1) // TILE


# ============================================================================ projection
def quat_to_rotmat_torch(q):
    import torch

    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], -1).reshape(*q.shape[:-1], 3, 3)


def project_torch(means, scales, quats, viewmat, fx, fy, cx, cy, width, height, dilation=DILATION):
    """Differentiable projection (torch): means2d, conics, depths, radii (int32, no grad)."""
    import torch

    R = viewmat[:3, :3]
    t = viewmat[:3, 3]
    pc = means @ R.T + t
    z = pc[:, 2]
    valid = z > NEAR
    zs = torch.where(valid, z, torch.ones_like(z))
    limx, limy = 1.3 * 0.5 * width / fx, 1.3 * 0.5 * height / fy
    tx = (pc[:, 0] / zs).clamp(-limx, limx) * zs
    ty = (pc[:, 1] / zs).clamp(-limy, limy) * zs
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * tx / (zs * zs), zero, fy / zs, -fy * ty / (zs * zs)], -1).reshape(-1, 2, 3)
    Rq = quat_to_rotmat_torch(quats)
    M = Rq * scales[:, None, :]
    cov3d = M @ M.transpose(1, 2)
    Tm = J @ R
    cov2d = Tm @ cov3d @ Tm.transpose(1, 2)
    a = cov2d[:, 0, 0] + dilation
    b = cov2d[:, 0, 1]
    c = cov2d[:, 1, 1] + dilation
    det = a * c - b * b
    valid = valid & (det > 0)
    dets = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / dets, -b / dets, a / dets], -1)
    u = fx * pc[:, 0] / zs + cx
    v = fy * pc[:, 1] / zs + cy
    means2d = torch.stack([u, v], -1)
    with torch.no_grad():
        mid = 0.5 * (a + c)
        lam = mid + torch.sqrt(torch.clamp(mid * mid - dets, min=0.1))
        radii = torch.ceil(3 * torch.sqrt(lam))
        tw, th = n_tiles(width, height)
        xmin = torch.clamp(torch.floor((u - radii) / TILE), 0, tw)
        xmax = torch.clamp(torch.floor((u + radii + TILE - 1) / TILE), 0, tw)
        ymin = torch.clamp(torch.floor((v - radii) / TILE), 0, th)
        ymax = torch.clamp(torch.floor((v + radii + TILE - 1) / TILE), 0, th)
        valid = valid & ((xmax - xmin) * (ymax - ymin) > 0)
        radii = torch.where(valid, radii, torch.zeros_like(radii)).to(torch.int32)
    m = valid[:, None].to(means2d.dtype)
    return means2d * m, conics * m, torch.where(valid, z, torch.zeros_like(z)), radii


def _check_project(means, scales, quats, viewmat, intrinsics, dilation=DILATION):
    if not (math.isfinite(dilation) and dilation >= 0):
        raise ValueError(f"dilation must be a finite number >= 0 (pixels²), got {dilation}")
    for name, a, k in (("means", means, 3), ("scales", scales, 3), ("quats", quats, 4)):
        if np.ndim(a) != 2 or np.shape(a)[1] != k:
            raise ValueError(f"{name} must be [N, {k}], got {np.shape(a)}")
    if not (len(means) == len(scales) == len(quats)):
        raise ValueError("means, scales and quats must have the same length")
    if np.shape(viewmat) != (4, 4) or np.shape(intrinsics) != (4,):
        raise ValueError("viewmat must be 4x4 and intrinsics (fx, fy, cx, cy)")


def gs_project(means, scales, quats, viewmat, intrinsics, width, height, dilation=DILATION):
    import torch

    _check_project(means, scales, quats, viewmat, intrinsics, dilation)
    fx, fy, cx, cy = (float(v) for v in np.asarray(intrinsics, np.float32))
    with torch.no_grad():
        out = project_torch(*(torch.as_tensor(np.asarray(a, np.float32)) for a in (means, scales, quats, viewmat)),
                            fx, fy, cx, cy, int(width), int(height), float(dilation))
    return tuple(o.numpy() for o in out)


@njit(cache=True)
def _project_one(m, s, q, V, fx, fy, cx, cy, width, height, dilation, out2d, conic):
    """Project one Gaussian; returns (depth, radius) with radius 0 when culled."""
    x = V[0, 0] * m[0] + V[0, 1] * m[1] + V[0, 2] * m[2] + V[0, 3]
    y = V[1, 0] * m[0] + V[1, 1] * m[1] + V[1, 2] * m[2] + V[1, 3]
    z = V[2, 0] * m[0] + V[2, 1] * m[1] + V[2, 2] * m[2] + V[2, 3]
    if not z > NEAR:
        return 0.0, 0
    limx, limy = 1.3 * 0.5 * width / fx, 1.3 * 0.5 * height / fy
    tx = min(max(x / z, -limx), limx) * z
    ty = min(max(y / z, -limy), limy) * z
    j00, j02 = fx / z, -fx * tx / (z * z)
    j11, j12 = fy / z, -fy * ty / (z * z)
    qn = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    w, qx, qy, qz = q[0] / qn, q[1] / qn, q[2] / qn, q[3] / qn
    R = np.empty((3, 3))
    R[0, 0], R[0, 1], R[0, 2] = 1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - w * qz), 2 * (qx * qz + w * qy)
    R[1, 0], R[1, 1], R[1, 2] = 2 * (qx * qy + w * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - w * qx)
    R[2, 0], R[2, 1], R[2, 2] = 2 * (qx * qz - w * qy), 2 * (qy * qz + w * qx), 1 - 2 * (qx * qx + qy * qy)
    # T = J @ V[:3,:3] (2x3); cov2d = T M M^T T^T with M = R diag(s)
    T0 = np.empty(3)
    T1 = np.empty(3)
    for k in range(3):
        T0[k] = j00 * V[0, k] + j02 * V[2, k]
        T1[k] = j11 * V[1, k] + j12 * V[2, k]
    a = 0.0
    b = 0.0
    c = 0.0
    for k in range(3):  # columns of M
        u0 = T0[0] * R[0, k] * s[k] + T0[1] * R[1, k] * s[k] + T0[2] * R[2, k] * s[k]
        u1 = T1[0] * R[0, k] * s[k] + T1[1] * R[1, k] * s[k] + T1[2] * R[2, k] * s[k]
        a += u0 * u0
        b += u0 * u1
        c += u1 * u1
    a += dilation
    c += dilation
    det = a * c - b * b
    if not det > 0:
        return 0.0, 0
    u = fx * x / z + cx
    v = fy * y / z + cy
    mid = 0.5 * (a + c)
    lam = mid + math.sqrt(max(mid * mid - det, 0.1))
    r = math.ceil(3 * math.sqrt(lam))
    tw, th = (width + TILE - 1) // TILE, (height + TILE - 1) // TILE
    xmin = min(max(math.floor((u - r) / TILE), 0), tw)
    xmax = min(max(math.floor((u + r + TILE - 1) / TILE), 0), tw)
    ymin = min(max(math.floor((v - r) / TILE), 0), th)
    ymax = min(max(math.floor((v + r + TILE - 1) / TILE), 0), th)
    if (xmax - xmin) * (ymax - ymin) <= 0:
        return 0.0, 0
    out2d[0], out2d[1] = u, v
    conic[0], conic[1], conic[2] = c / det, -b / det, a / det
    return z, int(r)


@njit(parallel=True, cache=True)
def _project_cpu(means, scales, quats, V, fx, fy, cx, cy, width, height, dilation, m2d, conics, depths, radii):
    for i in prange(means.shape[0]):
        o2 = np.zeros(2)
        cn = np.zeros(3)
        d, r = _project_one(means[i].astype(np.float64), scales[i].astype(np.float64), quats[i].astype(np.float64),
                            V, fx, fy, cx, cy, width, height, dilation, o2, cn)
        m2d[i, 0], m2d[i, 1] = o2[0], o2[1]
        conics[i, 0], conics[i, 1], conics[i, 2] = cn[0], cn[1], cn[2]
        depths[i] = d
        radii[i] = r


def gs_project_cpu(means, scales, quats, viewmat, intrinsics, width, height, dilation=DILATION):
    _check_project(means, scales, quats, viewmat, intrinsics, dilation)
    n = len(means)
    m2d, conics = np.zeros((n, 2), np.float32), np.zeros((n, 3), np.float32)
    depths, radii = np.zeros(n, np.float32), np.zeros(n, np.int32)
    fx, fy, cx, cy = (float(v) for v in np.asarray(intrinsics, np.float32))
    if n:
        _project_cpu(*(np.ascontiguousarray(a, np.float32) for a in (means, scales, quats)),
                     np.asarray(viewmat, np.float32).astype(np.float64), fx, fy, cx, cy, int(width), int(height),
                     float(dilation), m2d, conics, depths, radii)
    return m2d, conics, depths, radii


# ============================================================================ tile binning
def _check_bin(means2d, radii, depths):
    if np.ndim(means2d) != 2 or np.shape(means2d)[1] != 2 or len(radii) != len(means2d) or len(depths) != len(means2d):
        raise ValueError("means2d must be [N, 2] with radii [N] and depths [N]")


def _rects(means2d, radii, width, height):
    tw, th = n_tiles(width, height)
    m = np.asarray(means2d, np.float32)
    r = np.asarray(radii).astype(np.float32)
    f = np.float32(TILE)
    xmin = np.clip(np.floor((m[:, 0] - r) / f), 0, tw).astype(np.int64)
    xmax = np.clip(np.floor((m[:, 0] + r + f - 1) / f), 0, tw).astype(np.int64)
    ymin = np.clip(np.floor((m[:, 1] - r) / f), 0, th).astype(np.int64)
    ymax = np.clip(np.floor((m[:, 1] + r + f - 1) / f), 0, th).astype(np.int64)
    live = np.asarray(radii) > 0
    return xmin, xmax, ymin, ymax, live


def gs_bin_tiles(means2d, radii, depths, width, height):
    """Reference: list (tile, depth, id) for every touched tile, then lexsort."""
    _check_bin(means2d, radii, depths)
    tw, th = n_tiles(width, height)
    xmin, xmax, ymin, ymax, live = _rects(means2d, radii, width, height)
    tiles, ids = [], []
    for g in np.flatnonzero(live):
        for ty in range(ymin[g], ymax[g]):
            for tx in range(xmin[g], xmax[g]):
                tiles.append(ty * tw + tx)
                ids.append(g)
    tiles, ids = np.asarray(tiles, np.int64), np.asarray(ids, np.int64)
    d = np.asarray(depths, np.float32)[ids] if len(ids) else np.zeros(0, np.float32)
    order = np.lexsort((ids, d, tiles))
    counts = np.bincount(tiles, minlength=tw * th)
    ranges = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return ranges, ids[order].astype(np.int32)


@njit(cache=True)
def _bin_cpu(means2d, radii, depths, width, height):
    tw, th = (width + TILE - 1) // TILE, (height + TILE - 1) // TILE
    n = means2d.shape[0]
    f = np.float32(TILE)
    one = np.float32(1)
    rect = np.zeros((n, 4), np.int64)
    counts = np.zeros(tw * th + 1, np.int64)
    for g in range(n):
        if radii[g] <= 0:
            continue
        r = np.float32(radii[g])
        x0 = min(max(int(math.floor((means2d[g, 0] - r) / f)), 0), tw)
        x1 = min(max(int(math.floor((means2d[g, 0] + r + f - one) / f)), 0), tw)
        y0 = min(max(int(math.floor((means2d[g, 1] - r) / f)), 0), th)
        y1 = min(max(int(math.floor((means2d[g, 1] + r + f - one) / f)), 0), th)
        rect[g, 0], rect[g, 1], rect[g, 2], rect[g, 3] = x0, x1, y0, y1
        for ty in range(y0, y1):
            for tx in range(x0, x1):
                counts[ty * tw + tx + 1] += 1
    ranges = np.cumsum(counts)
    ids = np.empty(ranges[-1], np.int32)
    cursor = ranges[:-1].copy()
    for g in range(n):  # ids ascending inside each tile: a stable depth sort breaks ties by id
        if radii[g] <= 0:
            continue
        for ty in range(rect[g, 2], rect[g, 3]):
            for tx in range(rect[g, 0], rect[g, 1]):
                t = ty * tw + tx
                ids[cursor[t]] = g
                cursor[t] += 1
    return ranges.astype(np.int32), ids


@njit(parallel=True, cache=True)
def _sort_tiles_cpu(ranges, ids, depths):
    for t in prange(ranges.shape[0] - 1):
        a, b = ranges[t], ranges[t + 1]
        if b - a > 1:
            seg = ids[a:b].copy()
            order = np.argsort(depths[seg], kind="mergesort")
            ids[a:b] = seg[order]


def gs_bin_tiles_cpu(means2d, radii, depths, width, height):
    _check_bin(means2d, radii, depths)
    ranges, ids = _bin_cpu(np.ascontiguousarray(means2d, np.float32), np.ascontiguousarray(radii, np.int32),
                           np.ascontiguousarray(depths, np.float32), int(width), int(height))
    _sort_tiles_cpu(ranges, ids, np.ascontiguousarray(depths, np.float32))
    return ranges, ids


# ============================================================================ rasterization
def _check_raster(means2d, conics, colors, opacities, tile_ranges, width, height, background):
    n = len(means2d)
    if np.shape(conics) != (n, 3) or np.shape(colors) != (n, 3) or np.shape(opacities) != (n,):
        raise ValueError("need means2d [N,2], conics [N,3], colors [N,3], opacities [N]")
    tw, th = n_tiles(int(width), int(height))
    if len(tile_ranges) != tw * th + 1:
        raise ValueError(f"tile_ranges must have {tw * th + 1} entries for a {width}x{height} image")
    if np.shape(background) != (3,):
        raise ValueError("background must have 3 entries")


def rasterize_torch(means2d, conics, colors, opacities, tile_ranges, ids, width, height, background):
    """Differentiable reference: each tile's list blended with cumulative products."""
    import torch

    W, H = int(width), int(height)
    tw, th = n_tiles(W, H)
    image = torch.zeros((H, W, 3), dtype=colors.dtype)
    final_T = torch.ones((H, W), dtype=colors.dtype)
    n_contrib = torch.zeros((H, W), dtype=torch.int32)
    rows = []
    for ty in range(th):
        row = []
        for tx in range(tw):
            x0, y0 = tx * TILE, ty * TILE
            x1, y1 = min(x0 + TILE, W), min(y0 + TILE, H)
            jj, ii = torch.meshgrid(torch.arange(y0, y1, dtype=colors.dtype), torch.arange(x0, x1, dtype=colors.dtype),
                                    indexing="ij")
            px, py = ii.reshape(-1) + 0.5, jj.reshape(-1) + 0.5
            t = ty * tw + tx
            g = torch.as_tensor(np.asarray(ids[int(tile_ranges[t]):int(tile_ranges[t + 1])], np.int64))
            if len(g) == 0:
                row.append((torch.zeros((len(px), 3), dtype=colors.dtype) + background,
                            torch.ones(len(px), dtype=colors.dtype), torch.zeros(len(px), dtype=torch.int32)))
                continue
            dx = means2d[g, 0][None, :] - px[:, None]
            dy = means2d[g, 1][None, :] - py[:, None]
            A, B, C = conics[g, 0][None], conics[g, 1][None], conics[g, 2][None]
            power = -0.5 * (A * dx * dx + C * dy * dy) - B * dx * dy
            alpha = torch.clamp(opacities[g][None] * torch.exp(power), max=ALPHA_MAX)
            mask = (power <= 0) & (alpha >= ALPHA_MIN)
            alpha = torch.where(mask, alpha, torch.zeros_like(alpha))
            T_after = torch.cumprod(1 - alpha, dim=1)
            used = mask & (T_after >= T_MIN)  # T only falls, so this is the prefix before the stop
            alpha = torch.where(used, alpha, torch.zeros_like(alpha))
            T_after = torch.cumprod(1 - alpha, dim=1)
            T_before = torch.cat([torch.ones_like(T_after[:, :1]), T_after[:, :-1]], 1)
            w = alpha * T_before
            Tf = T_after[:, -1]
            rgb = w @ colors[g] + Tf[:, None] * background
            pos = torch.arange(1, len(g) + 1, dtype=torch.int32)[None]
            nc = torch.where(used, pos, torch.zeros_like(pos)).max(1).values
            row.append((rgb, Tf, nc))
        rows.append(row)
    img_rows, t_rows, n_rows = [], [], []
    for ty, row in enumerate(rows):
        h = min(TILE, H - ty * TILE)
        img_rows.append(torch.cat([r[0].reshape(h, -1, 3) for r in row], 1))
        t_rows.append(torch.cat([r[1].reshape(h, -1) for r in row], 1))
        n_rows.append(torch.cat([r[2].reshape(h, -1) for r in row], 1))
    if rows:
        image, final_T, n_contrib = torch.cat(img_rows, 0), torch.cat(t_rows, 0), torch.cat(n_rows, 0)
    return image, final_T, n_contrib


def gs_rasterize_fwd(means2d, conics, colors, opacities, tile_ranges, ids, width, height, background):
    import torch

    _check_raster(means2d, conics, colors, opacities, tile_ranges, width, height, background)
    t = lambda a: torch.as_tensor(np.asarray(a, np.float32))  # noqa: E731
    with torch.no_grad():
        out = rasterize_torch(t(means2d), t(conics), t(colors), t(opacities), np.asarray(tile_ranges), np.asarray(ids),
                              width, height, t(background))
    return tuple(o.numpy() for o in out)


def gs_rasterize_bwd(means2d, conics, colors, opacities, tile_ranges, ids, width, height, background, final_T,
                     n_contrib, grad_image):
    import torch

    _check_raster(means2d, conics, colors, opacities, tile_ranges, width, height, background)
    ins = [torch.tensor(np.asarray(a, np.float32), requires_grad=True) for a in (means2d, conics, colors, opacities)]
    image, _, _ = rasterize_torch(*ins, np.asarray(tile_ranges), np.asarray(ids), width, height,
                                  torch.as_tensor(np.asarray(background, np.float32)))
    if image.requires_grad:
        image.backward(torch.as_tensor(np.asarray(grad_image, np.float32)))
    return tuple((i.grad if i.grad is not None else torch.zeros_like(i)).numpy() for i in ins)


def blend_pixel(means2d, conics, colors, opac, ids, a, b, fx, fy):
    """3DGS's forward blend for the pixel centre (fx, fy): front to back over the tile's
    depth-sorted Gaussians ``ids[a:b]``, skipping those whose footprint there is below
    ALPHA_MIN, stopping before the transmittance would fall under T_MIN. Returns the
    premultiplied colour (c0, c1, c2), the transmittance left and how many entries were
    walked up to the last contributor. Plain Python, compiled inline by the Numba CPU
    kernel below and as a device function by the CUDA kernel (rasterize_cuda.py)."""
    T = 1.0
    c0 = 0.0
    c1 = 0.0
    c2 = 0.0
    last = 0
    for k in range(a, b):
        g = ids[k]
        dx = means2d[g, 0] - fx
        dy = means2d[g, 1] - fy
        power = -0.5 * (conics[g, 0] * dx * dx + conics[g, 2] * dy * dy) - conics[g, 1] * dx * dy
        if power > 0 or (power < POWER_MIN and opac[g] <= 1):
            continue
        alpha = min(ALPHA_MAX, opac[g] * math.exp(power))
        if alpha < ALPHA_MIN:
            continue
        test_T = T * (1 - alpha)
        if test_T < T_MIN:
            break
        w = alpha * T
        c0 += colors[g, 0] * w
        c1 += colors[g, 1] * w
        c2 += colors[g, 2] * w
        T = test_T
        last = k - a + 1
    return c0, c1, c2, T, last


_blend_pixel = njit(inline="always")(blend_pixel)


@njit(cache=True, inline="always")
def _gather_tile(means2d, conics, colors, opac, ids, a, b):
    """The tile's Gaussians ``ids[a:b]``, copied in list order into contiguous arrays: the
    256 pixels of a tile then read them from L1 instead of gathering them from the whole
    model once per pixel (the CPU's counterpart of the CUDA kernel's shared-memory batch)."""
    n = b - a
    lm = np.empty((n, 2), means2d.dtype)
    lc = np.empty((n, 3), conics.dtype)
    lcol = np.empty((n, 3), colors.dtype)
    lo = np.empty(n, opac.dtype)
    for k in range(n):
        g = ids[a + k]
        lm[k, 0], lm[k, 1] = means2d[g, 0], means2d[g, 1]
        lc[k, 0], lc[k, 1], lc[k, 2] = conics[g, 0], conics[g, 1], conics[g, 2]
        lcol[k, 0], lcol[k, 1], lcol[k, 2] = colors[g, 0], colors[g, 1], colors[g, 2]
        lo[k] = opac[g]
    return lm, lc, lcol, lo


SUB = 4
"""The CPU kernels split each 16x16 tile into 4x4-pixel sub-tiles and give each the part
of the tile's list that can reach it (the CUDA kernels walk the whole tile list)."""


@njit(cache=True, inline="always")
def _sub_lists(lm, lc, lo, x0, y0):
    """For each SUB x SUB sub-tile of the tile at pixel (x0, y0), in list order, the tile-list
    positions of the Gaussians that can reach one of its pixel centres: (starts[17], pos).
    A Gaussian is left out of a sub-tile only where the blend skips it anyway: its power
    there is below POWER_MIN (outside the ellipse d^T Q d <= -2 POWER_MIN, whose half-widths
    are sqrt(-2 POWER_MIN cov_xx) and sqrt(-2 POWER_MIN cov_yy)) and its opacity is at most 1.
    Conics that are not positive definite, and opacities above 1, keep the whole tile."""
    n = lm.shape[0]
    ns = TILE // SUB
    lo_x = np.zeros(n, np.int64)
    hi_x = np.full(n, ns - 1, np.int64)
    lo_y = np.zeros(n, np.int64)
    hi_y = np.full(n, ns - 1, np.int64)
    counts = np.zeros(ns * ns + 1, np.int64)
    q = -2.0 * POWER_MIN
    for k in range(n):
        A, B, C = np.float64(lc[k, 0]), np.float64(lc[k, 1]), np.float64(lc[k, 2])
        det = A * C - B * B
        if lo[k] <= 1 and A > 0 and det > 0:
            ex = math.sqrt(q * C / det) * (1 + 1e-6) + 1e-3
            ey = math.sqrt(q * A / det) * (1 + 1e-6) + 1e-3
            # pixels px with |mx - (px + 0.5)| <= ex, as sub-tile indices within this tile
            px0 = math.ceil(lm[k, 0] - ex - 0.5) - x0
            px1 = math.floor(lm[k, 0] + ex - 0.5) - x0
            py0 = math.ceil(lm[k, 1] - ey - 0.5) - y0
            py1 = math.floor(lm[k, 1] + ey - 0.5) - y0
            if px1 < 0 or py1 < 0 or px0 >= TILE or py0 >= TILE:
                lo_x[k], hi_x[k] = 1, 0  # reaches no pixel of this tile
                continue
            lo_x[k], hi_x[k] = max(px0, 0) // SUB, min(px1, TILE - 1) // SUB
            lo_y[k], hi_y[k] = max(py0, 0) // SUB, min(py1, TILE - 1) // SUB
        for sy in range(lo_y[k], hi_y[k] + 1):
            for sx in range(lo_x[k], hi_x[k] + 1):
                counts[sy * ns + sx + 1] += 1
    for i in range(ns * ns):
        counts[i + 1] += counts[i]
    pos = np.empty(counts[ns * ns], np.int32)
    fill = counts[:ns * ns].copy()
    for k in range(n):
        for sy in range(lo_y[k], hi_y[k] + 1):
            for sx in range(lo_x[k], hi_x[k] + 1):
                pos[fill[sy * ns + sx]] = k
                fill[sy * ns + sx] += 1
    return counts, pos


@njit(parallel=True, cache=True)
def _raster_fwd_cpu(means2d, conics, colors, opac, ranges, ids, W, H, bg, image, final_T, n_contrib):
    tw = (W + TILE - 1) // TILE
    th = (H + TILE - 1) // TILE
    for t in prange(tw * th):
        ty, tx = t // tw, t % tw
        a, b = ranges[t], ranges[t + 1]
        lm, lc, lcol, lo = _gather_tile(means2d, conics, colors, opac, ids, a, b)
        starts, pos = _sub_lists(lm, lc, lo, tx * TILE, ty * TILE)
        for py in range(ty * TILE, min(ty * TILE + TILE, H)):
            for px in range(tx * TILE, min(tx * TILE + TILE, W)):
                s = ((py - ty * TILE) // SUB) * (TILE // SUB) + (px - tx * TILE) // SUB
                c0, c1, c2, T, last = _blend_pixel(lm, lc, lcol, lo, pos, starts[s], starts[s + 1], px + 0.5,
                                                   py + 0.5)
                image[py, px, 0] = c0 + T * bg[0]
                image[py, px, 1] = c1 + T * bg[1]
                image[py, px, 2] = c2 + T * bg[2]
                final_T[py, px] = T
                # as a position in the tile's list (the kernels' contract)
                n_contrib[py, px] = pos[starts[s] + last - 1] + 1 if last > 0 else 0


def _f32(*arrays):
    return tuple(np.ascontiguousarray(a, np.float32) for a in arrays)


def gs_rasterize_fwd_cpu(means2d, conics, colors, opacities, tile_ranges, ids, width, height, background):
    _check_raster(means2d, conics, colors, opacities, tile_ranges, width, height, background)
    W, H = int(width), int(height)
    image = np.zeros((H, W, 3), np.float32)
    final_T = np.ones((H, W), np.float32)
    n_contrib = np.zeros((H, W), np.int32)
    if W and H:
        _raster_fwd_cpu(*_f32(means2d, conics, colors, opacities), np.ascontiguousarray(tile_ranges, np.int32),
                        np.ascontiguousarray(ids, np.int32), W, H, np.asarray(background, np.float64), image, final_T,
                        n_contrib)
    return image, final_T, n_contrib


@njit(cache=True, inline="always")
def _pixel_bwd(means2d, conics, colors, opac, ids, a, fx, fy, T_final, last, gpix, bg, G):
    """Back to front over one pixel's blended Gaussians, accumulating into G[g, 0:9]
    = (d mean x, d mean y, d conic a, b, c, d color r, g, b, d opacity)."""
    T = T_final
    acc0 = acc1 = acc2 = 0.0  # colour of everything behind the current Gaussian
    last_alpha = 0.0
    lc0 = lc1 = lc2 = 0.0
    bg_dot = bg[0] * gpix[0] + bg[1] * gpix[1] + bg[2] * gpix[2]
    for k in range(a + last - 1, a - 1, -1):
        g = ids[k]
        dx, dy = means2d[g, 0] - fx, means2d[g, 1] - fy
        A, B, C = conics[g, 0], conics[g, 1], conics[g, 2]
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
        lc0, lc1, lc2 = colors[g, 0], colors[g, 1], colors[g, 2]
        G[g, 5] += w * gpix[0]
        G[g, 6] += w * gpix[1]
        G[g, 7] += w * gpix[2]
        dL_dalpha = ((lc0 - acc0) * gpix[0] + (lc1 - acc1) * gpix[1] + (lc2 - acc2) * gpix[2]) * T
        dL_dalpha += -T_final / (1 - alpha) * bg_dot
        last_alpha = alpha
        if raw > ALPHA_MAX:  # clamped: alpha does not depend on opacity or position
            continue
        G[g, 8] += e * dL_dalpha
        dL_dpower = raw * dL_dalpha
        G[g, 0] += dL_dpower * (-(A * dx) - B * dy)
        G[g, 1] += dL_dpower * (-(C * dy) - B * dx)
        G[g, 2] += dL_dpower * (-0.5 * dx * dx)
        G[g, 3] += dL_dpower * (-dx * dy)
        G[g, 4] += dL_dpower * (-0.5 * dy * dy)


@njit(parallel=True, cache=True)
def _raster_bwd_cpu(means2d, conics, colors, opac, ranges, ids, W, H, bg, final_T, n_contrib, grad_image, buf):
    # Each worker owns buf[w] (no races); tiles are dealt round-robin to workers. A tile's
    # pixels accumulate into a tile-local buffer (its Gaussians in list order), added to
    # the worker's buffer once per tile.
    tw = (W + TILE - 1) // TILE
    th = (H + TILE - 1) // TILE
    nw = buf.shape[0]
    for wk in prange(nw):
        G = buf[wk]
        for t in range(wk, tw * th, nw):
            ty, tx = t // tw, t % tw
            a, b = ranges[t], ranges[t + 1]
            lm, lc, lcol, lo = _gather_tile(means2d, conics, colors, opac, ids, a, b)
            starts, pos = _sub_lists(lm, lc, lo, tx * TILE, ty * TILE)
            GL = np.zeros((b - a, 9), np.float64)
            for py in range(ty * TILE, min(ty * TILE + TILE, H)):
                for px in range(tx * TILE, min(tx * TILE + TILE, W)):
                    last = n_contrib[py, px]
                    if last == 0:
                        continue
                    s = ((py - ty * TILE) // SUB) * (TILE // SUB) + (px - tx * TILE) // SUB
                    # the sub-tile list's entries up to the tile-list position last - 1
                    n_sub = np.searchsorted(pos[starts[s]:starts[s + 1]], last)
                    _pixel_bwd(lm, lc, lcol, lo, pos, starts[s], px + 0.5, py + 0.5, final_T[py, px], n_sub,
                               grad_image[py, px], bg, GL)
            for k in range(b - a):
                g = ids[a + k]
                for j in range(9):
                    G[g, j] += GL[k, j]


def gs_rasterize_bwd_cpu(means2d, conics, colors, opacities, tile_ranges, ids, width, height, background, final_T,
                         n_contrib, grad_image):
    _check_raster(means2d, conics, colors, opacities, tile_ranges, width, height, background)
    W, H = int(width), int(height)
    n = len(means2d)
    nw = max(1, min(get_num_threads(), n_tiles(W, H)[0] * n_tiles(W, H)[1]))
    buf = np.zeros((nw, n, 9), np.float64)
    if n and W and H:
        _raster_bwd_cpu(*_f32(means2d, conics, colors, opacities), np.ascontiguousarray(tile_ranges, np.int32),
                        np.ascontiguousarray(ids, np.int32), W, H, np.asarray(background, np.float64),
                        np.ascontiguousarray(final_T, np.float32), np.ascontiguousarray(n_contrib, np.int32),
                        np.ascontiguousarray(grad_image, np.float32), buf)
    G = buf.sum(0).astype(np.float32)
    return (np.ascontiguousarray(G[:, 0:2]), np.ascontiguousarray(G[:, 2:5]), np.ascontiguousarray(G[:, 5:8]),
            np.ascontiguousarray(G[:, 8]))
