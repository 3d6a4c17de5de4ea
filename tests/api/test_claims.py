"""File claims at run time: a lease tied to heartbeats, planning decisions enforced,
exactly one winner under a race, and the ownership gate at submit."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connections
from django.test import Client
from django.utils import timezone

from fleet import planning
from fleet.git import repo as gitrepo
from fleet.models import FileClaim, SharedFile, Task, Wave
from fleet.worker import Worker

from ..conftest import make_repository, make_task, make_user, make_wave
from .conftest import make_token_agent
from .test_agent_calls import take_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_agent(as_agent_any):
    """Every claim test once through the API's route and once through the lean one."""
    return as_agent_any


def claim(as_agent, token, key, *paths, mode="write"):
    return as_agent(token).post("claims", {"task": key, "paths": list(paths), "mode": mode})


def test_a_claim_lives_as_long_as_its_agents_heartbeats(as_agent, ready_tasks, settings):
    _, token = make_token_agent()
    key = take_task(as_agent, token)["task"]["key"]
    response = claim(as_agent, token, key, "src/app.py")
    assert response.status_code == 201
    held = FileClaim.objects.get()
    ttl = (held.expires_at - held.created_at).total_seconds()
    assert ttl == pytest.approx(3 * settings.FLEET_HEARTBEAT_INTERVAL, abs=1)
    # A heartbeat pushes the expiry out again.
    past = timezone.now() - timedelta(seconds=30)
    FileClaim.objects.update(
        created_at=past - timedelta(seconds=1), expires_at=past + timedelta(seconds=ttl)
    )
    before = FileClaim.objects.get().expires_at
    assert as_agent(token).post("heartbeat", {"context_pct": 10}).status_code == 200
    assert FileClaim.objects.get().expires_at > before + timedelta(seconds=20)


def test_missed_heartbeats_let_the_claim_lapse_and_the_sweep_releases_it(
    as_agent, ready_tasks, settings
):
    _, ada = make_token_agent(name="ada")
    _, bob = make_token_agent(name="bob")
    ada_key = take_task(as_agent, ada)["task"]["key"]
    bob_key = take_task(as_agent, bob)["task"]["key"]
    assert claim(as_agent, ada, ada_key, "shared.py").status_code == 201
    assert claim(as_agent, bob, bob_key, "shared.py").status_code == 409
    # Three heartbeat intervals pass without one from ada.
    later = timezone.now() + timedelta(seconds=3 * settings.FLEET_HEARTBEAT_INTERVAL + 1)
    assert Worker(sweeps=("expired_claims",)).tick(now=later) == {"expired_claims": 1}
    assert FileClaim.objects.get().released_at is not None
    # A heartbeat after the lapse does not bring the claim back.
    assert as_agent(ada).post("heartbeat", {"context_pct": 10}).status_code == 200
    assert not FileClaim.objects.filter(released_at__isnull=True).exists()
    assert claim(as_agent, bob, bob_key, "shared.py").status_code == 201


def test_claims_are_released_when_the_agent_stops(as_agent, ready_tasks):
    agent, token = make_token_agent()
    key = take_task(as_agent, token)["task"]["key"]
    claim(as_agent, token, key, "a.py", "b.py")
    event = agent.stop(reason="person", by=make_user())
    assert event.payload["claims_released"] == ["a.py", "b.py"]
    assert not FileClaim.objects.filter(released_at__isnull=True).exists()


def test_a_claim_needs_a_task_being_worked_on(as_agent, ready_tasks):
    _, token = make_token_agent()
    key = take_task(as_agent, token)["task"]["key"]
    Task.objects.filter(key=key).update(status=Task.IN_REVIEW, lease_expires_at=None)
    response = claim(as_agent, token, key, "a.py")
    assert response.status_code == 409 and "in_review" in response.json()["detail"]
    assert not FileClaim.objects.exists()


def test_a_claim_made_after_the_lease_lapsed_is_refused_and_changes_nothing(as_agent, ready_tasks):
    """The agent's copy of its task says it still holds it; the database says the
    lease lapsed meanwhile: the claim is looked at again under the agent's lock."""
    from fleet import dispatch
    from fleet.models import Agent, TransitionError

    agent, token = make_token_agent()
    key = take_task(as_agent, token)["task"]["key"]
    task = Task.objects.get(key=key)  # as the agent saw it
    Task.objects.filter(pk=task.pk).update(status=Task.READY, assignee=None, lease_expires_at=None)
    with pytest.raises(TransitionError) as refused:
        dispatch.claim(Agent.objects.get(pk=agent.pk), task=task, paths=["a.py"], mode="write")
    assert refused.value.code == "lease_lost" and key in refused.value.message
    assert not FileClaim.objects.exists()


def test_a_claim_of_several_paths_answers_in_the_callers_order(as_agent, ready_tasks):
    _, token = make_token_agent()
    key = take_task(as_agent, token)["task"]["key"]
    response = claim(as_agent, token, key, "z.py", "a.py", "m.py", "a.py")
    assert response.status_code == 201
    assert [c["path"] for c in response.json()] == ["z.py", "a.py", "m.py"]


