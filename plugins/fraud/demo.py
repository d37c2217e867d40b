"""``gpuforge demo`` section: simulate a small labelled click stream, run the whole
pipeline (features, Bi-LSTM embedding, HDBSCAN, explain) and show the report."""
from __future__ import annotations

import time
from pathlib import Path


def run(ctx, out_dir: Path) -> str:
    from gpuforge.plugins.fraud.pipeline import run_pipeline
    from gpuforge.plugins.fraud.simulate import simulate

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sessions = 3000 if getattr(ctx, "quick", False) else 6000
    t0 = time.perf_counter()
    clicks = simulate(sessions, 0.03, seed=7)
    clicks_path = out_dir / "fraud-clicks.parquet"
    clicks.to_parquet(clicks_path, index=False)
    t_sim = time.perf_counter() - t0
    t0 = time.perf_counter()
    from gpuforge.core.run import Run, execute, resolve_device

    # the pipeline as its command runs it: outputs through the runtime, manifest included
    run_ = Run("fraud pipeline", device=resolve_device("cpu"), backend=None, seed=0, json=False, force=True,
               threads=None, params={"clicks": str(clicks_path), "dim": 16, "epochs": 1})
    res, md = execute(run_, lambda r: run_pipeline(r, clicks_path, out_dir / "fraud-report", dim=16, epochs=1,
                                                   max_train=3000, min_cluster_size=15, min_samples=10,
                                                   mode="approx"))
    t_pipe = time.perf_counter() - t0
    # the report's images live in fraud-report/: link them relative to the demo page
    md = md.replace("](projection.png)", "](fraud-report/projection.png)").replace(
        "](risk_per_cluster.png)", "](fraud-report/risk_per_cluster.png)")
    md = md.replace("# fraud pipeline report", "### fraud pipeline report")
    head = (f"`fraud simulate --sessions {sessions} --fraud-rate 0.03 --seed 7` ({len(clicks):,} events, "
            f"{t_sim:.1f} s), then `fraud pipeline --dim 16 --epochs 1 --min-cluster-size 15 --mode approx` "
            f"({t_pipe:.1f} s; outputs in `fraud-report/`). Risk is estimated on a random half of the sessions "
            "and scored on the other half.\n\n")
    return head + md
