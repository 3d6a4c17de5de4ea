"""An agent process paused (SIGSTOP) past its lease, then resumed (SIGCONT): its task
was reclaimed exactly once by another agent, and every write the paused agent makes
with its old lease epoch is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fleet.agent.client import Client, Identity
from fleet.models import Event, Task, Wave

from ..conftest import make_agent, make_repository, make_task, make_wave
from .conftest import ROOT, Server, free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# A builder that takes work and heartbeats with its lease epoch; once refused, it tries
# its other writes with the same epoch and reports what each answered.
AGENT = r"""
import json, sys, time
from fleet.agent.client import Client, FleetError, Identity
client = Client(Identity(url=sys.argv[1], token=sys.argv[2]), retries=0)
task = client.post("work/next")["task"]
epoch = task["lease_epoch"]
print(json.dumps({"took": task["key"], "epoch": epoch}), flush=True)
def code(call):
    try:
        call()
        return "ok"
    except FleetError as exc:
        return f"{exc.status} {exc.code}"
while True:
    answer = code(lambda: client.post("heartbeat", {"context_pct": 20, "epoch": epoch}))
    print(json.dumps({"beat": answer}), flush=True)
    if answer != "ok":
        break
    time.sleep(0.3)
print(json.dumps({
    "claim": code(lambda: client.post("claims", {"task": task["key"], "paths": ["a.py"]})),
    "submit": code(lambda: client.post(
        f"tasks/{task['key']}/submit", {"commit": "a" * 40, "epoch": epoch})),
    "journal": code(lambda: client.post(
        "journal", {"kind": "done", "body": "late", "task": task["key"]})),
}), flush=True)
"""


def test_a_paused_agent_past_its_lease_is_fenced_off(tmp_path):
    repo = make_repository(slug="shop")
    task = make_task(wave=make_wave(status=Wave.RUNNING), repository=repo, status=Task.READY)
    ada, bob = make_agent(name="ada", repository=repo), make_agent(name="bob", repository=repo)
    server = Server(free_port(), tmp_path / "web")
    timings = {"FLEET_LEASE_TTL": "2", "FLEET_HEARTBEAT_TTL": "2"}
    server.env.update(timings)
    server.start()
    env = {**os.environ, "FLEET_DATA_DIR": str(tmp_path / "web"), **server.env, **timings}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "fleet_worker", "--interval", "0.5"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT, server.url, ada.issue_token()],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        took = json.loads(agent.stdout.readline())
        assert took["took"] == task.key
        assert json.loads(agent.stdout.readline()) == {"beat": "ok"}
        os.kill(agent.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 30
        while Task.objects.get(pk=task.pk).status != Task.READY:
            assert time.monotonic() < deadline, "the lease never lapsed"
            time.sleep(0.2)
        other = Client(Identity(url=server.url, token=bob.issue_token()))
        other.get("boot")
        reclaimed = other.post("work/next")["task"]
        assert reclaimed["key"] == task.key and reclaimed["lease_epoch"] > took["epoch"]
        # Done with lapsing leases: bob, who does not heartbeat here, keeps his.
        worker.terminate()
        worker.wait(timeout=20)
        os.kill(agent.pid, signal.SIGCONT)
        lines = [json.loads(line) for line in agent.stdout]
        agent.wait(timeout=30)
    finally:
        if agent.poll() is None:
            os.kill(agent.pid, signal.SIGCONT)
            agent.kill()
        if worker.poll() is None:
            worker.terminate()
            worker.wait(timeout=20)
        server.stop()
    beats = [line["beat"] for line in lines if "beat" in line]
    assert beats[-1] == "409 stale_lease"
    late = lines[-1]
    assert late["claim"] == "409 lease_lost" and late["submit"] == "409 lease_lost"
    # Only the task's holder journals on it (its entries are the holder's boot digest):
    # the old holder's late note is refused like its claim and submit.
    assert late["journal"] == "409 lease_lost"
    task.refresh_from_db()
    assert task.assignee == bob and task.status in Task.LEASED_STATES and not task.head_sha
    assigned = Event.objects.filter(kind="task.assign", task=task)
    assert [e.payload["agent"] for e in assigned.order_by("pk")] == ["ada", "bob"]