@pytest.fixture
def decided(running_wave):
    """T-1 owns routes.py (owner) and api.py (contract); T-2 declares both."""
    repo = make_repository()
    wave = make_wave(plan=running_wave.plan, number=2)
    t1 = make_task(wave=wave, repository=repo, key="T-1", declared_paths=["routes.py", "api.py"])
    t2 = make_task(wave=wave, repository=repo, key="T-2", declared_paths=["routes.py", "api.py"])
    planning.sync_shared(wave)
    lead = make_user("lea", "lead")
    planning.decide(wave.shared_files.get(path="routes.py"), strategy="owner", task=t1, by=lead)
    planning.decide(wave.shared_files.get(path="api.py"), strategy="contract", task=t1, by=lead)
    Wave.objects.filter(pk=wave.pk).update(status=Wave.RUNNING)
    Task.objects.filter(pk__in=[t1.pk, t2.pk]).update(status=Task.READY)
    return t1, t2


def test_planning_decisions_are_enforced_by_claims(as_agent, decided):
    _, ada = make_token_agent(name="ada")
    _, bob = make_token_agent(name="bob")
    assert take_task(as_agent, ada)["task"]["key"] == "T-1"
    assert take_task(as_agent, bob)["task"]["key"] == "T-2"
    response = claim(as_agent, bob, "T-2", "routes.py")
    assert response.status_code == 409
    assert response.json() == {
        "error": "claim_owned",
        "detail": "routes.py belongs to T-1 (planning decision: owner); T-2 must not edit it",
    }
    response = claim(as_agent, bob, "T-2", "api.py")
    assert response.status_code == 409 and "may only read it" in response.json()["detail"]
    assert claim(as_agent, bob, "T-2", "api.py", mode="read").status_code == 201
    assert claim(as_agent, ada, "T-1", "routes.py", "api.py").status_code == 201
    assert FileClaim.objects.filter(task__key="T-2").count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_twenty_agents_claiming_one_path_at_once_give_exactly_one_winner():
    wave = make_wave(status=Wave.RUNNING)
    repo = make_repository()
    racers = []
    for i in range(20):
        key = f"T-{i + 1}"
        make_task(wave=wave, repository=repo, status=Task.READY, key=key)
        racers.append(make_token_agent(name=f"claimer-{i}")[1])
    keys = {}
    for token in racers:  # each takes its own task first
        response = Client().post("/api/v1/work/next", HTTP_AUTHORIZATION=f"Bearer {token}")
        keys[token] = response.json()["task"]["key"]
    start = threading.Barrier(len(racers))
    results: list[tuple[int, str]] = []
    lock = threading.Lock()

    def race(token: str) -> None:
        try:
            start.wait(timeout=30)
            response = Client().post(
                "/api/v1/claims",
                {"task": keys[token], "paths": ["config/settings.py"]},
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {token}",
            )
            with lock:
                body = response.json()
                results.append(
                    (response.status_code, "" if isinstance(body, list) else body["error"])
                )
        finally:
            connections.close_all()

    threads = [threading.Thread(target=race, args=(t,)) for t in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 20
    assert Counter(status for status, _ in results) == {201: 1, 409: 19}
    assert {code for status, code in results if status == 409} == {"claim_held"}
    assert (
        FileClaim.objects.filter(path="config/settings.py", released_at__isnull=True).count() == 1
    )


# --- the ownership gate at submit --------------------------------------------------


def test_files_outside_the_declared_and_claimed_paths_fail_the_ownership_gate(
    as_agent, tmp_path, data_dir
):
    origin, clone = tmp_path / "origin.git", tmp_path / "clone"
    gitrepo.create_with_origin(
        origin=origin, clone=clone, files={"README.md": "x\n", "app/a.py": ""}, message="init"
    )
    repo = make_repository(path=str(clone), slug="gate")
    make_task(
        wave=make_wave(status=Wave.RUNNING),
        repository=repo,
        key="T-1",
        status=Task.READY,
        declared_paths=["app/*.py"],
    )
    _, token = make_token_agent(repository=repo)
    task = take_task(as_agent, token)["task"]
    worktree = Path(task["worktree_path"])
    assert worktree.is_dir() and task["base_sha"]  # made at dispatch, off fresh main
    assert claim(as_agent, token, "T-1", "docs/extra.md").status_code == 201
    head = gitrepo.commit_files(
        path=worktree,
        files={"app/a.py": "A = 1\n", "docs/extra.md": "x\n", "README.md": "changed\n"},
        message="work",
    )
    response = as_agent(token).post("tasks/T-1/submit", {"commit": head, "epoch": 1})
    assert response.status_code == 200
    report = Task.objects.get(key="T-1").ownership
    assert report["ok"] is False and report["outside"] == ["README.md"]
    assert report["changed"] == 3 and report["commit"] == head
    lead = make_user("lea", "lead")
    page = Client()
    page.force_login(lead)
    html = page.get("/tasks/T-1/").content.decode()
    assert 'id="ownership" class="gate gate-red"' in html and "<code>README.md</code>" in html


def test_a_path_planning_gave_another_task_fails_the_gate(tmp_path, data_dir):
    origin, clone = tmp_path / "origin.git", tmp_path / "clone"
    gitrepo.create_with_origin(
        origin=origin, clone=clone, files={"routes.py": "", "b.py": ""}, message="init"
    )
    repo = make_repository(path=str(clone), slug="gate2")
    wave = make_wave()
    t1 = make_task(wave=wave, repository=repo, key="T-1", declared_paths=["routes.py"])
    t2 = make_task(wave=wave, repository=repo, key="T-2", declared_paths=["*.py"])
    planning.sync_shared(wave)
    shared = SharedFile.objects.get(wave=wave, path="routes.py")
    planning.decide(shared, strategy="owner", task=t1, by=make_user("lea", "lead"))
    head = gitrepo.commit_files(path=clone, files={"b.py": "B\n"}, message="draft")
    # A draft wave's decisions bind nobody yet.
    assert planning.ownership(t2, head)["ok"] is True
    Wave.objects.filter(pk=wave.pk).update(status=Wave.RUNNING)
    head = gitrepo.commit_files(path=clone, files={"routes.py": "X\n", "b.py": "B\n"}, message="x")
    report = planning.ownership(t2, head)
    assert report["outside"] == [] and report["owned"] == [
        {"path": "routes.py", "owner": "T-1", "strategy": "owner"}
    ]
    assert report["ok"] is False
    assert planning.ownership(t1, head)["outside"] == ["b.py"]


@pytest.mark.parametrize("path", ["src/**", "src/*.py", "src/", "a?.py", "[ab].py"])
def test_a_claim_is_one_file_not_a_glob(as_agent, ready_tasks, path):
    _, token = make_token_agent()
    key = take_task(as_agent, token)["task"]["key"]
    response = claim(as_agent, token, key, path)
    assert response.status_code == 422 and "one by one" in str(response.json()["detail"])
    assert not FileClaim.objects.exists()


def test_a_read_only_task_claims_to_read_only(as_agent, ready_tasks):
    _, token = make_token_agent()
    key = take_task(as_agent, token)["task"]["key"]
    Task.objects.filter(key=key).update(read_only=True)
    response = claim(as_agent, token, key, "a.py")
    assert response.status_code == 409 and response.json()["error"] == "read_only"
    assert claim(as_agent, token, key, "a.py", mode="read").status_code == 201


def test_a_lapsed_claim_does_not_widen_the_ownership_gate(as_agent, ready_tasks):
    agent, token = make_token_agent()
    key = take_task(as_agent, token)["task"]["key"]
    claim(as_agent, token, key, "kept.py", "lapsed.py")
    now = timezone.now()
    FileClaim.objects.filter(path="lapsed.py").update(
        created_at=now - timedelta(minutes=10),
        expires_at=now - timedelta(minutes=5),
        released_at=now - timedelta(minutes=1),  # taken over after it lapsed
    )
    task = Task.objects.get(key=key)
    assert planning.allowed_paths(task) == ["kept.py"]
    FileClaim.objects.filter(path="kept.py").update(released_at=timezone.now())  # at submit
    assert planning.allowed_paths(task) == ["kept.py"]


def test_a_dispatch_whose_worktree_cannot_be_made_is_refused(as_agent, tmp_path, data_dir):
    origin, clone = tmp_path / "origin.git", tmp_path / "clone"
    gitrepo.create_with_origin(origin=origin, clone=clone, files={"a": "a\n"}, message="init")
    repo = make_repository(path=str(clone), slug="blocked")
    make_task(wave=make_wave(status=Wave.RUNNING), repository=repo, key="T-1", status=Task.READY)
    in_the_way = data_dir / "worktrees" / "blocked" / "T-1"
    in_the_way.parent.mkdir(parents=True)
    in_the_way.write_text("a file where the worktree should go")
    _, token = make_token_agent(repository=repo)
    response = as_agent(token).post("work/next")
    assert response.status_code == 409 and response.json()["error"] == "worktree_failed"
    task = Task.objects.get(key="T-1")
    assert task.status == Task.READY and task.assignee is None and task.worktree_path == ""


@pytest.mark.django_db(transaction=True)
def test_a_locked_database_is_a_503_to_retry_and_nothing_is_half_written(as_agent, ready_tasks):
    """Another process holds SQLite's write lock past the busy timeout: the claim is
    answered 503 with Retry-After, nothing is written, and the retry succeeds."""
    import sqlite3

    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's file lock")
    _, token = make_token_agent()
    key = take_task(as_agent, token)["task"]["key"]
    options = connection.settings_dict["OPTIONS"]
    saved = options["timeout"]
    connection.close()
    options["timeout"] = 0.3
    other = sqlite3.connect(connection.settings_dict["NAME"], timeout=5)
    try:
        other.execute("BEGIN EXCLUSIVE")
        response = claim(as_agent, token, key, "locked.py")
        assert response.status_code == 503
        assert response["Retry-After"] == "1" and response.json()["error"] == "unavailable"
        other.rollback()
        assert not FileClaim.objects.exists()
        assert claim(as_agent, token, key, "locked.py").status_code == 201
    finally:
        other.close()
        connection.close()
        options["timeout"] = saved
