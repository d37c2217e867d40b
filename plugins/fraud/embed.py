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

Sequences are cut to their first ``max_len`` events. The model file is safetensors: the
weights as tensors, the hyper-parameters and the page vocabulary as JSON in its header
metadata (nothing in it is executed when read; pickled models of earlier versions are
refused). ``fraud embed --model FILE`` reuses it (unknown pages map to an <unk> id).
"""
from __future__ import annotations

from pathlib import Path

from gpuforge.core.errors import BadInputError, UsageError
from gpuforge.core.log import get_logger

log = get_logger("fraud.embed")

MODEL_FORMAT = "gpuforge.fraud.embed/1"
"""The ``format`` entry of a model file's metadata."""
HPARAMS = {"n_pages": int, "dim": int, "hidden": int, "page_dim": int, "objective": str, "max_len": int}


def model_path_for(out: Path) -> Path:
    """Where ``fraud embed --out OUT`` saves the model it trained."""
    out = Path(out)
    return out.with_name(out.name + ".model.safetensors")


def save_model(path: Path, model, vocab: dict[str, int], hp: dict) -> None:
    """Weights as safetensors; hyper-parameters and vocabulary as JSON metadata."""
    import json

    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": MODEL_FORMAT, "config": json.dumps(hp),
                                             "vocab": json.dumps(vocab)})


def _pickle_like(path: Path) -> bool:
    """torch.save's zip archive or a bare pickle stream (0x80, protocol 2-5). A
    safetensors file starts with its 8-byte header length, then ``{``: never taken for
    pickle, whatever that length's first byte is."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head[8:9] == b"{":
        return False
    return head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))


def load_model(path: Path):
    """(model, vocab, hp) from a file :func:`save_model` wrote; anything else is refused
    with one line (BadInputError)."""
    import json

    import torch
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise BadInputError(f"model {path} is a folder; pass the .model.safetensors file `fraud embed` wrote")
    if _pickle_like(path):
        raise BadInputError(f"model {path} is a pickle file (a torch.save'd model of an earlier gpuforge); pickle "
                            "files are not read: train again with `fraud embed` to get a .model.safetensors")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInputError(f"cannot read model {path}: {msg}; pass the .model.safetensors `fraud embed` wrote") from None
    if meta.get("format") != MODEL_FORMAT:
        raise BadInputError(f"model {path} is not a `fraud embed` model (its metadata has no format "
                            f"{MODEL_FORMAT!r})")
    try:
        hp = json.loads(meta["config"])
        vocab = json.loads(meta["vocab"])
        ok = (isinstance(hp, dict) and all(isinstance(hp.get(k), t) and not isinstance(hp.get(k), bool)
                                           for k, t in HPARAMS.items())
              and isinstance(vocab, dict) and all(isinstance(v, int) for v in vocab.values()))
    except (KeyError, ValueError):
        ok = False
    if not ok or hp["objective"] not in ("reconstruct", "next-event") or min(
            hp[k] for k in ("n_pages", "dim", "hidden", "page_dim", "max_len")) < 1 or (
            vocab and (min(vocab.values()) < 2 or max(vocab.values()) >= hp["n_pages"])):
        raise BadInputError(f"model {path}: its config or vocabulary metadata is damaged; train the model again")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise BadInputError(f"model {path}: tensor {bad[0]} holds NaN or inf; train the model again")
    model = build_model(hp["n_pages"], hp["dim"], hp["hidden"], hp["page_dim"], hp["objective"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise BadInputError(f"model {path}: its tensors do not match its config "
                            f"({str(exc).splitlines()[-1].strip()[:120]})") from None
    return model, vocab, hp


def torch_threads() -> int:
    """``GPUFORGE_FRAUD_TORCH_THREADS`` (default 1), checked (README: environment switches)."""
    import os

    raw = os.environ.get("GPUFORGE_FRAUD_TORCH_THREADS", "1")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise UsageError(f"GPUFORGE_FRAUD_TORCH_THREADS={raw!r}: use a whole number >= 1 (default 1)")
    return n


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
            mask = torch.arange(P.shape[1], device=P.device)[None, :] < lengths[:, None]
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


def train_and_embed(df, **kwargs):
    """Returns (session ids, Z (n, dim) float32, info). Trains unless ``reuse`` (a model
    file) is given; the model runs on the torch ``device`` (default CPU). Keywords: those
    of :func:`_train_and_embed`.

    torch runs with ``GPUFORGE_FRAUD_TORCH_THREADS`` intra-op threads (default 1: on a
    small shared CPU, OpenMP threads spin-waiting for each other made a training step
    ~40x slower than one thread, measured on 2 busy cores) for this call only: the
    caller's thread count is restored afterwards, so the switch has no global effect."""
    import torch

    n = torch_threads()
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return _train_and_embed(df, **kwargs)
    finally:
        torch.set_num_threads(before)


def _train_and_embed(df, *, dim=64, epochs=3, objective="reconstruct", model_path: Path | None = None,
                     reuse: Path | None = None, max_len=48, max_train=20000, batch=256, seed=0, hidden=64,
                     page_dim=16, device=None):
    import numpy as np
    import torch

    if objective not in ("reconstruct", "next-event"):
        raise BadInputError(f"--objective must be reconstruct or next-event, got {objective!r}")
    device = torch.device("cpu") if device is None else torch.device(device)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    info: dict = {}
    if reuse is not None:
        model, vocab, hp = load_model(reuse)
        model.to(device)
        max_len = hp["max_len"]
        info.update(reused=str(reuse), **hp)
        sids, P, D, lengths, _ = sequences(df, vocab, max_len)
    else:
        sids, P, D, lengths, vocab = sequences(df, None, max_len)
        hp = dict(n_pages=len(vocab) + 2, dim=dim, hidden=hidden, page_dim=page_dim, objective=objective,
                  max_len=max_len)
        model = build_model(**{k: hp[k] for k in ("n_pages", "dim", "hidden", "page_dim", "objective")}).to(device)
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
                loss, ce, mse = model.loss(torch.from_numpy(P[b, :Lb]).to(device),
                                           torch.from_numpy(D[b, :Lb]).to(device),
                                           torch.from_numpy(lengths[b]).to(device))
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
            save_model(model_path, model, vocab, hp)
    model.eval()
    Z = np.empty((len(sids), hp["dim"]), np.float32)
    with torch.no_grad():
        order = np.argsort(lengths, kind="stable")  # batch similar lengths
        for s in range(0, len(order), 2048):
            b = order[s:s + 2048]
            Lb = int(lengths[b].max())
            z, _, _ = model.encode(torch.from_numpy(P[b, :Lb]).to(device), torch.from_numpy(D[b, :Lb]).to(device),
                                   torch.from_numpy(lengths[b]).to(device))
            Z[b] = z.cpu().numpy()
    return sids, Z, info
