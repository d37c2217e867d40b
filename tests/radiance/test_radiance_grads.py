"""Backward passes: the torch references pass gradcheck (float64), and the numba-cpu
backwards agree with central finite differences of their own forwards."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gpuforge.plugins.radiance import hashgrid as H
from gpuforge.plugins.radiance import kernel_cases as KC
from gpuforge.plugins.radiance import raymarch as M
from gpuforge.plugins.radiance import rasterize as R


def test_hash_encoding_function_gradcheck_numba_cpu():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((30, 3)))
    sc, res = H.level_params(3, 4, 2.0)
    table = torch.tensor(rng.standard_normal((3, 128, 2)) * 0.1, requires_grad=True)
    f = lambda t: H.HashEncodeFn.apply(x, t, sc, res, "numba-cpu")  # noqa: E731
    assert torch.autograd.gradcheck(f, (table,), eps=1e-6, atol=1e-5)
    # and the autograd Function equals the torch reference
    np.testing.assert_allclose(f(table).detach().numpy(), H.hash_encode_torch(x, table, sc, res).detach().numpy(),
                               atol=1e-12)


def test_hash_index_formula_by_hand():
    # level 0 of base 2 fits the table -> dense; a coarse point's corners are known
    sc, res = H.level_params(2, 2, 8.0)  # scales 1, 15 -> resolutions 2, 16
    assert list(res) == [2, 16]
    T = 64
    table = np.zeros((2, T, 1), np.float32)
    table[0, :8, 0] = np.arange(8)  # dense level: index = x + 2y + 4z
    x = np.array([[0.25, 0.25, 0.25]], np.float32)  # pos = 0.25*1+0.5 = 0.75 -> cell 0, frac 0.75
    out = H.hash_encode_cpu(x, table, sc, res)
    w = np.array([0.25, 0.75])
    exp = sum(w[i] * w[j] * w[k] * (i + 2 * j + 4 * k) for i in (0, 1) for j in (0, 1) for k in (0, 1))
    assert out[0, 0] == pytest.approx(exp)
    # level 1: 16^3 > 64 -> hashed with tiny-cuda-nn's primes
    table[1, :, 0] = np.arange(T)
    x = np.array([[0.0, 0.0, 0.0]], np.float32)  # pos 0.5 -> cell (0,0,0), frac 0.5: all corners 1/8
    idx = [(i ^ ((j * 2654435761) & 0xFFFFFFFF) ^ ((k * 805459861) & 0xFFFFFFFF)) % T
           for i in (0, 1) for j in (0, 1) for k in (0, 1)]
    assert H.hash_encode_cpu(x, table, sc, res)[0, 1] == pytest.approx(np.mean(idx))


def test_reference_rasterizer_gradcheck():
    args = KC._raster_inputs(6, 12, 10, 3, 0.3)  # one tile: few reference evaluations per gradcheck step
    m2d, con, c, o, ranges, ids, W, Hh, bg = args
    assert len(ids) > 0
    ins = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (m2d, con, c, o)]
    f = lambda *t: R.rasterize_torch(*t, ranges, ids, W, Hh, torch.tensor(bg, dtype=torch.float64))[0]  # noqa: E731
    assert torch.autograd.gradcheck(f, tuple(ins), eps=1e-6, atol=1e-4, rtol=1e-3)


def test_reference_projection_gradcheck():
    m, s, q, _, _ = KC.random_gaussians(6, 2, 0.5)
    view, K = KC.camera(32, 32)
    ins = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (m, s, q)]
    V = torch.tensor(view, dtype=torch.float64)

    def f(*t):
        m2d, con, d, _ = R.project_torch(*t, V, float(K[0]), float(K[1]), float(K[2]), float(K[3]), 32, 32)
        return m2d, con, d

    assert torch.autograd.gradcheck(f, tuple(ins), eps=1e-6, atol=1e-5)


def _directional_fd(fwd, bwd_grads, inputs, loss_w, rng, eps=1e-3, tol=2e-2):
    """Compare <grad, v> with (L(x + eps v) - L(x - eps v)) / 2 eps for a random direction v."""
    for k, x in enumerate(inputs):
        v = rng.standard_normal(x.shape) * (np.abs(x) + 1e-3)  # relative: stay off the cut-offs
        plus = [a.astype(np.float64) for a in inputs]
        minus = [a.astype(np.float64) for a in inputs]
        plus[k] = plus[k] + eps * v
        minus[k] = minus[k] - eps * v
        fd = (loss_w(fwd(*plus)) - loss_w(fwd(*minus))) / (2 * eps)
        an = float((bwd_grads[k].astype(np.float64) * v).sum())
        assert abs(fd - an) <= tol * max(1.0, abs(an)), (k, fd, an)


def _fwd64(m2d, con, c, o, ranges, ids, W, H, bg):
    """The numba-cpu forward kernel run in float64 (its wrapper casts to float32), so that a
    tiny finite-difference step crosses none of the 1/255 / 1e-4 cut-offs."""
    img = np.zeros((H, W, 3))
    R._raster_fwd_cpu(*(np.ascontiguousarray(a, np.float64) for a in (m2d, con, c, o)), ranges, ids, W, H,
                      np.asarray(bg, np.float64), img, np.ones((H, W)), np.zeros((H, W), np.int32))
    return img


def test_numba_rasterizer_backward_matches_finite_differences():
    from numba import get_num_threads

    rng = np.random.default_rng(0)
    args = KC._raster_inputs(20, 16, 16, 11, 0.4)
    m2d, con, c, o, ranges, ids, W, Hh, bg = args
    o = np.clip(o, 0.05, 0.8)  # away from the 0.99 clamp
    gimg = rng.standard_normal((Hh, W, 3))
    T = np.ones((Hh, W))
    nc = np.zeros((Hh, W), np.int32)
    R._raster_fwd_cpu(*(a.astype(np.float64) for a in (m2d, con, c, o)), ranges, ids, W, Hh, bg.astype(np.float64),
                      np.zeros((Hh, W, 3)), T, nc)
    buf = np.zeros((get_num_threads(), len(o), 9))
    R._raster_bwd_cpu(*(a.astype(np.float64) for a in (m2d, con, c, o)), ranges, ids, W, Hh, bg.astype(np.float64),
                      T, nc, gimg, buf)
    G = buf.sum(0)
    grads = [G[:, 0:2], G[:, 2:5], G[:, 5:8], G[:, 8]]
    fwd = lambda a, b, cc, d: _fwd64(a, b, cc, d, ranges, ids, W, Hh, bg)  # noqa: E731
    _directional_fd(fwd, grads, [m2d, con, c, o], lambda img: float((img * gimg).sum()), rng, eps=1e-7, tol=1e-4)


def test_numba_composite_backward_matches_finite_differences():
    rng = np.random.default_rng(1)
    s, c, d, r = M._comp_inputs(10, 12, 0, 3.0)
    col, op, n = M.composite_fwd_cpu(s, c, d, r)
    gc, go = rng.standard_normal(col.shape), rng.standard_normal(op.shape)
    grads = M.composite_bwd_cpu(s, c, d, r, col, op, n, gc, go)
    fwd = lambda ss, cc: M.composite_fwd_cpu(ss, cc, d, r)[:2]  # noqa: E731
    _directional_fd(fwd, grads, [s, c], lambda out: float((out[0] * gc).sum() + (out[1] * go).sum()), rng)


def test_reference_composite_gradcheck():
    s, c, d, r = M._comp_inputs(6, 8, 3, 2.0)
    ins = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (s, c)]
    f = lambda a, b: M.composite_torch(a, b, torch.tensor(d, dtype=torch.float64), r)[:2]  # noqa: E731
    assert torch.autograd.gradcheck(f, tuple(ins), eps=1e-6, atol=1e-5)


def test_sparse_adam_moves_only_touched_entries():
    from gpuforge.plugins.radiance.nerf import sparse_adam

    p = np.ones(10, np.float32)
    g = np.zeros(10, np.float32)
    g[3] = 0.5
    m, v = np.zeros(10, np.float32), np.zeros(10, np.float32)
    m[5] = 1.0  # a stale moment must not move an untouched entry
    sparse_adam(p, g, m, v, 0.1, 0.9, 0.99, 1e-15, 1)
    assert p[3] < 1 and np.all(np.delete(p, 3) == 1)


def test_sparse_adam_equals_the_plain_update_bit_for_bit():
    """The Numba pass against the same arithmetic in NumPy (float64 moments from float32
    storage, one rounding per stored value): touched entries move exactly as Adam says,
    untouched ones (a gradient of exactly 0, or -0.0) keep their bits, stale moments too."""
    from gpuforge.plugins.radiance.nerf import sparse_adam

    rng = np.random.default_rng(4)
    n = 5000
    g = (rng.standard_normal(n) * (rng.random(n) < 0.3)).astype(np.float32)
    g[:5] = -0.0
    p0, m0 = rng.standard_normal(n).astype(np.float32), (rng.standard_normal(n) * 0.01).astype(np.float32)
    v0 = (rng.random(n) * 1e-3).astype(np.float32)
    lr, b1, b2, eps, step = 0.01, 0.9, 0.99, 1e-15, 7
    c1, c2 = 1 - b1 ** step, 1 - b2 ** step
    gd = g.astype(np.float64)
    mi = b1 * m0.astype(np.float64) + (1 - b1) * gd
    vi = b2 * v0.astype(np.float64) + (1 - b2) * gd * gd
    pi = p0.astype(np.float64) - lr * (mi / c1) / (np.sqrt(vi / c2) + eps)
    touched = g != 0
    want = [np.where(touched, x.astype(np.float32), old) for x, old in ((pi, p0), (mi, m0), (vi, v0))]
    p, m, v = p0.copy(), m0.copy(), v0.copy()
    sparse_adam(p, g, m, v, lr, b1, b2, eps, step)
    for got, exp in zip((p, m, v), want):
        assert np.array_equal(got.view(np.uint32), exp.view(np.uint32))
    assert touched.sum() > 1000 and (~touched).sum() > 3000


def test_two_feature_forward_gives_the_generic_kernels_bits():
    """hash_encode_cpu takes _fwd_cpu_f2 for float32 tables of two features (sums kept in
    registers); it must give _fwd_cpu's bits, on dense and hashed levels and clamped points."""
    from gpuforge.plugins.radiance import hashgrid as H

    rng = np.random.default_rng(5)
    x = rng.random((4000, 3)).astype(np.float32) * 1.2 - 0.1
    for L, T, base, maxres in ((16, 2 ** 14, 16, 1024), (4, 2 ** 10, 4, 16), (6, 1000, 3, 200)):
        table = (rng.standard_normal((L, T, 2)) * 0.1).astype(np.float32)
        sc, res = H.level_params(L, base, H.per_level_scale_for(L, base, maxres))
        xx, scc, rr, half = H._prep(x, sc, res, np.float32)
        a, b = np.empty((len(x), 2 * L), np.float32), np.empty((len(x), 2 * L), np.float32)
        H._fwd_cpu(xx, table, scc, rr, half, a)
        H._fwd_cpu_f2(xx, table, scc, rr, half, b)
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), (L, T)
        assert np.array_equal(H.hash_encode_cpu(x, table, sc, res).view(np.uint32), b.view(np.uint32))
