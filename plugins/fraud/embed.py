"""Time-attention Bi-LSTM session embeddings (FinDeepBehaviorCluster, section "behaviour
sequence embedding"), trained without labels.

Input per event: a learned page embedding concatenated with ``log(1 + dt)`` (seconds
since the previous event of the session; 0 for the first). A bidirectional LSTM reads
the sequence; a time-aware attention ``a_t = softmax(v . tanh(W h_t + u log(1+dt_t)))``
pools the hidden states into the session vector ``z`` (``--dim``).

Objectives (no labels):
- ``reconstruct``: a GRU decoder initialised from ``z`` regenerates the page sequence
  (teacher forcing, cross-entropy) and each ``log(1 + dt)`` (squared error).
- ``next-event``: from the forward-direction state at t and ``z``, predict page t+1
  and its ``log(1 + dt)``.

Sequences are cut to their first ``max_len`` events. The model file holds the weights,
the page vocabulary and the hyper-parameters; ``fraud embed --model FILE`` reuses it
(unknown pages map to an <unk> id).
"""
from __future__ import annotations

from pathlib import Path

from gpuforge.core.errors import BadInputError
from gpuforge.core.log import get_logger

log = get_logger("fraud.embed")


def sequences(df, vocab: dict[str, int] | None = None, max_len: int = 48):
    """Sorted click frame -> (session ids, page ids (n, L) int64, log dt (n, L) float32, lengths, vocab)."""
    import numpy as np

    sid = df["session_id"].to_numpy()
    t = df["timestamp"].to_numpy(np.float64)
    ev = df["event"].astype(str).to_numpy()
    if vocab is None:
        pages = sorted(set(ev.tolist()))
        vocab = {p: i + 2 for i, p in enumerate(pages)}  # 0 pad, 1 unknown
    ids = np.array([vocab.get(e, 1) for e in ev], np.int64)
    new = np.ones(len(df), bool)
    new[1:] = sid[1:] != sid[:-1]
    dt = np.zeros(len(df))
    dt[1:] = np.maximum(t[1:] - t[:-1], 0.0)
    dt[new] = 0.0
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], len(df))
    n = len(starts)
    lengths = np.minimum(ends - starts, max_len)
    L = int(lengths.max()) if n else 1
    P = np.zeros((n, L), np.int64)
    D = np.zeros((n, L), np.float32)
    pos = np.arange(len(df)) - np.repeat(starts, ends - starts)
    keep = pos < max_len
    row = np.repeat(np.arange(n), ends - starts)
    P[row[keep], pos[keep]] = ids[keep]
    D[row[keep], pos[keep]] = np.log1p(dt[keep])
    return sid[starts], P, D, lengths.astype(np.int64), vocab


