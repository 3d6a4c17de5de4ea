"""work/next under concurrent callers: each ready task goes to exactly one agent."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
from django.db import connections
from django.test import Client

from fleet.models import Event, Task, Wave

from ..conftest import make_repository, make_task, make_wave
from .conftest import make_token_agent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_fifty_agents_racing_for_ten_tasks_get_each_task_exactly_once():
    wave = make_wave(status=Wave.RUNNING)
    repo = make_repository()
    for i in range(10):
        make_task(wave=wave, repository=repo, status=Task.READY, key=f"T-{i + 1}")
    tokens = [make_token_agent(name=f"racer-{i}")[1] for i in range(50)]
    start = threading.Barrier(len(tokens))
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def race(token: str) -> None:
        client = Client()
        try:
            start.wait(timeout=30)
            response = client.post("/api/v1/work/next", HTTP_AUTHORIZATION=f"Bearer {token}")
            key = (response.json().get("task") or {}).get("key")
            with lock:
                results.append((response.status_code, key))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=race, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(results) == 50
    assert {status for status, _ in results} == {200}
    handed_out = Counter(key for _, key in results if key)
    assert len(handed_out) == 10 and set(handed_out.values()) == {1}
    assert Task.objects.filter(status=Task.WORKING).count() == 10
    assert Event.objects.filter(kind="task.assign").count() == 10
    assignees = Task.objects.values_list("assignee__name", flat=True)
    assert len(set(assignees)) == 10
