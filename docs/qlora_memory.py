"""QLoRA step memory on a Llama-shaped base (TinyLlama-1.1B widths, 4 layers, random bf16
weights made here): the NF4 layer decoding W again in backward (now) against the plain
matmul that let autograd keep every decoded fp32 W (before 7bd2314; patched back in for
the comparison), and ``--nproc 2`` (FSDP2 over the NF4 codes), where rank 0's RSS is also
read just before and just after the base is sharded. Each case runs in a fresh process;
peak RSS is that process's (rank 0's) ``ru_maxrss``.

Usage: ``python -P docs/qlora_memory.py [WORK_FOLDER]``; one JSON line per case."""
from __future__ import annotations

import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from gpuforge.core.safepath import python_argv

REPO = Path(__file__).resolve().parents[1]


def case(work: Path, mode: str, nproc: int) -> None:
    from gpuforge.plugins.quantize import modules as M

    if mode == "plain":   # the code before 7bd2314: autograd keeps the decoded W
        M._DecodedAgainInBackward.apply = staticmethod(lambda x2, layer: x2 @ layer.dense_weight(x2.device).T)
    from gpuforge.core.memory import proc_kb
    from gpuforge.plugins.finetune import distributed as D
    from gpuforge.plugins.finetune.api import train_adapter

    rss: dict[str, float] = {}
    shard = D.shard_frozen_base

    def measured_shard(backbone, world):
        gc.collect()
        rss["rss_before_shard_mib"] = round(proc_kb("/proc/self/status", "VmRSS") / 2**20, 1)
        out = shard(backbone, world)
        gc.collect()
        rss["rss_after_shard_mib"] = round(proc_kb("/proc/self/status", "VmRSS") / 2**20, 1)
        return out

    D.shard_frozen_base = measured_shard
    t = time.perf_counter()
    res = train_adapter(work / "llama4", work / "lm.jsonl", work / f"out-{mode}-{nproc}", force=True, qlora=True,
                        max_steps=2, batch_size=4, max_len=32, r=4, nproc=nproc, seed=0)
    print(json.dumps({"mode": mode, "nproc": nproc, "seconds": round(time.perf_counter() - t, 1),
                      "peak_rss_mib_rank0": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "final_loss": res["final_loss"], **rss, "qlora": res["qlora"]}), flush=True)


def main() -> None:
    if sys.argv[1:2] == ["--case"]:
        return case(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    work = Path(sys.argv[1] if len(sys.argv) > 1 else "qlora-memory")
    if not (work / "llama4").exists():
        from gpuforge.plugins.quantize.synthetic import SHAPES, make_llama

        make_llama(work / "llama4", SHAPES["1.1B"].with_layers(4))
    rows = [json.loads(l) for l in (REPO / "plugins/finetune/data/negsent_train.jsonl").read_text().splitlines()[:32]]
    (work / "lm.jsonl").write_text("".join(json.dumps({"prompt": r["text"] + " Sentiment:", "response": " " + r["label"]})
                                           + "\n" for r in rows))
    for mode, nproc in (("plain", 1), ("decode", 1), ("decode", 2)):
        subprocess.run([*python_argv(), __file__, "--case", str(work), mode, str(nproc)], check=True,
                       stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
