"""A click-stream generator with labelled fraud types (documented in README.md).

One row per event: ``session_id, user_id, timestamp`` (seconds since the start of a
30-day window), ``event`` (page name), ``device, ip, amount`` and the labels
``label`` (normal | bot_ring | account_takeover | card_testing) and ``is_fraud`` (0/1),
which no unsupervised step reads.

- Ordinary sessions: users arrive as a Poisson process with a diurnal rate (few at
  night); the first page is drawn from an entry distribution, the next from a fixed
  sparse Markov matrix over ~40 pages (browse heavy); session length 2 + Poisson(9);
  dwell times lognormal (median ~20 s); a user has 1-2 devices and 1-3 IPs; checkouts
  end in a payment with a lognormal amount (median ~$45) in ~15% of sessions.
- Bot rings: rings of 5-20 fresh accounts sharing a pool of 2-3 devices and 3-5 IPs;
  each ring has one scripted page path and one period (2-8 s): inter-event times are
  the period (or 2x/3x it) with 2% jitter; a ring's sessions start in synchronized
  bursts (within 2 minutes of a burst time), biased to the night.
- Account takeover: an existing user's account from a NEW device and IP: login,
  credential / address / email changes, then a fast checkout (dwell ~3 s) with a high
  amount; biased to the night.
- Card testing: one device, 8-30 payment attempts of $0.5-$5, most failing
  (``payment_failed``), a few seconds apart.

Fraud sessions are ``fraud_rate`` of all sessions: 40% bot rings, 30% account takeover,
30% card testing.
"""
from __future__ import annotations

PAGES = [
    "home", "search", "search_results", "category_electronics", "category_fashion", "category_home",
    "category_toys", "category_sports", "category_books", "category_beauty", "product_view",
    "product_reviews", "product_images", "seller_page", "deals", "recommendations", "wishlist",
    "add_to_cart", "cart", "remove_from_cart", "checkout", "shipping_options", "payment",
    "payment_failed", "order_confirm", "order_status", "returns", "help", "contact", "login",
    "logout", "register", "account", "change_password", "change_address", "change_email",
    "add_payment_method", "messages", "notifications", "watchlist",
]

GROUPS = {
    "browse": {"home", "category_electronics", "category_fashion", "category_home", "category_toys",
               "category_sports", "category_books", "category_beauty", "deals", "recommendations",
               "seller_page"},
    "search": {"search", "search_results"},
    "product": {"product_view", "product_reviews", "product_images", "wishlist", "watchlist"},
    "cart": {"add_to_cart", "cart", "remove_from_cart"},
    "checkout": {"checkout", "shipping_options", "order_confirm"},
    "payment": {"payment", "payment_failed", "add_payment_method"},
    "account_change": {"change_password", "change_address", "change_email"},
    "auth": {"login", "logout", "register"},
    "service": {"order_status", "returns", "help", "contact", "account", "messages", "notifications"},
}

DAY = 86400.0
WINDOW_DAYS = 30


def _markov(rng, V):

    idx = {p: i for i, p in enumerate(PAGES)}
    P = rng.gamma(0.3, size=(V, V))
    P[:, [idx[p] for p in ("payment_failed", "change_password", "change_email", "change_address",
                            "register", "add_payment_method")]] *= 0.02
    for a, b, w in [("home", "search", 3), ("search", "search_results", 6), ("search_results", "product_view", 6),
                    ("product_view", "product_images", 2), ("product_view", "add_to_cart", 1.5),
                    ("product_view", "search_results", 3), ("add_to_cart", "cart", 4), ("cart", "checkout", 2),
                    ("checkout", "shipping_options", 4), ("shipping_options", "payment", 4),
                    ("payment", "order_confirm", 8)]:
        P[idx[a], idx[b]] += w
    for i in range(V):
        P[i, i] *= 0.2
    return P / P.sum(1, keepdims=True)


def _diurnal_times(rng, n, night_bias=False):
    """Start times over the window: a day index and an hour drawn from a diurnal profile."""
    import numpy as np

    hours = np.arange(24)
    w = 0.25 + np.exp(-0.5 * ((hours - 14) / 4.0) ** 2) + 0.6 * np.exp(-0.5 * ((hours - 20) / 2.0) ** 2)
    if night_bias:
        w = 0.3 + 2.0 * ((hours >= 0) & (hours < 6))
    w = w / w.sum()
    h = rng.choice(24, size=n, p=w)
    day = rng.integers(0, WINDOW_DAYS, size=n)
    return day * DAY + h * 3600.0 + rng.uniform(0, 3600.0, size=n)


