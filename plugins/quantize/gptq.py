"""GPTQ (Frantar et al. 2023, "GPTQ: Accurate Post-Training Quantization for Generative
Pre-trained Transformers", Algorithm 1) and round-to-nearest (RTN) with the same grid.

- ``H = 2 X X^T / n`` from calibration inputs of the layer (sec. 3, eq. 1-2), dampened by
  ``percdamp * mean(diag(H))`` (sec. 4 "Cholesky reformulation").
- The inverse Hessian's upper Cholesky factor drives the column-wise error compensation
  (eq. 3 via Cholesky, step 3), applied lazily in blocks of 128 columns (step 2,
  "Lazy batch-updates").
- ``act_order`` quantizes columns by decreasing ``diag(H)`` (the "desc_act" heuristic of
  the reference implementation); group parameters are then found in that order and
  ``g_idx`` maps every input column to its group.
- The grid is the reference implementation's min-max quantizer: asymmetric
  (``zero = round(-min / scale)``) or symmetric (``zero = (maxq + 1) / 2``), per output row
  and group of ``group_size`` input columns. Scales are rounded to float16 before they
  are used, since that is what the checkpoint stores (GPTQ v1 ``scales`` fp16), and the
  zero point is kept >= 1: v1 stores ``zero - 1`` in ``bits`` bits, so 0 cannot be stored.

torch only; runs on the CPU here (and on CUDA tensors as is).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class GroupQuant:
    """Integer weights and grid of one layer, in nn.Linear orientation (out, in)."""

    q: torch.Tensor        # uint8 (out, in) in [0, maxq]
    scales: torch.Tensor   # float16 (ngroups, out)
    zeros: torch.Tensor    # int32 (ngroups, out), the true zero point (>= 1)
    g_idx: torch.Tensor    # int32 (in,)
    bits: int
    group_size: int        # the real group size (in_features when "per channel")

    def dequantize(self) -> torch.Tensor:
        """float32 (out, in)."""
        g = self.g_idx.long()
        s = self.scales.float()[g].T          # (out, in)
        z = self.zeros.float()[g].T
        return s * (self.q.float() - z)


def _range_params(xmin: torch.Tensor, xmax: torch.Tensor, bits: int, sym: bool) -> tuple[torch.Tensor, torch.Tensor]:
    maxq = 2 ** bits - 1
    xmin = torch.clamp(xmin, max=0)
    xmax = torch.clamp(xmax, min=0)
    if sym:
        xmax = torch.maximum(xmin.abs(), xmax)
        xmin = torch.where(xmin < 0, -xmax, xmin)
    same = (xmin == 0) & (xmax == 0)
    xmin = torch.where(same, torch.full_like(xmin, -1.0), xmin)
    xmax = torch.where(same, torch.full_like(xmax, 1.0), xmax)
    scale = ((xmax - xmin) / maxq).half().float()
    scale = torch.where(scale == 0, torch.full_like(scale, 2.0 ** -14), scale)  # fp16 underflow
    if sym:
        zero = torch.full_like(scale, (maxq + 1) / 2)
    else:
        zero = torch.clamp(torch.round(-xmin / scale), 1, maxq)
    return scale, zero


MSE_GRID = 40
MSE_MAX_SHRINK = 0.8
MSE_NORM = 2.4


def find_params(w: torch.Tensor, bits: int, sym: bool, mse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale fp16-rounded as float32, zero float32) per row of ``w`` (rows, cols).

    ``mse``: instead of the row's min/max, the range shrunk by the factor in
    ``1, 1 - 1/40, ..., 0.2`` whose rounded weights have the least ``sum |error|^2.4``
    per row (the GPTQ reference quantizer's ``mse`` option: clipping a few large weights
    buys a finer grid for the rest)."""
    xmin, xmax = w.min(dim=1).values, w.max(dim=1).values
    scale, zero = _range_params(xmin, xmax, bits, sym)
    if not mse:
        return scale, zero
    maxq = 2 ** bits - 1
    best = torch.full((w.shape[0],), float("inf"))
    for i in range(int(MSE_MAX_SHRINK * MSE_GRID)):
        shrink = 1 - i / MSE_GRID
        s, z = _range_params(xmin * shrink, xmax * shrink, bits, sym)
        q = torch.clamp(torch.round(w / s[:, None]) + z[:, None], 0, maxq)
        err = ((s[:, None] * (q - z[:, None]) - w).abs() ** MSE_NORM).sum(1)
        better = err < best
        best = torch.where(better, err, best)
        scale, zero = torch.where(better, s, scale), torch.where(better, z, zero)
    return scale, zero


def quantize_col(w, scale, zero, maxq):
    q = torch.clamp(torch.round(w / scale) + zero, 0, maxq)
    return q, scale * (q - zero)


def rtn(weight: torch.Tensor, bits: int = 4, group_size: int = 128, sym: bool = False, mse: bool = False) -> GroupQuant:
    """Round-to-nearest on the same grid (the GPTQ paper's baseline)."""
    W = weight.detach().float()
    rows, cols = W.shape
    gs = cols if group_size in (-1, 0) else group_size
    ng = math.ceil(cols / gs)
    maxq = 2 ** bits - 1
    Q = torch.empty(rows, cols, dtype=torch.uint8)
    scales = torch.empty(ng, rows)
    zeros = torch.empty(ng, rows)
    for g in range(ng):
        sl = slice(g * gs, min((g + 1) * gs, cols))
        s, z = find_params(W[:, sl], bits, sym, mse)
        q, _ = quantize_col(W[:, sl], s[:, None], z[:, None], maxq)
        Q[:, sl] = q.to(torch.uint8)
        scales[g], zeros[g] = s, z
    g_idx = (torch.arange(cols) // gs).int()
    return GroupQuant(Q, scales.half(), zeros.int(), g_idx, bits, gs)


class Hessian:
    """Running ``2 X X^T / n`` of a layer's inputs (rows of X are tokens)."""

    def __init__(self, cols: int):
        self.H = torch.zeros(cols, cols, dtype=torch.float64)
        self.n = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).double()
        m = x.shape[0]
        self.H *= self.n / (self.n + m)
        self.n += m
        x = math.sqrt(2 / self.n) * x
        self.H += x.T @ x


