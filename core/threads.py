"""One process, two OpenMP thread pools: torch's and numba's (its default ``omp``
threading layer). With OpenMP's default wait policy each pool's idle threads spin for a
while after every parallel region, so when torch ops and numba kernels alternate, each
region can wait for the other pool's spinners to be descheduled. How much that costs
depends on what else the cores are doing; ``python -m gpuforge.core.threads [--busy N]``
measures it (a small MLP training step plus one numba kernel, 200 steps, once per
policy, each in a fresh process; ``--busy N`` keeps N other processes spinning). On the
2-core dev VM:

- nothing else running: default 0.27-0.34 s, passive 0.56-0.63 s (passive ~2x slower);
- ``--busy 1``: default 0.81-1.1 s, passive 0.46-0.53 s;
- ``--busy 2`` / ``--busy 3``: default 5.7 / 4.6 s, passive 1.09 / 1.07 s;
- (once, with another engineer's test suite running beside it: default 45 s, passive 0.8 s).

The plugins mix the two everywhere and run in scripted batch jobs on shared machines,
where the last case is the one that hurts, so the CLI (and the test suite) start with the
passive policy unless the user set one; ``OMP_WAIT_POLICY=ACTIVE`` (or any value) wins.
"""
from __future__ import annotations

import os

STEPS = 200

_LOOP = f"""
import time, numpy as np, torch
from gpuforge.core.kernels import get_impl
absmax = get_impl("kernels.blockwise_absmax", "numba-cpu")
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.GELU(), torch.nn.Linear(512, 256))
opt = torch.optim.AdamW(m.parameters())
x = torch.randn(64, 256)
w = np.random.default_rng(0).standard_normal(1 << 16).astype(np.float32)
def step():
    loss = m(x).pow(2).mean(); opt.zero_grad(); loss.backward(); opt.step()
    absmax(w, 64)
for _ in range(5):
    step()
t = time.perf_counter()
for _ in range({STEPS}):
    step()
print(time.perf_counter() - t)
"""


def prefer_passive_openmp() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless set; must run before torch or numba load
    their OpenMP runtime (it reads the variable once, at start-up)."""
    if not os.environ.get("OMP_WAIT_POLICY"):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def set_threads(n: int) -> None:
    """``--threads N``: torch's intra-op pool and Numba's pool, once per command (the
    runtime calls this; plugins do not set thread counts themselves)."""
    import sys

    if n < 1:
        from gpuforge.core.errors import UsageError

        raise UsageError(f"--threads {n}: use 1 or more")
    import numba

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    if "torch" in sys.modules or _torch_installed():
        import torch

        torch.set_num_threads(n)


def _torch_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def measure(busy: int = 0, timeout: float = 600.0) -> dict[str, float]:
    """Seconds for the mixed torch + numba loop under the default and the passive policy."""
    import subprocess

    from gpuforge.core.safepath import python_argv, safe_env

    spinners = [subprocess.Popen([*python_argv(), "-c", "while True: pass"]) for _ in range(busy)]
    try:
        out = {}
        for policy in ("default", "PASSIVE"):
            env = {k: v for k, v in safe_env().items() if k != "OMP_WAIT_POLICY"}
            if policy != "default":
                env["OMP_WAIT_POLICY"] = policy
            r = subprocess.run([*python_argv(), "-c", _LOOP], env=env, capture_output=True, text=True,
                               timeout=timeout, check=True)
            out[policy] = float(r.stdout.strip().splitlines()[-1])
        return out
    finally:
        for p in spinners:
            p.kill()


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description="Time a torch + numba loop under OpenMP's default and passive "
                                             "wait policies.")
    ap.add_argument("--busy", type=int, default=0, help="other processes kept spinning meanwhile")
    a = ap.parse_args()
    print(json.dumps({"steps": STEPS, "busy": a.busy, "seconds": measure(a.busy)}))
