"""Scale-out, for real: the web processes of ``deploy/Procfile`` sharing PostgreSQL and
Redis. A dashboard on one process follows a heartbeat posted to the other; one process
killed with -9 under load loses nothing its agents were told was stored."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import websockets
from django.conf import settings
from django.db import connection
from django.test import Client as DjangoClient

from fleet.agent.client import Client, FleetError, Identity
from fleet.bench.servers import Server, free_port
from fleet.models import JournalEntry

from .agent.conftest import database_url
from .conftest import make_agent, make_user

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
ROOT = Path(__file__).resolve().parents[1]


def procfile() -> dict[str, list[str]]:
    lines = (ROOT / "deploy" / "Procfile").read_text().splitlines()
    return {
        name: shlex.split(command)
        for name, _, command in (line.partition(":") for line in lines)
        if command and not name.startswith("#")
    }


class ProcfileWeb(Server):
    """A web line of the Procfile, on a free port, with this test's database."""

    def __init__(self, argv: list[str], port: int, data_dir: Path) -> None:
        super().__init__(port, data_dir, env=scale_env())
        self.argv = argv

    def command(self) -> list[str]:
        argv = list(self.argv)
        argv[argv.index("-p") + 1] = str(self.port)
        assert Path(argv[0]).name == "daphne"
        return [sys.executable, "-m", "daphne", "-v", "0", *argv[1:]]


def scale_env() -> dict[str, str]:
    return {
        "DATABASE_URL": database_url(),
        "REDIS_URL": os.environ["REDIS_URL"],
        "DEBUG": "1",
        # This process's key: the session it logs in below must hold over there too.
        "SECRET_KEY": settings.SECRET_KEY,
        "FLEET_API_RATE": "100000/m",
    }


@pytest.fixture
def two_webs(tmp_path):
    if connection.vendor != "postgresql" or not os.environ.get("REDIS_URL"):
        pytest.skip("scale-out runs on PostgreSQL + Redis (CI's second pass)")
    webs = [
        ProcfileWeb(procfile()[name], free_port(), tmp_path / name).start()
        for name in ("web1", "web2")
    ]
    yield webs
    for web in webs:
        web.stop()


def test_the_procfile_names_workers_that_run(tmp_path):
    lines = procfile()
    workers = [argv for argv in lines.values() if "fleet_worker" in argv]
    assert len(workers) >= 2
    assert any("--only" in argv and "merges" in argv for argv in workers)
    from django.core.management import call_command

    for argv in workers:
        options = argv[argv.index("fleet_worker") + 1 :]
        call_command("fleet_worker", "--once", *options, stdout=(tmp_path / "w.log").open("w"))
    # The runner line starts the runner module (its token comes from the environment).
    runner = lines["runner"]
    assert runner[-2:] == ["-m", "fleet.runner"], runner
    shown = subprocess.run(
        [sys.executable, *runner[1:], "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert shown.returncode == 0 and "--token-file" in shown.stdout, shown


def test_a_dashboard_on_one_process_follows_a_heartbeat_on_the_other(two_webs):
    web1, web2 = two_webs
    make_user("lena", "lead", password="pw")
    browser = DjangoClient()
    browser.login(username="lena", password="pw")
    cookie = f"sessionid={browser.cookies['sessionid'].value}"
    agent = make_agent(name="ada")
    token = agent.issue_token()
    marker = f"beat-{time.time():.3f}"

    async def watch() -> bool:
        headers = {"Cookie": cookie, "Origin": web2.url}
        async with websockets.connect(
            f"ws://127.0.0.1:{web2.port}/ws/fleet/?view=overview",
            additional_headers=headers,
            max_size=None,
        ) as ws:
            await asyncio.wait_for(ws.recv(), timeout=30)  # the snapshot
            client = Client(Identity(url=web1.url, token=token))
            await asyncio.to_thread(
                client.post, "heartbeat", {"context_pct": 20, "status_line": marker}
            )
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                frame = await asyncio.wait_for(ws.recv(), timeout=15)
                if marker in frame:
                    return True
        return False

    assert asyncio.run(watch())


def test_kill_9_under_load_loses_no_acknowledged_write(two_webs):
    web1, _ = two_webs
    agents = [make_agent(name=f"a{i}") for i in range(6)]
    tokens = [a.issue_token() for a in agents]
    acknowledged: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def work(token: str, n: int) -> None:
        client = Client(Identity(url=web1.url, token=token), retries=8, backoff=0.2, timeout=10)
        i = 0
        while not stop.is_set():
            body = f"agent {n} entry {i}"
            try:
                client.post("heartbeat", {"context_pct": 10, "status_line": body})
                client.post("journal", {"kind": "note", "body": body})
                acknowledged.append(body)
            except FleetError as exc:
                failures.append(f"{body}: {exc}")
            i += 1

    threads = [threading.Thread(target=work, args=(t, n)) for n, t in enumerate(tokens)]
    for thread in threads:
        thread.start()
    time.sleep(2)
    web1.kill()  # -9: no graceful shutdown
    time.sleep(1)
    web1.start()
    time.sleep(2)
    stop.set()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []  # the clients retried through the outage
    stored = set(JournalEntry.objects.values_list("body", flat=True))
    assert acknowledged and set(acknowledged) <= stored
    assert json.dumps(sorted(stored - set(acknowledged))).count("entry") <= len(agents)


def test_claims_raced_on_both_processes_grant_no_path_twice(two_webs):
    """Agents on both web processes (each running its claims on a pool of threads and
    connections, PostgreSQL's default) fight over five paths: never two holders, every
    grant recorded once, everything released; the rate limit keeps its Redis
    connections instead of opening one per call."""
    import random

    import redis

    from fleet.bench.plan import _claimer
    from fleet.bench.seed import seed_heartbeat
    from fleet.models import Event, FileClaim

    agents = seed_heartbeat(12)["agents"]
    shared = redis.Redis.from_url(os.environ["REDIS_URL"])
    connections_before = shared.info("stats")["total_connections_received"]
    stats = {"granted": 0, "refused": 0, "retried": 0, "double": 0, "errors": [], "latencies": []}
    holders: dict[str, str] = {}

    async def race() -> None:
        deadline = time.monotonic() + 4
        await asyncio.gather(
            *(
                _claimer(two_webs[i % 2].port, agent, deadline, holders, stats, random.Random(i), 5)
                for i, agent in enumerate(agents)
            )
        )

    asyncio.run(race())
    assert stats["errors"] == [] and stats["double"] == 0 and stats["retried"] == 0
    assert stats["granted"] > 20 and stats["refused"] > 0  # they did fight
    assert Event.objects.filter(kind="claims.claim").count() == stats["granted"]
    assert Event.objects.filter(kind="claims.release").count() == stats["granted"]
    assert not FileClaim.objects.filter(released_at__isnull=True).exists()
    opened = shared.info("stats")["total_connections_received"] - connections_before
    assert opened < len(stats["latencies"]) / 10, opened
