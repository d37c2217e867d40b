"""``fraud explain``: per-cluster risk, rules, narratives and plots.

Risk with labels: each cluster's fraud rate with a 95% Wilson lower bound and its lift
over the base rate. To keep the reported recall/precision honest, the rates are
estimated on a random half of the sessions ("investigated") and the flagged clusters
are scored on the other half ("held out"). A cluster is flagged risky when its Wilson
lower bound is >= ``--min-lower-bound`` (default 0.5). Noise (-1) counts as one group.

Risk without labels: the mean GLOSH outlier score of the cluster and how far its
feature means deviate from the population (mean |z|); nothing is flagged.

Rules: for each risky cluster, a depth-``--rule-depth`` decision tree separates the
cluster from the rest on the expert features; every node where the cluster is the
majority is a candidate rule (conjunction of thresholds) with precision (share of
sessions matching the rule that are in the cluster), recall (cover: share of the
cluster matched) and support. Only rules with precision >= 0.8 and cover >= 0.3 are
reported; while none exists the tree is deepened (up to 3 more levels). Reported rules
are simplified (conditions dropped while precision x cover does not fall) and ranked
by precision x cover. A cluster without such a rule gets none: its narrative says so
and report.json keeps the best candidate under ``best_rule_below_target``.
"""
from __future__ import annotations

import math

from gpuforge.core.errors import BadInputError

Z95 = 1.959963984540054


def wilson_lower(k, n, z=Z95):
    if n == 0:
        return 0.0
    p = k / n
    den = 1 + z * z / n
    centre = p + z * z / (2 * n)
    rad = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - rad) / den)


RULE_MIN_PRECISION = 0.8
RULE_MIN_COVER = 0.3
RULE_EXTRA_DEPTH = 3
"""a cluster's trees start at ``--rule-depth`` and deepen by up to this many levels
until some rule meets the target (the 100k-session bot rings need depth 6)."""


def meets_target(rule) -> bool:
    return rule["precision"] >= RULE_MIN_PRECISION and rule["recall"] >= RULE_MIN_COVER


def _rank(rule):
    """Best first: precision x cover, then fewer conditions, then precision."""
    return (-rule["precision"] * rule["recall"], rule["conditions"], -rule["precision"])


def _rule_stats(X, y, conds, names, npos, depth):
    """conds: [(feature, op, threshold)], at most one '<=' and one '>' per feature."""
    import numpy as np

    mask = np.ones(len(X), bool)
    for f, op, thr in conds:
        mask &= (X[:, f] <= thr) if op == "<=" else (X[:, f] > thr)
    sup = int(mask.sum())
    tp = int((mask & (y == 1)).sum())
    return {"rule": _rule_text(conds, names), "precision": tp / sup if sup else 0.0, "recall": tp / max(npos, 1),
            "support": sup, "matched": tp, "conditions": len(conds), "tree_depth": depth, "_conds": conds}


def _rule_text(conds, names):
    parts = []
    for f in dict.fromkeys(f for f, _, _ in conds):  # first-use order
        lo = [t for g, op, t in conds if g == f and op == ">"]
        hi = [t for g, op, t in conds if g == f and op == "<="]
        if lo and hi:
            parts.append(f"{lo[0]:.4g} < {names[f]} <= {hi[0]:.4g}")
        elif lo:
            parts.append(f"{names[f]} > {lo[0]:.4g}")
        else:
            parts.append(f"{names[f]} <= {hi[0]:.4g}")
    return " and ".join(parts) or "(all)"


