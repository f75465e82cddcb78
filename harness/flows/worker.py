"""`harness worker --master HOST:PORT`: join a `harness run --workers N --master-bind` master
and send its share of the load; every record goes back to the master."""

from __future__ import annotations

import harness.load  # noqa: F401  (first: gevent patches the standard library here)
from harness.load.distributed import host_port, run_worker


def join_master(master: str) -> None:
    """Join the master and run until it ends the load."""
    host, port = host_port(master)
    run_worker(host, port)
