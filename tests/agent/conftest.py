"""A live Fleet (daphne on a free port) over the test database, for agent-side tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from fleet.bench.servers import Server as BaseServer
from fleet.bench.servers import free_port

__all__ = ["Server", "free_port", "run_agent"]

ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    return (
        f"postgres://{user}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
    )


class Server(BaseServer):
    """daphne serving Fleet (``fleet.asgi``, as deployed) against the test database."""

    def __init__(self, port: int, data_dir: Path, db_url: str | None = None) -> None:
        env = {
            "DATABASE_URL": db_url or database_url(),
            "DEBUG": "1",
            "SECRET_KEY": "test-only-" + "x" * 40,
            # Live tests measure behaviour, not the rate limit (tested on its own).
            "FLEET_API_RATE": "100000/m",
        }
        super().__init__(port, data_dir, env=env)


@pytest.fixture(scope="session")
def live_fleet(django_db_setup, django_db_blocker, tmp_path_factory):
    with django_db_blocker.unblock():
        server = Server(free_port(), tmp_path_factory.mktemp("live-data")).start()
    yield server
    server.stop()


def run_agent(
    *args: str, cwd: Path, stdin: str | None = None, env: dict | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """``python -m fleet.agent ARGS`` as an agent would run it: by path, from its worktree."""
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "FLEET_", "DATABASE"))
    }
    full_env.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "fleet.agent", *args],
        cwd=cwd,
        env=full_env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