def tree_rules(X, y, names, depth=3, min_leaf=10, seed=0):
    """Candidate rules for the positive class from one decision tree: every node, leaf or
    not, where the class is the majority, as the conjunction of the splits above it
    (repeated splits on a feature merged into one interval). Best first (``_rank``)."""
    import numpy as np
    from sklearn.tree import DecisionTreeClassifier

    clf = DecisionTreeClassifier(max_depth=depth, min_samples_leaf=min_leaf, random_state=seed)
    clf.fit(X, y)
    t = clf.tree_
    path = clf.decision_path(X).tocsc()
    sup = np.asarray(path.sum(0)).ravel()
    tp = np.asarray(path[y == 1].sum(0)).ravel()
    npos = int(y.sum())
    conds = {0: []}
    rules = []
    for node in range(t.node_count):  # parents come before their children
        left, right = t.children_left[node], t.children_right[node]
        if left != -1:
            f, thr = int(t.feature[node]), float(t.threshold[node])
            conds[left] = _tighten(conds[node], f, "<=", thr)
            conds[right] = _tighten(conds[node], f, ">", thr)
        if node and sup[node] and tp[node] / sup[node] > 0.5:
            rules.append(_rule_stats(X, y, conds[node], names, npos, depth))
    rules.sort(key=_rank)
    return rules


def _tighten(conds, f, op, thr):
    """conds and (f op thr), keeping one bound per feature and side (the tighter one)."""
    out = []
    for g, o, t in conds:
        if g == f and o == op:
            thr = min(thr, t) if op == "<=" else max(thr, t)
        else:
            out.append((g, o, t))
    return out + [(f, op, thr)]


def _simplify(X, y, rule, names, npos):
    """Drop conditions while the rule still meets the target and precision x cover does
    not fall (greedily, the drop that helps most first)."""
    while rule["conditions"] > 1:
        best = None
        for i in range(rule["conditions"]):
            c = rule["_conds"][:i] + rule["_conds"][i + 1:]
            r = _rule_stats(X, y, c, names, npos, rule["tree_depth"])
            if meets_target(r) and r["precision"] * r["recall"] >= rule["precision"] * rule["recall"] and (
                    best is None or _rank(r) < _rank(best)):
                best = r
        if best is None:
            break
        rule = best
    return rule


def search_rules(X, y, names, depth=3, min_leaf=10, seed=0):
    """Rules separating the positive class that reach precision >= RULE_MIN_PRECISION and
    cover >= RULE_MIN_COVER: trees of depth ``depth``, deepened (up to RULE_EXTRA_DEPTH
    levels) only while none does. Returns (rules meeting the target, simplified, best
    first; the best candidate overall, met or not, or None)."""
    npos = int(y.sum())
    cands: dict = {}
    for d in range(depth, depth + RULE_EXTRA_DEPTH + 1):
        for r in tree_rules(X, y, names, depth=d, min_leaf=min_leaf, seed=seed):
            cands.setdefault(r["rule"], r)
        if any(meets_target(r) for r in cands.values()):
            break
    if not cands:
        return [], None
    ok: dict = {}
    for r in cands.values():
        if meets_target(r):
            r = _simplify(X, y, r, names, npos)
            ok.setdefault(r["rule"], r)
    public = [{k: v for k, v in r.items() if k != "_conds"} for r in sorted(ok.values(), key=_rank)]
    best = min(cands.values(), key=_rank)
    return public, public[0] if public else {k: v for k, v in best.items() if k != "_conds"}


def pr_auc(y, score):
    from sklearn.metrics import average_precision_score

    if y.sum() == 0 or y.sum() == len(y):
        return float("nan")
    return float(average_precision_score(y, score))


