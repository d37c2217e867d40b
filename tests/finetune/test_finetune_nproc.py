"""`finetune lora --nproc 2` (gloo, CPU): the two-process run equals the one-process run,
and nothing it starts listens outside loopback."""
from __future__ import annotations

import ipaddress
import json
import os
import threading
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

# optimizer named: 1 process would otherwise get torch's fused step (auto), 2 processes ours
OPTS = dict(max_steps=4, batch_size=8, r=4, alpha=8, max_len=32, dropout=0.0, seed=3, optimizer="adamw")


@pytest.fixture(scope="module")
def no_dropout_bert(tmp_path_factory) -> Path:
    """BERT's own dropout off too: with it on, ranks draw other masks than one process."""
    from tiny_models import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("models") / "bert-no-dropout", dropout=0.0)


def _tree(root: int) -> set[int]:
    pids = {root}
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                ppid = int(Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == root:
                pids.add(int(p))
    return pids


def _listening(pids: set[int]) -> set[str]:
    """Local addresses of the TCP sockets in LISTEN state that these processes hold."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            pass
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(f[1].split(":")[0])
                # /proc prints each 32-bit word of the address in host (little-endian) order
                addr = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(str(ipaddress.ip_address(addr)))
    return found


def _loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def test_two_processes_equal_one_and_listen_on_loopback_only(no_dropout_bert, small_data, tmp_path):
    """Rank 0 runs in this process (train_adapter, as the CLI would), rank 1 in the child
    it starts; a thread watches both for listening sockets meanwhile."""
    from gpuforge.plugins.finetune.api import train_adapter

    seen: set[str] = set()
    ranks_seen = [1]
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            pids = _tree(os.getpid())
            ranks_seen[0] = max(ranks_seen[0], len(pids))
            seen.update(_listening(pids))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    two = tmp_path / "two"
    try:
        res2 = train_adapter(no_dropout_bert, small_data["train"], two, nproc=2, **OPTS)
    finally:
        stop.set()
        watcher.join()
    assert ranks_seen[0] >= 2, "rank 1 never ran as a child process"
    # gloo's connections listen while the ranks train; all of them on loopback
    assert seen, "no listening socket observed: the check below would prove nothing"
    assert all(_loopback(a) for a in seen), seen
    assert not _tree(os.getpid()) - {os.getpid()}, "a rank outlived the command"

    one = tmp_path / "one"
    res1 = train_adapter(no_dropout_bert, small_data["train"], one, **OPTS)
    assert res2["nproc"] == 2 and res1["nproc"] == 1
    a, b = load_file(str(one / "adapter_model.safetensors")), load_file(str(two / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    # Summing two half-batch gradients instead of one full-batch gradient changes only the
    # float32 summation order: measured 8.7e-8 max difference on values up to 0.13.
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert diff <= 1e-6, diff
    ha, hb = load_file(str(one / "head.safetensors")), load_file(str(two / "head.safetensors"))
    assert max(float((ha[k] - hb[k]).abs().max()) for k in ha) <= 1e-6
    losses = [[json.loads(l)["loss"] for l in (d / "train_log.jsonl").read_text().splitlines()] for d in (one, two)]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    m = json.loads((two / "manifest.json").read_text())
    assert m["kernels"] == {"finetune.adamw_step": "numba-cpu"} and m["params"]["nproc"] == 2


def test_qlora_two_processes_shard_the_nf4_base_with_fsdp2_and_equal_one(no_dropout_bert, small_data, tmp_path):
    """--qlora --nproc 2: FSDP2 splits the NF4 codes over the ranks (each holds half),
    gathers a layer's codes for its forward and again for its backward; the adapter, the
    head, the losses and the evaluations (run on both ranks: a sharded forward is a
    collective) equal the one-process QLoRA run's. 64 rows in batches of 7: the tenth
    batch has one row, so rank 1 joins that step's collectives with a weight of 0."""
    from gpuforge.plugins.finetune.api import train_adapter

    opts = dict(OPTS, qlora=True, eval_data=str(small_data["test"]), eval_every=4, batch_size=7, max_steps=10)
    res2 = train_adapter(no_dropout_bert, small_data["train"], tmp_path / "two", nproc=2, **opts)
    res1 = train_adapter(no_dropout_bert, small_data["train"], tmp_path / "one", **opts)
    q = res2["qlora"]
    assert q["base_sharding"] == "fsdp2" and "base_sharding" not in res1["qlora"]
    assert q["nf4_code_bytes"] > 0 and q["nf4_code_bytes_this_rank"] * 2 == pytest.approx(q["nf4_code_bytes"], rel=1e-3)
    one, two = tmp_path / "one", tmp_path / "two"
    a, b = load_file(str(one / "adapter_model.safetensors")), load_file(str(two / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    logs = [[json.loads(l) for l in (d / "train_log.jsonl").read_text().splitlines()] for d in (one, two)]
    assert [e["loss"] for e in logs[0]] == pytest.approx([e["loss"] for e in logs[1]], abs=1e-5)
    evals = [[e[k] for e in log for k in e if k.startswith("eval_")] for log in logs]
    assert evals[0] and evals[0] == pytest.approx(evals[1], abs=1e-6)
    assert res2["eval_metric"] == pytest.approx(res1["eval_metric"], abs=1e-6)
