"""``finetune lora --nproc N``: data-parallel training in N local processes
(torch.distributed, gloo, on the CPU).

The command's own process is rank 0: it declared the outputs, writes the checkpoints and
the adapter, and shows the progress. It starts ranks 1..N-1 itself (``python -m
gpuforge.plugins.finetune.distributed SPEC``), not through torchrun, whose agent listens
on every interface. Nothing listens outside loopback: the ranks meet through a
``FileStore`` in a private temporary folder (no socket at all), and gloo's connections
between them bind 127.0.0.1 (``GLOO_SOCKET_IFNAME=lo``).

Every rank builds the same session (model, LoRA init, optimizer state, resumed state)
from the same seed. Each step, every rank computes the loss of its contiguous share of
the batch, divided by the whole batch's count, and backpropagates; the flat gradient
buffer the fused AdamW reads is summed over the ranks (one all-reduce, DDP's algorithm
without its module wrapper: LoRA adapters are small and already sit in one buffer), then
each rank takes the same optimizer step, so the adapters stay identical. The sum equals
the one-process gradient up to float32 summation order (tested). Dropout draws from
torch's generator reseeded per (seed, step, rank), so ranks draw different masks and a
resumed run draws the same ones as an uninterrupted run.

A rank that dies ends the others: the parent sees the collective fail (gloo notices the
closed connection) and terminates the remaining ranks; ranks die with the parent
(``PR_SET_PDEATHSIG``) and run in their own session, so a terminal's Ctrl-C reaches only
the parent, which cleans up.

With ``--qlora`` the frozen NF4 base is sharded with FSDP2 (``fully_shard``,
:func:`shard_frozen_base`): each NF4 layer's packed codes (4 of its 4.127 bits per
weight) and bias become a frozen parameter that FSDP2 splits over the ranks; a layer's
codes are all-gathered before its forward, freed after it, and gathered again in the
backward pass (the layer decodes W again there instead of keeping it). The block scales
(0.127 bits per weight) stay on every rank, and so do the LoRA adapters, the head,
norms and other unquantized tensors (passed to FSDP2 as ignored parameters, so the
adapter gradients are still summed by the one all-reduce above). Every rank still
quantizes the whole base while it loads and shards it when training starts, so the
peak at load is one whole NF4 base per rank; the steady state holds 1/N of the codes.
A sharded forward is a collective: evaluations during and after training run on every
rank (rank 0 reports them).
"""
from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

from gpuforge.core.errors import GpuforgeError, UsageError

MODULE = "gpuforge.plugins.finetune.distributed"
LOOPBACK_IFNAME = "lo"
START_TIMEOUT_S = 600.0
"""How long rank 0 waits for the other ranks to load the model and report ready."""


class RankFailed(GpuforgeError):
    """Another rank exited with an error; its last stderr line says why."""


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGKILL when the parent goes (Linux prctl)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except OSError:  # not Linux: the collective's failure still ends the rank
        pass


def rank_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one rank's dropout masks at one step."""
    return (seed * 1_000_003 + step) * 4099 + rank


@contextmanager
def _loopback_gloo() -> Iterator[None]:
    old = os.environ.get("GLOO_SOCKET_IFNAME")
    os.environ["GLOO_SOCKET_IFNAME"] = LOOPBACK_IFNAME
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("GLOO_SOCKET_IFNAME", None)
        else:
            os.environ["GLOO_SOCKET_IFNAME"] = old


def _init(store_path: Path, rank: int, world: int) -> None:
    import torch.distributed as dist

    with _loopback_gloo():
        store = dist.FileStore(str(store_path), world)
        dist.init_process_group("gloo", store=store, rank=rank, world_size=world)


