"""Past one machine on an existing engine: Dask distributed (DESIGN.md "Memory and scale").

``--cluster local[:N]`` starts a LocalCluster of N worker processes for the command and
stops it afterwards; ``--scheduler tcp://HOST:PORT`` (or ``tls://``) connects to a running
one. Both are global options; commands that can distribute declare it
(``@command(..., distributed=True)``) and get a ``dask.distributed.Client`` from
``run.cluster()``; the others say that they run locally.

A local cluster listens on loopback only: the scheduler, the nannies and the workers
bind 127.0.0.1, and no dashboard starts unless ``--dashboard ADDR`` asks for one (Dask's
default dashboard binds 0.0.0.0:8787 even with ``host="127.0.0.1"``; FIELD-NOTES.md).
A remote ``tls://`` scheduler uses Dask's TLS ``Security`` with ``--tls-ca-file``,
``--tls-cert`` and ``--tls-key`` (or Dask's own configuration when they are not given).

Dask moves tasks and results between processes with its own serialization; gpuforge
never reads input files that way (inputs are safetensors, parquet, JSON).
"""
from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

from gpuforge.core.errors import BadInputError, UnsupportedError, UsageError

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class ClusterSpec:
    """What the global options asked for."""

    kind: str
    """``local`` or ``remote``."""
    workers: int = 2
    address: str | None = None
    dashboard: str | None = None
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def label(self) -> str:
        return f"local:{self.workers}" if self.kind == "local" else str(self.address)


def parse(cluster: str | None, scheduler: str | None, dashboard: str | None = None,
          tls_ca_file: str | None = None, tls_cert: str | None = None, tls_key: str | None = None) -> ClusterSpec | None:
    """The global options as a :class:`ClusterSpec`, or None (run on this machine)."""
    if cluster and scheduler:
        raise UsageError("--cluster and --scheduler exclude each other: start a local cluster or connect to one")
    tls = (tls_ca_file, tls_cert, tls_key)
    if any(tls) and not (scheduler or "").startswith("tls://"):
        raise UsageError("--tls-ca-file/--tls-cert/--tls-key apply to a tls:// --scheduler")
    for opt, path in zip(("--tls-ca-file", "--tls-cert", "--tls-key"), tls):
        if path is not None and not os.path.isfile(path):
            raise BadInputError(f"{opt} {path}: file not found")
    if cluster:
        m = re.fullmatch(r"local(?::(\d+))?", cluster)
        if not m:
            raise UsageError(f"--cluster {cluster!r}: use local or local:N (N worker processes on this machine); "
                             "for a cluster elsewhere use --scheduler tcp://HOST:PORT")
        n = int(m.group(1) or 2)
        if n < 1:
            raise UsageError(f"--cluster {cluster}: at least one worker")
        return ClusterSpec("local", workers=n, dashboard=dashboard)
    if scheduler:
        if not re.fullmatch(r"(tcp|tls)://[^\s:/]+:\d+", scheduler):
            raise UsageError(f"--scheduler {scheduler!r}: use tcp://HOST:PORT or tls://HOST:PORT")
        return ClusterSpec("remote", address=scheduler, dashboard=dashboard, tls_ca_file=tls_ca_file,
                           tls_cert=tls_cert, tls_key=tls_key)
    if dashboard:
        raise UsageError("--dashboard needs --cluster local[:N] (a remote scheduler has its own dashboard)")
    return None


def _dask():
    try:
        from dask import distributed
    except ImportError:
        raise UnsupportedError("--cluster/--scheduler need Dask: pip install 'gpuforge[cluster]' "
                               "(dask[distributed])") from None
    return distributed


@contextmanager
def connect(spec: ClusterSpec) -> Iterator[Any]:
    """A ``Client`` for ``spec``; a local cluster is started here and stopped on exit."""
    distributed = _dask()
    if spec.kind == "local":
        cluster = distributed.LocalCluster(
            n_workers=spec.workers, threads_per_worker=1, processes=True, host=LOOPBACK, protocol="tcp://",
            dashboard_address=spec.dashboard, worker_dashboard_address=None, silence_logs=logging.ERROR)
        try:
            with distributed.Client(cluster) as client:
                yield client
        finally:
            cluster.close()
        return
    security = None
    if spec.address.startswith("tls://"):
        security = distributed.Security(tls_ca_file=spec.tls_ca_file, tls_client_cert=spec.tls_cert,
                                        tls_client_key=spec.tls_key, require_encryption=True) \
            if any((spec.tls_ca_file, spec.tls_cert, spec.tls_key)) else None
    try:
        client = distributed.Client(spec.address, security=security, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise BadInputError(f"--scheduler {spec.address}: cannot connect ({str(exc).splitlines()[0]})") from None
    try:
        yield client
    finally:
        client.close()


def listening_addresses(pids: set[int] | None = None) -> list[tuple[int, str, int]]:
    """(pid, ip, port) of every listening TCP socket of this process and its children
    (or of ``pids``): what a local cluster exposes."""
    import psutil

    if pids is None:
        me = psutil.Process()
        pids = {me.pid} | {c.pid for c in me.children(recursive=True)}
    out = []
    for c in psutil.net_connections(kind="inet"):
        if c.status == psutil.CONN_LISTEN and c.pid in pids:
            out.append((c.pid, c.laddr.ip, c.laddr.port))
    return out


def non_loopback(addresses: list[tuple[int, str, int]]) -> list[tuple[int, str, int]]:
    return [a for a in addresses if not (a[1].startswith("127.") or a[1] == "::1")]