def explain(clusters, features, labels=None, *, min_lower_bound=0.5, rule_depth=3, seed=0, out_dir=None,
            projection=None, title="fraud clusters"):
    """clusters: DataFrame(session_id, label, probability, outlier_score); features: DataFrame(session_id, ...);
    labels: DataFrame(session_id, is_fraud[, fraud_type]) or None. Returns (report dict, markdown)."""
    import numpy as np

    df = clusters.merge(features, on="session_id", how="inner")
    if len(df) == 0:
        from gpuforge.core.errors import BadInputError

        raise BadInputError("clusters and features share no session_id; pass files from the same run")
    feat_names = [c for c in features.columns if c != "session_id"]
    F = df[feat_names].to_numpy(np.float64)
    F = np.nan_to_num(F, nan=0.0, posinf=0.0, neginf=0.0)
    mu, sd = F.mean(0), F.std(0)
    sd[sd == 0] = 1
    Zf = (F - mu) / sd
    lab = df["label"].to_numpy()
    groups = sorted(set(lab.tolist()))
    has_labels = labels is not None
    rng = np.random.default_rng(seed)
    rep: dict = {"sessions": int(len(df)), "clusters": int(sum(g >= 0 for g in groups)),
                 "noise": int((lab == -1).sum()), "has_labels": has_labels}
    rows = []
    if has_labels:
        df = df.merge(labels, on="session_id", how="left")
        y = df["is_fraud"].fillna(0).to_numpy().astype(int)
        half = rng.random(len(df)) < 0.5  # investigated half
        base = y[half].mean() if half.any() else 0.0
        rep["base_rate"] = float(y.mean())
    for g in groups:
        m = lab == g
        r = {"cluster": int(g), "size": int(m.sum()), "share": float(m.mean()),
             "mean_outlier_score": float(np.nanmean(df["outlier_score"].to_numpy()[m])) if m.any() else 0.0,
             "deviation": float(np.abs(Zf[m].mean(0)).mean())}
        top = np.argsort(-np.abs(Zf[m].mean(0)))[:3]
        r["top_features"] = [(feat_names[i], float(Zf[m].mean(0)[i])) for i in top]
        if has_labels:
            mi = m & half
            k, n = int(y[mi].sum()), int(mi.sum())
            r.update(investigated=n, fraud_investigated=k, fraud_rate=k / n if n else 0.0,
                     wilson_lower=wilson_lower(k, n), lift=(k / n) / base if n and base > 0 else 0.0,
                     fraud_rate_all=float(y[m].mean()))
            if "fraud_type" in df.columns:
                vc = df.loc[m & (y == 1), "fraud_type"].value_counts()
                r["fraud_types"] = {str(a): int(b) for a, b in vc.items()}
            r["risky"] = bool(r["wilson_lower"] >= min_lower_bound)
        else:
            r["risky"] = False
        rows.append(r)
    if has_labels:
        rate = {r["cluster"]: r["fraud_rate"] for r in rows}
        score = np.array([rate[g] for g in lab])
        risky = {r["cluster"] for r in rows if r["risky"]}
        flag = np.isin(lab, list(risky))
        ho = ~half
        tp = int((flag & ho & (y == 1)).sum())
        rep["held_out"] = {
            "sessions": int(ho.sum()), "fraud": int((y[ho] == 1).sum()),
            "flagged": int((flag & ho).sum()),
            "recall": tp / max(int((y[ho] == 1).sum()), 1),
            "precision": tp / max(int((flag & ho).sum()), 1),
            "pr_auc_cluster_risk": pr_auc(y[ho], score[ho]),
        }
        rep["risky_clusters"] = sorted(risky)
    # rules for risky clusters (or, without labels, the 3 most outlying clusters)
    if has_labels:
        targets = [r for r in rows if r["risky"] and r["cluster"] >= 0]
    else:
        targets = sorted([r for r in rows if r["cluster"] >= 0], key=lambda r: -r["mean_outlier_score"])[:3]
    for r in targets:
        m = (lab == r["cluster"]).astype(int)
        rules, best = search_rules(F, m, feat_names, depth=rule_depth, min_leaf=max(3, r["size"] // 10), seed=seed)
        r["rules"] = rules[:3]  # only rules that meet the target
        r["top_rule_meets_target"] = bool(rules)
        if not rules:
            r["best_rule_below_target"] = best  # for reference only, not a rule (None: no candidate)
        r["narrative"] = narrative(r, has_labels, rep.get("base_rate"))
    if targets:
        ok = [r["top_rule_meets_target"] for r in targets]
        rep["rules_meeting_target"] = f"{sum(ok)}/{len(ok)}"
        rep["rule_target"] = {"min_precision": RULE_MIN_PRECISION, "min_cover": RULE_MIN_COVER}
    rep["cluster_table"] = rows
    md = markdown(rep, title)
    if out_dir is not None:
        rep["plots"] = plots(df, lab, rows, out_dir, projection, has_labels)
        md += "\n" + "\n".join(f"![{p}]({p})" for p in rep["plots"]) + "\n"
    return rep, md


def narrative(r, has_labels, base):
    parts = [f"Cluster {r['cluster']} holds {r['size']:,} sessions ({100 * r['share']:.2f}% of all)."]
    if has_labels:
        parts.append(f"Its fraud rate is {100 * r['fraud_rate']:.1f}% on the investigated half "
                     f"(95% Wilson lower bound {100 * r['wilson_lower']:.1f}%), {r['lift']:.1f}x the base rate "
                     f"of {100 * (base or 0):.2f}%.")
        if r.get("fraud_types"):
            kind, cnt = max(r["fraud_types"].items(), key=lambda kv: kv[1])
            parts.append(f"Most of its fraud is {kind.replace('_', ' ')} ({cnt} sessions).")
    feats = ", ".join(f"{n} {'high' if z > 0 else 'low'} ({z:+.1f} sd)" for n, z in r["top_features"])
    parts.append(f"It stands out by {feats}.")
    if r.get("rules"):
        best = r["rules"][0]
        parts.append(f"Rule: {best['rule']} -> precision {best['precision']:.2f}, covers "
                     f"{100 * best['recall']:.0f}% of the cluster ({best['support']:,} sessions match).")
    elif "rules" in r:
        parts.append(f"No rule meets precision >= {RULE_MIN_PRECISION} / coverage >= {RULE_MIN_COVER:.0%}.")
        cand = r.get("best_rule_below_target")
        if cand:
            parts.append(f"Best candidate (below target, not a rule to act on): {cand['rule']} -> precision "
                         f"{cand['precision']:.2f}, covers {100 * cand['recall']:.0f}% of the cluster.")
        else:
            parts.append("No tree node holds a majority of its sessions.")
    return " ".join(parts)


def markdown(rep, title):
    lines = [f"## {title}", "", f"{rep['sessions']:,} sessions, {rep['clusters']} clusters, {rep['noise']:,} noise."]
    if rep["has_labels"]:
        ho = rep["held_out"]
        lines += ["", f"Base fraud rate {100 * rep['base_rate']:.2f}%. Risky clusters (Wilson lower bound on the "
                  f"investigated half): {rep['risky_clusters']}. On the held-out half they flag {ho['flagged']:,} "
                  f"sessions: recall {ho['recall']:.3f}, precision {ho['precision']:.3f}; PR-AUC of the cluster "
                  f"risk score {ho['pr_auc_cluster_risk']:.3f}."]
    lines += ["", "| cluster | size | outlier | deviation | fraud rate | Wilson LB | lift | risky |",
              "|---|---|---|---|---|---|---|---|"]
    rows = sorted(rep["cluster_table"], key=lambda r: -(r.get("wilson_lower", r["mean_outlier_score"])))
    for r in rows[:25]:
        lines.append(f"| {r['cluster']} | {r['size']} | {r['mean_outlier_score']:.3f} | {r['deviation']:.2f} | "
                     f"{r.get('fraud_rate', float('nan')):.3f} | {r.get('wilson_lower', float('nan')):.3f} | "
                     f"{r.get('lift', float('nan')):.1f} | {'yes' if r['risky'] else ''} |")
    for r in rep["cluster_table"]:
        if r.get("narrative"):
            lines += ["", f"### cluster {r['cluster']}", "", r["narrative"]]
            if r["rules"]:
                lines += ["", "| rule | precision | recall (cover) | support |", "|---|---|---|---|"]
                lines += [f"| `{x['rule']}` | {x['precision']:.3f} | {x['recall']:.3f} | {x['support']} |"
                          for x in r["rules"]]
    return "\n".join(lines) + "\n"


def plots(df, lab, rows, out_dir, projection, has_labels):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = []
    if projection is not None:
        P = projection
        fig, ax = plt.subplots(figsize=(7, 6))
        big = [r["cluster"] for r in sorted(rows, key=lambda r: -r["size"]) if r["cluster"] >= 0][:12]
        other = ~np.isin(lab, big)
        ax.scatter(P[other, 0], P[other, 1], s=2, c="lightgrey", label="noise / small")
        cmap = plt.get_cmap("tab20")
        for i, g in enumerate(big):
            m = lab == g
            ax.scatter(P[m, 0], P[m, 1], s=3, color=cmap(i % 20), label=f"cluster {g}")
        ax.legend(markerscale=4, fontsize=7, loc="best")
        ax.set_title("sessions, 2-D PCA projection, coloured by cluster")
        fig.tight_layout()
        fig.savefig(out_dir / "projection.png", dpi=110)
        plt.close(fig)
        names.append("projection.png")
    fig, ax = plt.subplots(figsize=(8, 4))
    rs = sorted(rows, key=lambda r: -(r.get("fraud_rate", r["mean_outlier_score"])))[:30]
    vals = [r.get("fraud_rate", r["mean_outlier_score"]) for r in rs]
    colors = ["tab:red" if r["risky"] else "tab:blue" for r in rs]
    ax.bar(range(len(rs)), vals, color=colors)
    if has_labels:
        # the rounded rate can sit a hair below its rounded lower bound; matplotlib refuses negative errors
        below = np.maximum(np.array(vals) - np.array([r["wilson_lower"] for r in rs]), 0.0)
        ax.errorbar(range(len(rs)), vals, yerr=[below, np.zeros(len(rs))], fmt="none", ecolor="k", lw=0.8)
    ax.set_xticks(range(len(rs)))
    ax.set_xticklabels([str(r["cluster"]) for r in rs], rotation=90, fontsize=7)
    ax.set_ylabel("fraud rate (investigated half)" if has_labels else "mean GLOSH outlier score")
    ax.set_xlabel("cluster (red: flagged risky)")
    fig.tight_layout()
    fig.savefig(out_dir / "risk_per_cluster.png", dpi=110)
    plt.close(fig)
    names.append("risk_per_cluster.png")
    return names


def run_explain(run, clusters, features, labels, out, *, min_lower_bound=0.5, rule_depth=3) -> dict:
    """``fraud explain`` inside ``run`` (:class:`gpuforge.core.run.Run`): the report folder
    ``out`` (report.md, report.json, plots). Returns the report without the cluster table."""
    import pandas as pd

    from gpuforge.core.output import to_json
    from gpuforge.plugins.fraud.features import session_labels
    from gpuforge.plugins.fraud.pipeline import clustering_input
    from gpuforge.plugins.fraud.tables import read_table

    run.input(clusters, "cluster table")
    run.input(features, "feature table")
    if labels:
        run.input(labels, "label table")
    dst = run.output(out, kind="dir")
    cl = read_table(clusters, "cluster table")
    ft = read_table(features, "feature table")
    for name, df, need in (("cluster table", cl, ("session_id", "label", "outlier_score")),
                           ("feature table", ft, ("session_id",))):
        miss = [c for c in need if c not in df.columns]
        if miss:
            raise BadInputError(f"{name}: column(s) {', '.join(miss)} missing; pass the outputs of `fraud cluster` "
                                "and `fraud features`")
    bad = [c for c in ft.columns if c != "session_id" and not pd.api.types.is_numeric_dtype(ft[c])]
    if bad or ft["session_id"].duplicated().any():
        raise BadInputError(f"feature table {features}: " + (f"non-numeric column(s) {', '.join(map(str, bad[:5]))}"
                            if bad else "repeated session_id") + "; pass the output of `fraud features`")
    lab = None
    if labels:
        lab = session_labels(read_table(labels, "label table"))
        if lab is None:
            raise BadInputError(f"{labels} has no is_fraud or label column")
    merged = cl[["session_id"]].merge(ft, on="session_id", how="inner")
    tmp = dst.tmp
    proj = clustering_input(merged[[c for c in ft.columns]], None, dims=2) if len(merged) else None
    ordered = cl.merge(merged[["session_id"]], on="session_id", how="inner")
    with run.timed("explain"):
        rep, md = explain(ordered, ft, lab, min_lower_bound=min_lower_bound, rule_depth=rule_depth,
                          seed=run.seed_or(0), out_dir=tmp, projection=proj)
    (tmp / "report.md").write_text(md)
    (tmp / "report.json").write_text(to_json(rep) + "\n")
    return {k: v for k, v in rep.items() if k != "cluster_table"}
