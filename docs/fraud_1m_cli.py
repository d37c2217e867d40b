"""Issue 16's done-when on the command line: ``fraud cluster FOLDER --mode approx`` in one
process and with ``--cluster local:2``, one after the other, each a fresh process whose
peak RSS ``core.peakrss`` measures; then every output column compared.

Usage: ``python -P docs/fraud_1m_cli.py FEATURES_FOLDER [WORK_FOLDER]`` (the folder from
``gpuforge fraud simulate --sessions 1000000 --out clicks`` and ``gpuforge fraud features
clicks --out feats``). Prints one JSON line per run and the comparison."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from gpuforge.core.peakrss import run_measured
from gpuforge.core.safepath import python_argv


def main() -> None:
    data = Path(sys.argv[1])
    work = Path(sys.argv[2] if len(sys.argv) > 2 else "fraud-1m-cli")
    work.mkdir(parents=True, exist_ok=True)
    outs = {}
    for name, pre in (("one process", []), ("local:2", ["--cluster", "local:2"])):
        out = work / name.replace(" ", "_").replace(":", "")
        shutil.rmtree(out, ignore_errors=True)
        with open(f"{out}.json", "w") as fh:
            r = run_measured([*python_argv(), "-m", "gpuforge.cli", *pre, "--json", "fraud", "cluster", str(data),
                              "--out", str(out), "--mode", "approx", "--min-cluster-size", "50"], stdout=fh)
        res = json.loads(Path(f"{out}.json").read_text())
        print(json.dumps({"run": name, **r, "timings_s": res.get("timings_s"), "mst_weight": res.get("mst_weight"),
                          "bytes_moved": res.get("bytes_moved")}), flush=True)
        outs[name] = pd.read_parquet(out)   # the folder is one table (its manifest is _manifest.json)
    a, b = outs["one process"], outs["local:2"]
    print(json.dumps({"rows": len(a), "equal": {c: bool(a[c].equals(b[c])) for c in a.columns}}))


if __name__ == "__main__":
    main()
