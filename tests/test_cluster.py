"""Dask clusters that gpuforge starts listen on loopback only, and the global
--cluster/--scheduler options reach the commands that can distribute (core/cluster.py)."""
from __future__ import annotations

import pytest

from gpuforge.core.cluster import ClusterSpec, connect, listening_addresses, non_loopback, parse
from gpuforge.core.errors import BadInputError, UsageError

pytestmark = pytest.mark.dist
distributed = pytest.importorskip("dask.distributed")


def test_parse_options():
    assert parse(None, None) is None
    assert parse("local", None) == ClusterSpec("local", workers=2)
    assert parse("local:3", None, dashboard="127.0.0.1:0").dashboard == "127.0.0.1:0"
    assert parse(None, "tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    for bad in [("local:x", None), ("ray", None), ("local", "tcp://h:1"), (None, "h:8786"), (None, "http://h:1")]:
        with pytest.raises(UsageError):
            parse(*bad)
    with pytest.raises(UsageError):
        parse(None, None, dashboard="127.0.0.1:8787")
    with pytest.raises(UsageError):
        parse(None, "tcp://h:1", tls_ca_file="ca.pem")
    with pytest.raises(BadInputError):
        parse(None, "tls://h:1", tls_ca_file="/no/such/ca.pem")


def test_local_cluster_listens_on_loopback_only():
    with connect(ClusterSpec("local", workers=2)) as client:
        assert client.submit(lambda x: x + 1, 1).result() == 2
        addrs = listening_addresses()
        assert len(addrs) >= 3       # the scheduler and, per worker, a nanny and a worker
        assert non_loopback(addrs) == [], addrs


def test_the_loopback_check_can_fail():
    """Dask's defaults expose the dashboard on every interface: the check sees it."""
    cluster = distributed.LocalCluster(n_workers=1, processes=True, host="127.0.0.1", protocol="tcp://",
                                       dashboard_address="0.0.0.0:0")
    try:
        assert non_loopback(listening_addresses()) != []
    finally:
        cluster.close()


def test_commands_that_cannot_distribute_say_so(run_cli, tmp_path):
    r = run_cli("--cluster", "local:2", "superres", "photos", "--out", str(tmp_path / "p"), "--split", "val")
    assert r.code == 0, r
    assert "runs on this machine only" in r.stderr
