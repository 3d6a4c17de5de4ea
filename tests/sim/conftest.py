"""A running Fleet (daphne and the worker, as ``make run`` starts them) over the test
database, with short demo timings, for the simulator to play against."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from fleet.bench.servers import start_worker, stop_process
from tests.agent.conftest import Server, free_port

# Seconds, so that a silent agent's lease lapses within the test.
TIMINGS = {
    "FLEET_HEARTBEAT_TTL": "3",
    "FLEET_LEASE_TTL": "4",
    "FLEET_HEARTBEAT_INTERVAL": "1",
    # A loaded CI machine may let a lease lapse more than usual: never fail a task for it.
    "FLEET_TASK_MAX_ATTEMPTS": "20",
}


@contextmanager
def running_fleet(data_dir: Path):
    """daphne on a free port and ``fleet_worker`` ticking every half second."""
    server = Server(free_port(), data_dir / "web")
    server.env.update(TIMINGS)
    env = {**os.environ, "FLEET_DATA_DIR": str(data_dir), **server.env}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    worker = start_worker(env, data_dir / "worker.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        stop_process(worker)
