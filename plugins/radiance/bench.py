"""``gpuforge bench radiance``: the kernels against their torch references (same process),
and whole-pipeline throughput (NeRF rays/s, splat frames/s)."""
from __future__ import annotations

import numpy as np

from gpuforge.core.bench import BenchContext, best_of, row


def _hash_rows(ctx: BenchContext) -> list[dict]:
    import torch

    from gpuforge.plugins.radiance import hashgrid as h

    N, L, log2T, F = (1 << 12, 16, 14, 2) if ctx.quick else (1 << 16, 16, 19, 2)
    T = 1 << log2T
    rng = np.random.default_rng(0)
    x = rng.random((N, 3)).astype(np.float32)
    table = (rng.standard_normal((L, T, F)) * 1e-2).astype(np.float32)
    sc, res = h.level_params(L, 16, h.per_level_scale_for(L, 16, 1024))
    g = rng.standard_normal((N, L * F)).astype(np.float32)

    def ref():
        t = torch.tensor(table, requires_grad=True)
        out = h.hash_encode_torch(torch.from_numpy(x), t, sc, res)
        out.backward(torch.from_numpy(g))

    def cpu():
        h.hash_encode_cpu(x, table, sc, res)
        h.hash_encode_bwd_cpu(x, g, sc, res, T)

    rep = 2 if ctx.quick else 3
    t_ref = best_of(ref, repeat=rep)
    t_cpu = best_of(cpu, repeat=rep)
    lookups = N * L * 8 * F * 2  # fwd gathers + bwd scatters
    name = f"hash_encode fwd+bwd N={N} L={L} T=2^{log2T} F={F}"
    return [row(name, "torch-reference", t_ref, ctx=ctx),
            row(name, "numba-cpu", t_cpu, baseline="torch-reference", baseline_seconds=t_ref,
                bytes_moved=lookups * 4, ctx=ctx, points_per_s=N / t_cpu)]


def _splat_inputs(n: int, W: int, seed: int = 0):
    from gpuforge.plugins.radiance.kernel_cases import camera, random_gaussians
    from gpuforge.plugins.radiance.rasterize import gs_bin_tiles_cpu, gs_project_cpu

    m, s, q, c, o = random_gaussians(n, seed, spread=0.8)
    s = s * 0.5
    view, K = camera(W, W)
    m2d, con, d, r = gs_project_cpu(m, s, q, view, K, W, W)
    ranges, ids = gs_bin_tiles_cpu(m2d, r, d, W, W)
    return (m, s, q, c, o, view, K), (m2d, con, c, o, ranges, ids, W, W, np.ones(3, np.float32))


def _raster_rows(ctx: BenchContext) -> list[dict]:
    import torch

    from gpuforge.plugins.radiance import rasterize as R

    n, W = (800, 64) if ctx.quick else (5000, 128)
    _, args = _splat_inputs(n, W)
    m2d, con, c, o, ranges, ids, W, H, bg = args
    gimg = np.random.default_rng(1).standard_normal((H, W, 3)).astype(np.float32)

    def ref():
        ins = [torch.tensor(a, requires_grad=True) for a in (m2d, con, c, o)]
        img, _, _ = R.rasterize_torch(*ins, ranges, ids, W, H, torch.from_numpy(bg))
        img.backward(torch.from_numpy(gimg))

    def cpu():
        _, T, nc = R.gs_rasterize_fwd_cpu(*args)
        R.gs_rasterize_bwd_cpu(*args, T, nc, gimg)

    rep = 2 if ctx.quick else 3
    t_ref = best_of(ref, repeat=rep)
    t_cpu = best_of(cpu, repeat=rep)
    name = f"rasterize fwd+bwd {W}x{H}, {n} Gaussians ({len(ids)} tile entries)"
    return [row(name, "torch-reference", t_ref, ctx=ctx),
            row(name, "numba-cpu", t_cpu, baseline="torch-reference", baseline_seconds=t_ref, ctx=ctx)]


def _composite_rows(ctx: BenchContext) -> list[dict]:
    from gpuforge.plugins.radiance import raymarch as M

    R_, S = (2000, 64) if ctx.quick else (16384, 128)
    s, c, d, r = M._comp_inputs(R_, S, 0, 5.0)
    rng = np.random.default_rng(2)
    gc, go = rng.standard_normal((R_, 3)).astype(np.float32), rng.standard_normal(R_).astype(np.float32)

    def ref():
        col, op, n = M.composite_fwd(s, c, d, r)
        M.composite_bwd(s, c, d, r, col, op, n, gc, go)

    def cpu():
        col, op, n = M.composite_fwd_cpu(s, c, d, r)
        M.composite_bwd_cpu(s, c, d, r, col, op, n, gc, go)

    t_ref, t_cpu = best_of(ref, repeat=2), best_of(cpu, repeat=3)
    name = f"composite fwd+bwd {R_} rays, {len(s)} samples"
    return [row(name, "torch-reference", t_ref, ctx=ctx),
            row(name, "numba-cpu", t_cpu, baseline="torch-reference", baseline_seconds=t_ref, ctx=ctx)]


def _pipeline_rows(ctx: BenchContext) -> list[dict]:
    import torch

    from gpuforge.plugins.radiance.nerf import NerfConfig, NerfModel
    from gpuforge.plugins.radiance.scene import Cameras, look_at_opengl
    from gpuforge.plugins.radiance.splat import render_gaussians_raw

    W = 64 if ctx.quick else 128
    cfg = NerfConfig(log2_hashmap_size=14 if ctx.quick else 19)
    model = NerfModel(cfg, np.array([[-1.25] * 3, [1.25] * 3]))
    G = cfg.grid_res
    idx = np.stack(np.meshgrid(*(np.arange(G),) * 3, indexing="ij"), -1)
    ball = (np.linalg.norm((idx + 0.5) / G * 2.5 - 1.25, axis=-1) < 0.8).astype(np.uint8)
    model.occ = torch.from_numpy(ball)
    f = 0.5 * W / np.tan(0.5 * 0.6911)
    cams = Cameras(look_at_opengl([3.0, -2.0, 2.0])[None], np.array([f]), np.array([f]), np.array([W / 2]),
                   np.array([W / 2]), W, W)
    t_nerf = best_of(lambda: model.render_image(cams, 0, np.ones(3, np.float32)), repeat=2)
    (m, s, q, c, o, view, K), _ = _splat_inputs(800 if ctx.quick else 5000, W)
    c2w = cams.c2w[0]
    tens = [torch.from_numpy(a) for a in (m, s, q, c, o)]

    def splat():
        with torch.no_grad():
            render_gaussians_raw(*tens, c2w, f, f, W / 2, W / 2, W, W, np.ones(3, np.float32))

    t_splat = best_of(splat, repeat=3)
    return [row(f"nerf render {W}x{W} (untrained, ball occupancy)", "numba-cpu+torch", t_nerf, ctx=ctx,
                rays_per_s=W * W / t_nerf, frames_per_s=1 / t_nerf),
            row(f"splat render {W}x{W}, {len(m)} Gaussians", "numba-cpu+torch", t_splat, ctx=ctx,
                frames_per_s=1 / t_splat, rays_per_s=W * W / t_splat)]


def run(ctx: BenchContext) -> list[dict]:
    rows = []
    for part in (_hash_rows, _raster_rows, _composite_rows, _pipeline_rows):
        rows.extend(part(ctx))
    return rows