def simulate(sessions: int, fraud_rate: float = 0.02, seed: int = 0):
    import numpy as np
    import pandas as pd

    if sessions < 1:
        raise ValueError("sessions must be >= 1")
    if not 0.0 <= fraud_rate < 1.0:
        raise ValueError("fraud_rate must be in [0, 1)")
    rng = np.random.default_rng(seed)
    V = len(PAGES)
    pid = {p: i for i, p in enumerate(PAGES)}
    P = _markov(np.random.default_rng(1234), V)  # the site is the same for every seed
    entry = np.zeros(V)
    for p, w in [("home", 5), ("search", 3), ("product_view", 2), ("deals", 1), ("category_electronics", 1),
                 ("category_fashion", 1), ("login", 1), ("order_status", 0.5)]:
        entry[pid[p]] = w
    entry /= entry.sum()

    n_fraud = int(round(sessions * fraud_rate))
    n_bot = int(round(n_fraud * 0.4))
    n_ato = int(round(n_fraud * 0.3))
    n_card = n_fraud - n_bot - n_ato
    n_norm = sessions - n_fraud

    n_users = max(1, n_norm // 3)
    user_devices = [[f"d{u}_{j}" for j in range(1 + (rng.random() < 0.35))] for u in range(n_users)]
    user_ips = [[f"ip{u}_{j}" for j in range(1 + rng.poisson(0.6))] for u in range(n_users)]

    rows_s, rows_u, rows_t, rows_e, rows_d, rows_ip, rows_a, rows_l = ([] for _ in range(8))
    sid = 0

    def emit(user, t0, events, dts, device, ip, amounts, label):
        nonlocal sid
        ts = t0 + np.concatenate(([0.0], np.cumsum(dts)))[: len(events)]
        k = len(events)
        rows_s.append(np.full(k, sid))
        rows_u.append([user] * k)
        rows_t.append(ts)
        rows_e.append(events)
        rows_d.append([device] * k)
        rows_ip.append([ip] * k)
        rows_a.append(amounts)
        rows_l.append([label] * k)
        sid += 1

    # ordinary sessions
    starts = _diurnal_times(rng, n_norm)
    users = rng.integers(0, n_users, size=n_norm)
    lengths = 2 + rng.poisson(9, size=n_norm)
    Lmax = int(lengths.max()) if n_norm else 0
    cum = np.cumsum(P, axis=1)
    cum[:, -1] = 1.0
    walk = np.empty((n_norm, max(Lmax, 1)), np.int64)
    if n_norm:
        walk[:, 0] = rng.choice(V, size=n_norm, p=entry)
        for j in range(1, Lmax):  # all sessions step together through the Markov chain
            u_ = rng.random(n_norm)
            walk[:, j] = (cum[walk[:, j - 1]] < u_[:, None]).sum(1)
    walk = np.minimum(walk, V - 1)
    buys = rng.random(n_norm) < 0.15
    tail = np.array([pid["cart"], pid["checkout"], pid["shipping_options"], pid["payment"], pid["order_confirm"]])
    for i in range(n_norm):
        ev = walk[i, : int(lengths[i])]
        amt = np.zeros(len(ev))
        if buys[i]:  # a purchase at the end
            ev = np.concatenate((ev, tail))
            amt = np.concatenate((amt, [0, 0, 0, rng.lognormal(3.8, 0.9), 0]))
        dts = rng.lognormal(3.0, 1.0, size=len(ev) - 1)
        u = int(users[i])
        emit(f"u{u}", starts[i], [PAGES[e] for e in ev], dts, user_devices[u][rng.integers(len(user_devices[u]))],
             user_ips[u][rng.integers(len(user_ips[u]))], amt, "normal")

    # bot rings
    made = 0
    ring = 0
    while made < n_bot:
        size = int(min(n_bot - made, rng.integers(30, 120)))
        accounts = [f"bot{ring}_{j}" for j in range(int(rng.integers(5, 21)))]
        devices = [f"botdev{ring}_{j}" for j in range(int(rng.integers(2, 4)))]
        ips = [f"botip{ring}_{j}" for j in range(int(rng.integers(3, 6)))]
        period = rng.uniform(2.0, 8.0)
        script = [pid["home"], pid["search"], pid["search_results"], pid["product_view"]]
        script += list(rng.choice([pid["product_view"], pid["add_to_cart"], pid["wishlist"], pid["seller_page"],
                                   pid["watchlist"]], size=int(rng.integers(2, 6))))
        script += [pid["cart"], pid["checkout"], pid["payment"], pid["order_confirm"]]
        bursts = _diurnal_times(rng, max(1, size // 15), night_bias=True)
        for j in range(size):
            reps = int(rng.integers(1, 3))
            ev = script * reps
            mult = rng.choice([1.0, 2.0, 3.0], size=len(ev) - 1, p=[0.7, 0.2, 0.1])
            dts = period * mult * (1 + rng.normal(0, 0.02, size=len(ev) - 1))
            amt = np.array([rng.uniform(20, 60) if e == pid["payment"] else 0.0 for e in ev])
            t0 = bursts[j % len(bursts)] + rng.uniform(0, 120)
            emit(accounts[j % len(accounts)], t0, [PAGES[e] for e in ev], dts, devices[rng.integers(len(devices))],
                 ips[rng.integers(len(ips))], amt, "bot_ring")
        made += size
        ring += 1

    # account takeover
    ato_users = rng.integers(0, n_users, size=n_ato)
    ato_starts = _diurnal_times(rng, n_ato, night_bias=True)
    for i in range(n_ato):
        ev = [pid["login"]]
        if rng.random() < 0.3:
            ev = [pid["login"], pid["login"]]
        ev += list(rng.choice([pid["change_password"], pid["change_address"], pid["change_email"],
                               pid["add_payment_method"]], size=int(rng.integers(1, 4)), replace=False))
        ev += [pid["search"], pid["product_view"], pid["add_to_cart"], pid["checkout"], pid["payment"],
               pid["order_confirm"]][int(rng.integers(0, 2)):]
        dts = rng.lognormal(1.1, 0.5, size=len(ev) - 1)
        amt = np.array([rng.lognormal(6.0, 0.5) if e == pid["payment"] else 0.0 for e in ev])
        emit(f"u{int(ato_users[i])}", ato_starts[i], [PAGES[e] for e in ev], dts, f"atodev{i}", f"atoip{i}", amt,
             "account_takeover")

    # card testing
    card_starts = _diurnal_times(rng, n_card, night_bias=rng.random() < 0.5)
    for i in range(n_card):
        tries = int(rng.integers(8, 31))
        ev = [pid["product_view"], pid["add_to_cart"], pid["checkout"]]
        amt = [0.0, 0.0, 0.0]
        for _ in range(tries):
            ok = rng.random() < 0.15
            ev.append(pid["payment"] if ok else pid["payment_failed"])
            amt.append(round(float(rng.uniform(0.5, 5.0)), 2))
        dts = rng.lognormal(1.3, 0.4, size=len(ev) - 1)
        emit(f"card{i}", card_starts[i], [PAGES[e] for e in ev], dts, f"carddev{i % max(1, n_card // 4)}",
             f"cardip{i}", np.asarray(amt), "card_testing")

    df = pd.DataFrame({
        "session_id": np.concatenate(rows_s).astype(np.int64),
        "user_id": np.concatenate([np.asarray(x, dtype=object) for x in rows_u]).astype(str),
        "timestamp": np.concatenate(rows_t).astype(np.float64),
        "event": np.concatenate([np.asarray(x, dtype=object) for x in rows_e]).astype(str),
        "device": np.concatenate([np.asarray(x, dtype=object) for x in rows_d]).astype(str),
        "ip": np.concatenate([np.asarray(x, dtype=object) for x in rows_ip]).astype(str),
        "amount": np.concatenate(rows_a).astype(np.float64),
        "label": np.concatenate([np.asarray(x, dtype=object) for x in rows_l]).astype(str),
    })
    df["is_fraud"] = (df["label"] != "normal").astype(np.int8)
    # shuffle session ids so that fraud is not at the end, keep events in time order per session
    perm = rng.permutation(sid)
    df["session_id"] = perm[df["session_id"].to_numpy()]
    df = df.sort_values(["session_id", "timestamp"], kind="stable").reset_index(drop=True)
    return df


BYTES_PER_SESSION = 10_000
"""Peak memory of :func:`simulate` per session: 7.75 kB measured at 50k sessions (about
12 events each; the frame itself holds 1.2 kB), plus a quarter for the table writer."""


def check_size(sessions: int) -> None:
    """Refuse (exit 3) before any work a ``--sessions`` whose click table cannot fit in the
    memory this process may still use."""
    from gpuforge.core.errors import BadInputError
    from gpuforge.core.memory import available_memory

    need = sessions * BYTES_PER_SESSION
    avail = available_memory()
    if avail is not None and need > avail:
        fit = max(1, avail // BYTES_PER_SESSION)
        raise BadInputError(f"--sessions {sessions:,} needs about {need / 2**30:,.1f} GiB of memory and "
                            f"{avail / 2**30:.1f} GiB is available; use at most --sessions {fit:,} here")