def gptq(weight: torch.Tensor, H: torch.Tensor, bits: int = 4, group_size: int = 128, sym: bool = False,
         act_order: bool = False, blocksize: int = 128, percdamp: float = 0.01, mse: bool = False) -> GroupQuant:
    """GPTQ of one layer: ``weight`` (out, in), ``H`` (in, in) from :class:`Hessian`.

    Runs on one torch thread: the column loop is thousands of small ops, and on a shared
    CPU the intra-op thread pool made it 10x slower (1.4 s vs 16.6 s for a 384x1536 layer)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _gptq(weight, H, bits, group_size, sym, act_order, blocksize, percdamp, mse)
    finally:
        torch.set_num_threads(threads)


def _gptq(weight, H, bits, group_size, sym, act_order, blocksize, percdamp, mse=False) -> GroupQuant:
    W = weight.detach().float().clone()
    rows, cols = W.shape
    H = H.double().clone()
    maxq = 2 ** bits - 1
    gs = cols if group_size in (-1, 0) else group_size
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(cols)
    W = W[:, perm]
    H = H[perm][:, perm]
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype)
    L = torch.linalg.cholesky(H)
    # H^-1 from the Cholesky factor (torch.cholesky_inverse is ~20x slower on this CPU)
    Hinv = torch.cholesky_solve(torch.eye(cols, dtype=H.dtype), L)
    Hinv = torch.linalg.cholesky(Hinv, upper=True).float()

    Q = torch.zeros(rows, cols)
    ng = math.ceil(cols / gs)
    scales = torch.zeros(ng, rows)
    zeros = torch.zeros(ng, rows)
    scale = zero = None
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            c = i1 + i
            if c % gs == 0:
                # the group's current (already compensated) weights: the rest of this
                # block from W1, anything beyond it from W
                grp = torch.cat([W1[:, i:min(i + gs, i2 - i1)], W[:, i2:c + gs]], dim=1)
                scale, zero = find_params(grp, bits, sym, mse)
                scales[c // gs], zeros[c // gs] = scale, zero
            w = W1[:, i]
            d = Hinv1[i, i]
            q, deq = quantize_col(w, scale, zero, maxq)
            Q1[:, i] = q
            err = (w - deq) / d
            W1[:, i:] -= err[:, None] @ Hinv1[i, i:][None, :]
            Err1[:, i] = err
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

    inv = torch.argsort(perm)
    g_idx = (inv // gs).int()        # column j was quantized at position inv[j]
    return GroupQuant(Q[:, inv].to(torch.uint8), scales.half(), zeros.int(), g_idx, bits, gs)


def gptq_codebook(weight: torch.Tensor, H: torch.Tensor, scales: torch.Tensor, code: torch.Tensor,
                  act_order: bool = False, blocksize: int = 128, percdamp: float = 0.01) -> torch.Tensor:
    """GPTQ's error compensation on a fixed grid that is not uniform: every weight ``w``
    becomes ``code[q] * s`` with ``s = scales[row, col]`` given in advance (for NF4/FP4
    the block absmax of the original weights, double-quantized as it will be stored) and
    ``q`` the code nearest ``w / s``; each column's rounding error is spread over the
    columns not yet quantized exactly as in :func:`gptq`. Returns the codes, uint8 (out, in).

    Fixed scales are what lets the result stay in the bitsandbytes layout: blocks are runs
    of the flattened weight, so with act-order they are not contiguous in quantization
    order, and double quantization needs every absmax before any is stored (the
    "static groups" variant of GPTQ)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _gptq_codebook(weight, H, scales, code, act_order, blocksize, percdamp)
    finally:
        torch.set_num_threads(threads)


def _nearest_code(x: torch.Tensor, sorted_code: torch.Tensor, mids: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    return order[torch.bucketize(x, mids)]


def _gptq_codebook(weight, H, scales, code, act_order, blocksize, percdamp) -> torch.Tensor:
    W = weight.detach().float().clone()
    S = scales.detach().float().clone()
    rows, cols = W.shape
    code = code.detach().float()
    order = torch.argsort(code)
    sorted_code = code[order]
    mids = (sorted_code[1:] + sorted_code[:-1]) / 2
    zero_q = int(torch.argmin(code.abs()))
    H = H.double().clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(cols)
    W, S = W[:, perm], S[:, perm]
    H = H[perm][:, perm]
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype)
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_solve(torch.eye(cols, dtype=H.dtype), L)
    Hinv = torch.linalg.cholesky(Hinv, upper=True).float()
    Q = torch.empty(rows, cols, dtype=torch.uint8)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            w = W1[:, i]
            s = S[:, i1 + i]
            live = s > 0
            q = _nearest_code(torch.where(live, w / torch.where(live, s, 1.0), 0.0), sorted_code, mids, order)
            q = torch.where(live, q, zero_q)
            deq = code[q] * s
            Q[:, i1 + i] = q.to(torch.uint8)
            err = (w - deq) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] @ Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q[:, torch.argsort(perm)]