class Ranks:
    """Ranks 1..N-1 of one command, started by rank 0 (this process)."""

    def __init__(self, args, resume_file: Path | None, backend: str | None):
        from gpuforge.core.safepath import python_argv

        self.world = args.nproc
        self.tmp = Path(tempfile.mkdtemp(prefix="gpuforge-nproc-"))
        os.chmod(self.tmp, 0o700)  # the FileStore: only this user's processes join
        self.store = self.tmp / "store"
        threads = max(1, (os.cpu_count() or 1) // self.world)
        spec = {"args": asdict(args), "resume": str(resume_file) if resume_file else None, "world": self.world,
                "store": str(self.store), "ready": str(self.tmp), "backend": backend, "threads": threads}
        env = {**os.environ, "GLOO_SOCKET_IFNAME": LOOPBACK_IFNAME}
        self.procs: list[tuple[int, subprocess.Popen, Path]] = []
        for rank in range(1, self.world):
            log = self.tmp / f"rank{rank}.log"
            with open(log, "w") as fh:
                proc = subprocess.Popen([*python_argv(), "-m", MODULE, json.dumps({**spec, "rank": rank})], env=env,
                                        stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                        start_new_session=True, preexec_fn=_die_with_parent)
            self.procs.append((rank, proc, log))

    def _check_alive(self) -> None:
        for rank, proc, log in self.procs:
            code = proc.poll()
            if code not in (None, 0):
                raise RankFailed(f"--nproc: rank {rank} exited with status {code}: {_last_line(log)}")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all((self.tmp / f"ready{rank}").exists() for rank, _, _ in self.procs):
            self._check_alive()
            if time.monotonic() > deadline:
                raise RankFailed(f"--nproc: the other ranks did not start within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.05)

    def fit(self, session, save, bar) -> None:
        """Rank 0's share of the training; the other ranks run theirs in their processes."""
        import torch.distributed as dist

        self.wait_ready()
        _init(self.store, 0, self.world)
        try:
            session.fit(rank=0, world=self.world, save=save, bar=bar)
        except RuntimeError as exc:  # a collective failed: say which rank went, if one did
            time.sleep(0.5)
            self._check_alive()
            raise RankFailed(f"--nproc: a collective failed ({str(exc).splitlines()[0]})") from None
        finally:
            dist.destroy_process_group()
        for rank, proc, log in self.procs:
            if proc.wait(timeout=120) != 0:
                raise RankFailed(f"--nproc: rank {rank} exited with status {proc.returncode}: {_last_line(log)}")

    def close(self) -> None:
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc, _ in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)


@contextmanager
def ranks(args, resume_file: Path | None, backend: str | None) -> Iterator[Ranks]:
    """Start ranks 1..N-1 now (they load the model while this process does), stop them on
    the way out, whatever happened."""
    if args.optimizer == "torch-adamw":
        raise UsageError("--nproc needs --optimizer adamw or adamw-8bit (their flat gradient buffer is what the "
                         "ranks sum)")
    r = Ranks(args, resume_file, backend)
    try:
        yield r
    finally:
        r.close()


def _last_line(log: Path) -> str:
    try:
        lines = [l for l in log.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return "(no output)"
    return lines[-1] if lines else "(no output)"


def shard_frozen_base(backbone, world: int) -> dict[str, Any]:
    """FSDP2 over the NF4 layers of ``backbone`` (see the module's docstring); the process
    group is up. Returns what this rank holds of the codes."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from gpuforge.plugins.finetune.qlora import NF4Embedding, NF4Linear

    mesh = init_device_mesh("cpu", (world,))
    sharded: set[int] = set()
    full = mine = 0
    for mod in backbone.modules():
        if isinstance(mod, (NF4Linear, NF4Embedding)):
            # FSDP2 shards parameters, not buffers: the codes become a frozen parameter, in
            # torch-owned storage (FSDP2 frees gathered storage by resizing it; NumPy's can't be)
            mod.packed = torch.nn.Parameter(mod._buffers.pop("packed").clone(), requires_grad=False)
            if getattr(mod, "bias", None) is not None:
                mod.bias = torch.nn.Parameter(mod.bias.detach().clone(), requires_grad=False)
            full += mod.packed.numel()
            fully_shard(mod, mesh=mesh)
            mine += mod.packed.to_local().numel()
            sharded.update(id(p) for p in mod.parameters())
    # the root: without it every layer would be its own root, and a root keeps its
    # parameters gathered from the forward to the backward pass
    fully_shard(backbone, mesh=mesh, ignored_params={p for p in backbone.parameters() if id(p) not in sharded})
    return {"base_sharding": "fsdp2", "nf4_code_bytes": int(full), "nf4_code_bytes_this_rank": int(mine)}


def worker(spec: dict[str, Any]) -> None:
    """Rank ``spec["rank"]``: the same session as rank 0, its share of every batch."""
    import torch
    import torch.distributed as dist

    from gpuforge.core.run import Device, Run, execute
    from gpuforge.plugins.finetune import checkpoint as C
    from gpuforge.plugins.finetune.train import Session, TrainArgs

    args = TrainArgs(**spec["args"])
    rank, world = int(spec["rank"]), int(spec["world"])
    run = Run(f"finetune lora (rank {rank})", device=Device("cpu"), backend=spec["backend"], seed=args.seed,
              json=False, force=False, threads=spec["threads"], params={})

    def body(r: Run) -> None:
        state = C.load(Path(spec["resume"])) if spec["resume"] else None
        s = Session(args, torch.device("cpu"), state)
        Path(spec["ready"], f"ready{rank}").touch()
        _init(Path(spec["store"]), rank, world)
        try:
            s.fit(rank=rank, world=world)
        finally:
            dist.destroy_process_group()

    execute(run, body)


if __name__ == "__main__":
    from gpuforge.core.threads import prefer_passive_openmp

    prefer_passive_openmp()
    worker(json.loads(sys.argv[1]))
