"""Schemathesis drives the live API from its own OpenAPI schema, statelessly and then
statefully along its links, as each kind of agent and as a runner: no input gets a 5xx, and every
answer matches the schema.

The server runs on its own database (a SQLite file, or a PostgreSQL database when the
suite runs on PostgreSQL; never the test database), seeded through ``manage.py``, so
the fuzzer's thousands of writes never contend with the test run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest

from ..agent.conftest import ROOT, Server, free_port

pytestmark = [pytest.mark.slow, pytest.mark.fuzz]

SEED = """
from fleet.models import Agent, Plan, Repository, Runner, Runtime, Task, Wave
repo = Repository.objects.create(name="Fuzz", slug="fuzz", path="/nonexistent")
wave = Wave.objects.create(plan=Plan.objects.create(name="P", slug="p"), number=1, status="running")
for i in range(3):
    Task.objects.create(key=f"T-{i + 1}", wave=wave, repository=repo, title="t", status="ready")
for role in ("builder", "reviewer", "orchestrator"):
    agent = Agent.objects.create(name=f"fuzz-{role}", role=role, repository=repo)
    print(role, agent.issue_token())
    Runtime.objects.create(agent=agent, harness="claude", directory="/nonexistent")
print("runner", Runner.objects.create(name="fuzz-runner").issue_token())
"""
# Zero 5xx, and every answer as the schema says (body, status, content type). The
# stateful phase follows the schema's links: boot → work/next → heartbeat, claim,
# journal, submit (and a review → its findings; a plan → a wave → a task).
# And the schema says everything the server enforces: a request the schema allows
# is never refused for its shape (400/422). It may be refused for who asks (401,
# 403), what is not there (404) or the state things are in (409).
CHECKS = (
    "not_a_server_error,response_schema_conformance,status_code_conformance,"
    "content_type_conformance,positive_data_acceptance"
)
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2XX", "401", "403", "404", "409"]
"""


@contextlib.contextmanager
def fuzz_database(tmp_path):
    """A database of the fuzzer's own: a SQLite file, or, when the suite runs on
    PostgreSQL, a PostgreSQL database beside the test one (what PostgreSQL refuses,
    NUL characters say, SQLite stores)."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        yield f"sqlite:///{tmp_path / 'fleet.sqlite3'}"
        return
    import psycopg

    name = f"fleet_fuzz_{os.getpid()}"
    base, _, _ = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_no_generated_request_gets_a_server_error(tmp_path):
    with fuzz_database(tmp_path) as db_url:
        fuzz(tmp_path, db_url)


def fuzz(tmp_path, db_url: str) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
        "FLEET_DATA_DIR": str(tmp_path),
        "DATABASE_URL": db_url,
    }
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    seeded = subprocess.run(
        [*manage, "shell", "-c", SEED],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    tokens = dict(line.split() for line in seeded.stdout.splitlines() if line.count(" ") == 1)
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    server = Server(free_port(), tmp_path, db_url=db_url).start()
    try:
        for role in ("builder", "reviewer", "orchestrator", "runner"):
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "schemathesis.cli",
                    "--config-file",
                    str(tmp_path / "schemathesis.toml"),
                    "run",
                    f"{server.url}/api/v1/openapi.json",
                    "--header",
                    f"Authorization: Bearer {tokens[role]}",
                    "--checks",
                    CHECKS,
                    "--max-examples",
                    "15",
                    "--seed",
                    "7",
                    "--request-timeout",
                    "20",
                ],
                capture_output=True,
                text=True,
                timeout=600,
                cwd=tmp_path,  # schemathesis keeps a cache in its working directory
            )
            assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
            assert " passed" in result.stdout
    finally:
        server.stop()
