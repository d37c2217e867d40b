"""Launch configuration and the device-side distance of the fraud CUDA kernels."""
from __future__ import annotations

import os

from numba import cuda

from gpuforge.plugins.fraud.hdbscan import edge_order

# the one tie rule, as device functions (inlined at IR level, like the CPU versions)
edge_before = cuda.jit(device=True, inline="always")(edge_order.edge_before.py_func)
neighbour_before = cuda.jit(device=True, inline="always")(edge_order.neighbour_before.py_func)
lighter_edge = cuda.jit(device=True, inline="always")(edge_order.lighter_edge.py_func)
store_edge = cuda.jit(device=True, inline="always")(edge_order.store_edge.py_func)

DEFAULT_THREADS = 256


def launch(kernel: str):
    """Launch configuration of ``kernel`` (``.threads``, ``.blocks(n)``): the core's one
    launch rule (:func:`gpuforge.core.tuning.launch_config`: the plugin's tuning.toml per
    GPU, checked against the GPU's limits, and test overrides)."""
    from gpuforge.core.tuning import launch_config

    return launch_config(kernel, {"threads_per_block": DEFAULT_THREADS})


if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":  # the simulator has no libdevice: plain Python floats
    def _mul(a, b):
        return a * b

    def _add(a, b):
        return a + b
else:
    from numba.cuda.libdevice import dadd_rn as _add  # round-to-nearest, never fused into an FMA
    from numba.cuda.libdevice import dmul_rn as _mul


@cuda.jit(device=True, inline="always")
def sq_dist(x, p, y, q):
    """The column-order sum of squared differences of :mod:`.edge_order`, with the
    multiply and the add rounded separately (NVVM would otherwise contract them into a
    fused multiply-add and change the last bit)."""
    s = 0.0
    for c in range(x.shape[1]):
        t = x[p, c] - y[q, c]
        s = _add(s, _mul(t, t))
    return s
