"""HDBSCAN for ``fraud cluster``, one module per step (see fit.py for the order):

- kernels (reference + numba-cpu + numba-cuda, registered as ``fraud.*``):
  ``knn.py`` (exact kNN, core distances), ``approx.py`` (approx mode's kNN graph),
  ``kruskal.py`` (the kNN graph's spanning forest), ``boruvka.py`` (the exact MST),
  ``prim.py`` (the MST above 60 columns, hdbscan's tie rules);
- shared by the kernels: ``edge_order.py`` (the one distance and tie rule),
  ``cells.py`` (the numba-cpu search structure), ``union_find.py``;
- host steps: ``linkage.py``, ``condense.py``, ``selection.py``, ``glosh.py``;
- ``fit.py``: the driver, :func:`hdbscan`.
"""
from __future__ import annotations

__all__ = ["Result", "hdbscan"]


def __getattr__(name: str):
    # lazily: kernel specs name this package's modules, and finding a submodule imports
    # this package, which must stay light for `gpuforge --help` (no numpy)
    if name in __all__:
        from gpuforge.plugins.fraud.hdbscan import fit

        return getattr(fit, name)
    raise AttributeError(name)
