"""Data-parallel splat training over several CPU processes: torch.distributed with gloo.

``radiance splat train --nproc N`` runs the command's own process as rank 0 and starts
N-1 worker processes of this module (``python -m gpuforge.plugins.radiance.distributed
SPEC.json``). Nothing listens beyond this machine's loopback interface:

- the rendezvous is a ``file://`` store in a private temporary folder (no TCP store, so
  no listening socket at all; torchrun's agent would listen on every interface);
- gloo's own connections between the ranks are bound to loopback
  (``GLOO_SOCKET_IFNAME=lo`` while the process group is created).

Each worker reads the scene, keeps its shard of the training images on its device and
trains exactly as rank 0 does (:class:`~gpuforge.plugins.radiance.splat.Trainer`): the
gradients and densification statistics are summed over the ranks every step, so every
rank holds the same Gaussians; only rank 0 evaluates and writes the run. Workers die with
rank 0 (parent-death signal) and rank 0 reports a worker that failed.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path

LOOPBACK_IFNAME = "lo"
TIMEOUT = timedelta(minutes=30)
"""How long a rank waits for the others (rank 0 evaluates while the others wait)."""


class Comm:
    """Sums and maxima over the ranks of a run; a no-op for one process."""

    def __init__(self, rank: int, world: int, group=None):
        self.rank, self.world, self.group = rank, world, group

    @classmethod
    def single(cls) -> "Comm":
        return cls(0, 1)

    def sum_grads(self, params, extra: float = 0.0) -> float:
        """Sum every parameter's gradient (and ``extra``) over the ranks, in one all-reduce."""
        if self.world == 1:
            return extra
        import torch
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor([extra], dtype=grads[0].dtype,
                                                                        device=grads[0].device)])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        at = 0
        for p, g in zip(params, grads):
            n = g.numel()
            p.grad = flat[at:at + n].view_as(p).clone()
            at += n
        return float(flat[-1])

    def sum_(self, *tensors) -> None:
        if self.world > 1:
            import torch.distributed as dist

            for t in tensors:
                dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group)

    def max_(self, *tensors) -> None:
        if self.world > 1:
            import torch.distributed as dist

            for t in tensors:
                dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)

    def max_scalar(self, x: float) -> float:
        if self.world == 1:
            return x
        import torch

        t = torch.tensor([x], dtype=torch.float64)
        self.max_(t)
        return float(t[0])


def init_group(rank: int, world: int, store_file: str) -> Comm:
    """Join the gloo process group through the file store, gloo bound to loopback."""
    import torch.distributed as dist

    before = os.environ.get("GLOO_SOCKET_IFNAME")
    os.environ["GLOO_SOCKET_IFNAME"] = LOOPBACK_IFNAME
    try:
        dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world,
                                timeout=TIMEOUT)
    finally:
        if before is None:
            os.environ.pop("GLOO_SOCKET_IFNAME", None)
        else:
            os.environ["GLOO_SOCKET_IFNAME"] = before
    return Comm(rank, world)


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the process that started it dies (even by kill -9)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@contextmanager
def workers(nproc: int, spec: dict):
    """Start ranks 1..nproc-1 and join the group as rank 0; yields the :class:`Comm`.
    The workers are stopped (and their failure reported) when the block ends."""
    from gpuforge.core.errors import GpuforgeError
    from gpuforge.core.safepath import python_argv

    folder = Path(tempfile.mkdtemp(prefix="gpuforge-radiance-dist-"))
    store = str(folder / "store")
    procs, logs = [], []
    try:
        for rank in range(1, nproc):
            spec_file = folder / f"rank{rank}.json"
            spec_file.write_text(json.dumps({**spec, "rank": rank, "world": nproc, "store": store}))
            log = open(folder / f"rank{rank}.log", "w+")
            logs.append(log)
            procs.append(subprocess.Popen([*python_argv(), "-m", "gpuforge.plugins.radiance.distributed",
                                           str(spec_file)], stdout=log, stderr=subprocess.STDOUT,
                                          preexec_fn=_die_with_parent))
        try:
            comm = init_group(0, nproc, store)
            yield comm
        except Exception:  # a worker that died takes its connections with it: say which and why
            for p in procs:
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            failed = _failures(procs, logs)
            if failed:
                raise GpuforgeError(f"splat train --nproc {nproc}: {failed}") from None
            raise
        for rank, p in enumerate(procs, 1):
            if p.wait(timeout=TIMEOUT.total_seconds()) != 0:
                raise GpuforgeError(f"splat train --nproc {nproc}: {_failures(procs, logs)}")
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()
        shutil.rmtree(folder, ignore_errors=True)


def _failures(procs, logs) -> str:
    out = []
    for rank, (p, log) in enumerate(zip(procs, logs), 1):
        code = p.poll()
        if code not in (None, 0):
            log.seek(0)
            lines = [ln.strip() for ln in log.read().splitlines() if ln.strip()]
            out.append(f"worker rank {rank} exited {code}" + (f": {lines[-1]}" if lines else ""))
    return "; ".join(out)


def spec_for(scene, background, cfg, minutes, cpu_minutes, threads) -> dict:
    """What a worker needs to train exactly as rank 0 (plain JSON)."""
    return {"scene": str(Path(scene).resolve()), "background": background, "config": asdict(cfg),
            "minutes": minutes, "cpu_minutes": cpu_minutes, "threads": threads}


def worker_main(spec_path: str) -> int:
    _die_with_parent()
    spec = json.loads(Path(spec_path).read_text())
    try:
        from gpuforge.core.threads import prefer_passive_openmp

        prefer_passive_openmp()
        import torch

        from gpuforge.plugins.radiance import splat
        from gpuforge.plugins.radiance.scene import load_scene

        if spec.get("threads"):
            from gpuforge.core.threads import set_threads

            set_threads(int(spec["threads"]))
        torch.manual_seed(spec["config"]["seed"])
        comm = init_group(spec["rank"], spec["world"], spec["store"])
        sc = load_scene(spec["scene"], spec["background"])
        splat.train(sc, splat.SplatConfig(**spec["config"]), spec["minutes"], 10**12,
                    cpu_minutes=spec["cpu_minutes"], comm=comm)
        import torch.distributed as dist

        dist.destroy_process_group()
        return 0
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover - a worker process
    sys.exit(worker_main(sys.argv[1]))
