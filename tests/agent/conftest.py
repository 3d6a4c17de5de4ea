"""A live Fleet (daphne on a free port) over the test database, for agent-side tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    return (
        f"postgres://{user}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"
    )


class Server:
    """daphne serving Fleet on 127.0.0.1:port, against the test database."""

    def __init__(self, port: int, data_dir: Path, db_url: str | None = None) -> None:
        self.port, self.data_dir, self.proc = port, data_dir, None
        self.db_url = db_url
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / f"daphne-{port}.log"
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> Server:
        env = {
            **os.environ,
            "DATABASE_URL": self.db_url or database_url(),
            "FLEET_DATA_DIR": str(self.data_dir),
            "DEBUG": "1",
            "SECRET_KEY": "test-only-" + "x" * 40,
            # Live tests measure behaviour, not the rate limit (tested on its own).
            "FLEET_API_RATE": "100000/m",
        }
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(self.port),
                "fleet.asgi:application",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            # A file, not a pipe: daphne logs every request, and a full pipe would block it.
            stderr=self.log.open("ab"),
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daphne exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("daphne did not answer within 30 s")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


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