def build_model(n_pages: int, dim: int, hidden: int, page_dim: int, objective: str):
    import torch
    from torch import nn

    class TimeAttentionBiLSTM(nn.Module):
        def __init__(self):
            super().__init__()
            self.page = nn.Embedding(n_pages, page_dim, padding_idx=0)
            self.lstm = nn.LSTM(page_dim + 1, hidden, batch_first=True, bidirectional=True)
            self.att_w = nn.Linear(2 * hidden, hidden)
            self.att_u = nn.Linear(1, hidden, bias=False)
            self.att_v = nn.Linear(hidden, 1, bias=False)
            self.proj = nn.Linear(2 * hidden, dim)
            if objective == "reconstruct":
                self.dec = nn.GRU(page_dim + 1, dim, batch_first=True)
                self.out_page = nn.Linear(dim, n_pages)
                self.out_dt = nn.Linear(dim, 1)
            else:
                self.out_page = nn.Linear(hidden + dim, n_pages)
                self.out_dt = nn.Linear(hidden + dim, 1)

        def encode(self, P, D, lengths):
            x = torch.cat([self.page(P), D.unsqueeze(-1)], -1)
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            h, _ = self.lstm(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=P.shape[1])
            mask = torch.arange(P.shape[1])[None, :] < lengths[:, None]
            e = self.att_v(torch.tanh(self.att_w(h) + self.att_u(D.unsqueeze(-1)))).squeeze(-1)
            e = e.masked_fill(~mask, -1e9)
            a = torch.softmax(e, -1)
            z = self.proj((a.unsqueeze(-1) * h).sum(1))
            return z, h, mask

        def loss(self, P, D, lengths):
            z, h, mask = self.encode(P, D, lengths)
            if objective == "reconstruct":
                # decoder input: previous page and dt (shifted right), state from z
                x = torch.cat([self.page(P), D.unsqueeze(-1)], -1)
                x = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)
                y, _ = self.dec(x, z.unsqueeze(0).contiguous())
                tgt_p, tgt_d, m = P, D, mask
            else:
                hf = h[:, :-1, : h.shape[-1] // 2]  # forward direction only: no peeking
                y = torch.cat([hf, z.unsqueeze(1).expand(-1, hf.shape[1], -1)], -1)
                tgt_p, tgt_d, m = P[:, 1:], D[:, 1:], mask[:, 1:]
            logits = self.out_page(y)
            ce = nn.functional.cross_entropy(logits[m], tgt_p[m]) if m.any() else logits.sum() * 0
            mse = ((self.out_dt(y).squeeze(-1) - tgt_d) ** 2)[m].mean() if m.any() else ce * 0
            return ce + mse, float(ce.detach()), float(mse.detach())

    return TimeAttentionBiLSTM()


def train_and_embed(df, *, dim=64, epochs=3, objective="reconstruct", model_path: Path | None = None,
                    reuse: Path | None = None, max_len=48, max_train=20000, batch=256, seed=0, hidden=64,
                    page_dim=16):
    """Returns (session ids, Z (n, dim) float32, info). Trains unless ``reuse`` is given."""
    import numpy as np
    import torch

    if objective not in ("reconstruct", "next-event"):
        raise BadInputError(f"--objective must be reconstruct or next-event, got {objective!r}")
    import os

    # one intra-op thread: on a small shared CPU, OpenMP threads spin-waiting for each
    # other made a training step ~40x slower than one thread (measured on 2 busy cores)
    torch.set_num_threads(int(os.environ.get("GPUFORGE_FRAUD_TORCH_THREADS", "1")))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    info: dict = {}
    if reuse is not None:
        try:
            ck = torch.load(reuse, map_location="cpu", weights_only=False)
            hp = ck["hparams"]
        except Exception as exc:
            raise BadInputError(f"cannot load model {reuse}: {str(exc).splitlines()[0]}") from None
        vocab = ck["vocab"]
        model = build_model(hp["n_pages"], hp["dim"], hp["hidden"], hp["page_dim"], hp["objective"])
        model.load_state_dict(ck["state"])
        max_len = hp["max_len"]
        info.update(reused=str(reuse), **hp)
        sids, P, D, lengths, _ = sequences(df, vocab, max_len)
    else:
        sids, P, D, lengths, vocab = sequences(df, None, max_len)
        hp = dict(n_pages=len(vocab) + 2, dim=dim, hidden=hidden, page_dim=page_dim, objective=objective,
                  max_len=max_len)
        model = build_model(**{k: hp[k] for k in ("n_pages", "dim", "hidden", "page_dim", "objective")})
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        train_idx = rng.permutation(len(sids))[:max_train]
        losses = []
        model.train()
        for ep in range(epochs):
            perm = rng.permutation(train_idx)
            tot = 0.0
            nb = 0
            for s in range(0, len(perm), batch):
                b = perm[s:s + batch]
                Lb = int(lengths[b].max())
                loss, ce, mse = model.loss(torch.from_numpy(P[b, :Lb]), torch.from_numpy(D[b, :Lb]),
                                           torch.from_numpy(lengths[b]))
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                tot += float(loss.detach())
                nb += 1
            losses.append(tot / max(nb, 1))
            log.info("embed epoch %d/%d: loss %.4f", ep + 1, epochs, losses[-1])
        info.update(trained_sessions=int(len(train_idx)), epochs=epochs, loss_per_epoch=losses, **hp)
        if model_path is not None:
            torch.save({"state": model.state_dict(), "vocab": vocab, "hparams": hp}, model_path)
    model.eval()
    Z = np.empty((len(sids), hp["dim"]), np.float32)
    with torch.no_grad():
        order = np.argsort(lengths, kind="stable")  # batch similar lengths
        for s in range(0, len(order), 2048):
            b = order[s:s + 2048]
            Lb = int(lengths[b].max())
            z, _, _ = model.encode(torch.from_numpy(P[b, :Lb]), torch.from_numpy(D[b, :Lb]),
                                   torch.from_numpy(lengths[b]))
            Z[b] = z.numpy()
    return sids, Z, info
