"""Context rotation and spend: rotation exactly at the repository's line, a context
estimated from proxies, the next session booting from the journal digest with its
task, lease and claims intact, checkpoints of the worktree (uncommitted work
included) at rotation and when an agent goes silent; spend priced from the price
table, reported without a heartbeat, and totalled per session and per scope."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from django.utils import timezone

from fleet import checkpoints, dispatch
from fleet.heartbeats import Beat
from fleet.models import (
    Agent,
    AgentSession,
    Budget,
    Checkpoint,
    FileClaim,
    ModelPrice,
    SpendEvent,
    Task,
    Wave,
)

from ..api.conftest import AgentClient
from ..conftest import make_agent, make_task, make_wave
from .conftest import git

pytestmark = pytest.mark.django_db


@pytest.fixture
def held(repository):
    """ada working on T-1 in its own worktree (a real one), holding a claim."""
    repository.rotate_at_pct = 60
    repository.save()
    make_task(
        wave=make_wave(status=Wave.RUNNING),
        repository=repository,
        key="T-1",
        status=Task.READY,
        declared_paths=["shop/**"],
    )
    ada = make_agent(name="ada", last_heartbeat_at=timezone.now())
    dispatch.boot(ada)
    _, task = dispatch.next_work(ada)
    dispatch.claim(ada, task=task, paths=["shop/cart.py"], mode="write")
    return ada, task


def beat(agent, **fields):
    return dispatch.heartbeat(Agent.objects.get(pk=agent.pk), Beat(**fields))


def test_rotation_happens_exactly_at_the_repositorys_line(held, repository):
    ada, _ = held
    assert beat(ada, context_pct=59)["rotate"] is False
    answer = beat(ada, context_pct=60)
    assert answer["rotate"] is True and answer["rotate_at_pct"] == 60
    assert Agent.objects.get(pk=ada.pk).status == Agent.ROTATING
    repository.rotate_at_pct = 45
    repository.save()
    from fleet import heartbeats

    heartbeats._LINES.clear()  # a changed line counts within LINES_TTL (10 s); now here
    bob = make_agent(name="bob", repository=repository)
    assert beat(bob, context_pct=44)["rotate"] is False
    assert beat(bob, context_pct=45)["rotate"] is True


def test_context_is_estimated_from_proxies_when_not_reported(held, settings):
    ada, _ = held
    settings.FLEET_CONTEXT_PER_MINUTE = 0  # no clock in the figure
    answer = beat(ada, context_pct=None, tool_calls=100, files_read=10)  # 40 + 15
    assert (answer["context_pct"], answer["rotate"]) == (55, False)
    answer = beat(ada, context_pct=None, tool_calls=120, files_read=10)  # 48 + 15
    assert (answer["context_pct"], answer["rotate"]) == (63, True)
    assert beat(ada, context_pct=None)["context_pct"] == 63  # silence changes nothing


def test_the_next_session_boots_from_the_digest_with_task_lease_and_claims(held):
    ada, task = held
    for kind, body in (
        ("done", "cart totals in cents"),
        ("learned", "prices are Decimals"),
        ("next", "write the discount test"),
    ):
        dispatch.journal(ada, kind=kind, body=body, task=task)
    first = ada.sessions.get(ended_at__isnull=True)
    beat(ada, context_pct=70)
    boot = dispatch.boot(Agent.objects.get(pk=ada.pk))
    first.refresh_from_db()
    assert first.end_reason == "rotated" and first.context_peak == 70
    assert boot["session_id"] != first.pk
    assert boot["digest"] == {
        "done": ["cart totals in cents"],
        "learned": ["prices are Decimals"],
        "next": ["write the discount test"],
    }
    assert boot["task"].pk == task.pk and boot["task"].lease_epoch == task.lease_epoch
    assert Task.objects.get(pk=task.pk).status == Task.WORKING
    assert FileClaim.objects.filter(task=task, released_at__isnull=True).count() == 1
    assert Agent.objects.get(pk=ada.pk).status == Agent.WORKING


def test_checkpoints_keep_uncommitted_work_at_rotation_and_when_silent(held, settings):
    ada, task = held
    worktree = Path(task.worktree_path)
    (worktree / "shop" / "cart.py").write_text("def total(items):\n    return 42\n")
    (worktree / "shop" / "notes.md").write_text("half done\n")  # untracked
    git(worktree, "add", "shop/cart.py")  # staged, not committed
    status_before = git(worktree, "status", "--porcelain")

    beat(ada, context_pct=65)  # rotate
    assert checkpoints.sweep() == 1
    assert checkpoints.sweep() == 0  # once per event
    first = Checkpoint.objects.get(reason="rotated")
    assert first.ref == "refs/fleet/checkpoints/T-1/1" and first.task == task
    assert git(worktree, "show", f"{first.ref}:shop/notes.md") == "half done"
    assert "return 42" in git(worktree, "show", f"{first.ref}:shop/cart.py")
    assert git(worktree, "status", "--porcelain") == status_before  # nothing disturbed
    assert git(worktree, "rev-parse", f"{first.ref}^") == git(worktree, "rev-parse", "HEAD")

    Agent.objects.get(pk=ada.pk).mark_stale()
    assert checkpoints.sweep() == 1
    assert Checkpoint.objects.get(reason="stale").ref == "refs/fleet/checkpoints/T-1/2"


def test_spend_is_priced_reported_without_a_beat_and_totalled_per_scope(client, held):
    ada, task = held
    ModelPrice.objects.create(
        model_name="sonnet", usd_per_mtok_in=Decimal("3"), usd_per_mtok_out=Decimal("15")
    )
    beat(ada, context_pct=30, tokens_in=1_000_000, tokens_out=100_000, model="sonnet")
    assert SpendEvent.objects.get().cost_usd == Decimal("4.5")
    last_beat = Agent.objects.get(pk=ada.pk).last_heartbeat_at

    token = ada.issue_token()
    response = AgentClient(client, token).post(
        "spend", {"tokens_in": 10, "tokens_out": 5, "cost_usd": 0.5}
    )
    assert response.status_code == 200 and response.json()["stop"] is False
    ada.refresh_from_db()
    assert ada.last_heartbeat_at == last_beat and ada.context_pct == 30  # not a heartbeat
    assert ada.spent_usd == Decimal("5")
    session = AgentSession.objects.get(agent=ada, ended_at__isnull=True)
    assert (session.spent_usd, session.tokens_used) == (Decimal("5"), 1_100_015)
    assert session.context_peak == 30
    totals = {b.scope: b.spent_usd for b in Budget.objects.all()}
    assert totals == {s: Decimal("5") for s in ("fleet", "task", "wave", "plan", "repository")}
    bad = AgentClient(client, token).post("spend", {"cost_usd": -1})
    assert bad.status_code == 422 and SpendEvent.objects.count() == 2
