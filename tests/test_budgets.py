"""Budgets of every scope and the layers that enforce them, each on its own: the
server stops agents in the transaction that records spend or hands out work, the
worker's sweep re-counts every cap from the raw spend, and the database refuses a
stored total above its cap. (The agent client's own layer: tests/agent/test_cli.py.)"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase as HypothesisTestCase

from fleet import budgets, dispatch
from fleet.heartbeats import Beat
from fleet.models import Agent, AgentSession, Budget, Event, SpendEvent, Task, TransitionError, Wave

from .conftest import make_agent, make_repository, make_task, make_wave

pytestmark = pytest.mark.django_db


def working(name: str, task: Task) -> Agent:
    agent = make_agent(name=name, last_heartbeat_at=timezone.now())
    task.assign(agent=agent)
    task.start(by=agent)
    agent.start_work(task=task)
    return agent


@pytest.fixture
def wave_fleet():
    """A running wave with a $5 budget, two builders at work on it and a third task
    ready; a builder elsewhere."""
    repo = make_repository()
    wave = make_wave(status=Wave.RUNNING)
    other_wave = make_wave(status=Wave.RUNNING)
    tasks = [
        make_task(wave=wave, repository=repo, status=Task.READY, key=f"T-{i}") for i in (1, 2, 3)
    ]
    elsewhere = make_task(wave=other_wave, repository=repo, status=Task.READY, key="T-9")
    ada, bob = working("ada", tasks[0]), working("bob", tasks[1])
    eve = working("eve", elsewhere)
    budget = Budget.objects.create(scope="wave", wave=wave, limit_usd=Decimal("5"))
    return budget, ada, bob, eve


def test_the_server_alone_stops_every_agent_of_a_spent_wave(
    wave_fleet, django_capture_on_commit_callbacks
):
    budget, ada, bob, eve = wave_fleet
    assert dispatch.heartbeat(ada, Beat(context_pct=10, cost_usd=3.0))["stop"] is False
    # The spender is stopped in the transaction; the rest of its scope right after it.
    with django_capture_on_commit_callbacks(execute=True):
        answer = dispatch.heartbeat(ada, Beat(context_pct=10, cost_usd=2.5))
    assert answer["stop"] is True and answer["budget_left_usd"] == 0
    budget.refresh_from_db()
    assert budget.spent_usd == Decimal("5")  # the stored total stops at the cap
    assert SpendEvent.objects.filter(agent=ada).count() == 2  # the raw spend is all kept
    for agent in (ada, bob, eve):
        agent.refresh_from_db()
    assert (ada.status, ada.stop_reason) == (Agent.STOPPED, "budget")
    assert (bob.status, bob.stop_reason) == (Agent.STOPPED, "budget")  # same wave
    assert eve.status == Agent.WORKING  # another wave
    assert Event.objects.filter(kind="agent.stop", agent=bob).exists()

    # No more work from that wave: a fresh builder is refused with the scope named.
    fresh = make_agent(name="fay")
    with pytest.raises(TransitionError) as refused:
        dispatch.next_work(fresh)
    assert refused.value.code == "budget_spent" and "wave 1" in refused.value.message
    assert Task.objects.get(key="T-3").status == Task.READY


def test_a_tokens_cap_and_the_fleet_cap_stop_too(wave_fleet, django_capture_on_commit_callbacks):
    _, ada, _, eve = wave_fleet
    Budget.objects.create(scope="fleet", limit_tokens=1000)
    with django_capture_on_commit_callbacks(execute=True):
        answer = dispatch.heartbeat(eve, Beat(context_pct=5, tokens_in=800, tokens_out=300))
    assert answer["stop"] is True
    ada.refresh_from_db()
    assert ada.status == Agent.STOPPED  # the fleet's cap covers everyone
    assert Budget.objects.get(scope="fleet").spent_tokens == 1000
    with pytest.raises(TransitionError, match="the fleet"):
        dispatch.next_work(make_agent(name="gus"))
    assert Agent.objects.get(name="gus").status == Agent.STOPPED  # marked, not only refused


def test_the_worker_alone_recounts_from_the_raw_spend_and_stops(wave_fleet):
    budget, ada, bob, eve = wave_fleet
    # Spend written behind the running totals' back (a bug, a restore, a race).
    for agent, task_key in ((ada, "T-1"), (bob, "T-2")):
        SpendEvent.objects.create(
            agent=agent, task=Task.objects.get(key=task_key), cost_usd=Decimal("2.6")
        )
    budget.refresh_from_db()
    assert budget.spent_usd == 0 and Agent.objects.get(pk=ada.pk).status == Agent.WORKING
    assert budgets.sweep() == 2
    budget.refresh_from_db()
    assert budget.spent_usd == Decimal("5")
    assert Event.objects.get(kind="budget.recount").payload["counted_usd"] == "5.2000"
    assert {a.status for a in Agent.objects.filter(name__in=["ada", "bob"])} == {Agent.STOPPED}
    assert Agent.objects.get(pk=eve.pk).status == Agent.WORKING
    assert budgets.sweep() == 0  # nothing more to do


def test_the_worker_stops_agents_past_the_wall_clock_limits(wave_fleet, settings):
    _, ada, bob, eve = wave_fleet
    settings.FLEET_SESSION_MAX_SECONDS = 3600
    settings.FLEET_TASK_MAX_SECONDS = 7200
    AgentSession.objects.create(agent=ada, started_at=timezone.now() - timedelta(hours=2))
    Event.objects.filter(kind="task.assign", task__key="T-2").update(
        created_at=timezone.now() - timedelta(hours=3)
    )
    assert budgets.sweep() == 2
    assert {(a.name, a.stop_reason) for a in Agent.objects.filter(status=Agent.STOPPED)} == {
        ("ada", "timeout"),
        ("bob", "timeout"),
    }


def test_the_database_refuses_a_stored_total_above_its_cap(wave_fleet):
    budget = wave_fleet[0]
    with pytest.raises(IntegrityError), transaction.atomic():
        Budget.objects.filter(pk=budget.pk).update(spent_usd=Decimal("5.01"))
    with pytest.raises(IntegrityError), transaction.atomic():
        Budget.objects.create(
            scope="task", task=Task.objects.get(key="T-3"), limit_tokens=10, spent_tokens=11
        )


def test_budget_left_is_the_tightest_cap_in_scope(wave_fleet):
    _, ada, _, _ = wave_fleet
    Budget.objects.create(scope="agent", agent=ada, limit_usd=Decimal("10"))
    Budget.objects.create(scope="task", task=ada.current_task, limit_usd=Decimal("2"))
    assert dispatch.heartbeat(ada, Beat(context_pct=1, cost_usd=0.5))["budget_left_usd"] == 1.5
    assert dispatch.budget_left(ada) == 1.5


class TestNoAgentWorksPastACap(HypothesisTestCase):
    """Whatever the interleaving of spend reports and work pulls (each one its own
    transaction, as concurrent requests are), no agent is left working on work a
    spent budget covers, and none is handed work past a cap."""

    @hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["beat", "pull"]),
                st.integers(0, 2),
                st.decimals(min_value=0, max_value=3, places=2),
            ),
            max_size=12,
        )
    )
    def test_interleavings(self, ops):
        repo = make_repository()
        wave = make_wave(status=Wave.RUNNING)
        for _ in range(4):
            make_task(wave=wave, repository=repo, status=Task.READY)
        Budget.objects.create(scope="wave", wave=wave, limit_usd=Decimal("4"))
        Budget.objects.create(scope="fleet", limit_usd=Decimal("6"))
        agents = [make_agent(last_heartbeat_at=timezone.now()) for _ in range(3)]
        for op, i, cost in ops:
            agent = Agent.objects.get(pk=agents[i].pk)
            try:
                with self.captureOnCommitCallbacks(execute=True):
                    if op == "pull":
                        dispatch.next_work(agent)
                    else:
                        dispatch.heartbeat(agent, Beat(context_pct=1, cost_usd=float(cost)))
            except TransitionError:
                pass
            for budget in Budget.objects.all():
                if budgets.is_spent(budget):
                    busy = Agent.objects.filter(budgets.agents_filter(budget)).exclude(
                        status=Agent.STOPPED
                    )
                    assert not busy.filter(status=Agent.WORKING).exists(), budget
        for budget in Budget.objects.exclude(limit_usd=None):
            assert budget.spent_usd <= budget.limit_usd


def test_a_person_resumes_a_stopped_agent_only_once_its_cap_is_raised(client, wave_fleet):
    from .conftest import make_user

    budget, ada, _, _ = wave_fleet
    dispatch.heartbeat(ada, Beat(context_pct=10, cost_usd=6.0))
    url = f"/agents/{ada.name}/resume/"
    client.force_login(make_user("rita", "reviewer"))
    assert client.post(url).status_code == 403
    client.force_login(make_user("mona", "manager"))
    page = client.post(url, follow=True).content.decode()
    assert "Not resumed" in page and "wave 1" in page and "Raise that cap first" in page
    ada.refresh_from_db()
    assert ada.status == Agent.STOPPED
    budget.limit_usd = Decimal("20")
    budget.save()
    client.post(url)
    ada.refresh_from_db()
    assert ada.status == Agent.WORKING and ada.stop_reason == ""
    assert Event.objects.filter(kind="agent.resume", actor="user:mona").exists()


def test_the_problems_panel_warns_at_80_percent_and_says_when_a_cap_is_spent(wave_fleet):
    from fleet import live

    budget, ada, _, _ = wave_fleet
    dispatch.heartbeat(ada, Beat(context_pct=10, cost_usd=4.2))
    texts = [p.text for p in live.problems([], [])]
    assert texts == ["has spent $4.20 of $5.00 of its budget (80% or more)."]
    dispatch.heartbeat(Agent.objects.get(name="bob"), Beat(context_pct=10, cost_usd=1))
    (problem,) = live.problems([], [])
    assert problem.level == "bad" and "its agents are stopped" in problem.text
    assert problem.subject.startswith("wave 1 of") and problem.url.endswith("#budget")


def test_a_budget_at_80_percent_and_spent_notifies_the_webhooks_in_its_scope(wave_fleet):
    from fleet.models import WebhookDelivery

    budget, ada, _, _ = wave_fleet
    repo = ada.current_task.repository
    repo.webhook_url = "http://127.0.0.1:9/hook"
    repo.save()
    make_repository(webhook_url="http://127.0.0.1:9/other")  # not in the wave's scope
    dispatch.heartbeat(ada, Beat(context_pct=1, cost_usd=3.9))
    assert not WebhookDelivery.objects.exists()
    dispatch.heartbeat(ada, Beat(context_pct=1, cost_usd=0.2))  # 82%
    dispatch.heartbeat(ada, Beat(context_pct=1, cost_usd=0.1))  # still a warning: no repeat
    (warning,) = WebhookDelivery.objects.all()
    assert warning.kind == "budget_warning" and warning.repository == repo
    assert (
        warning.payload["scope"].startswith("wave 1") and warning.payload["limit_usd"] == "5.0000"
    )
    dispatch.heartbeat(Agent.objects.get(name="bob"), Beat(context_pct=1, cost_usd=1))
    assert list(WebhookDelivery.objects.order_by("pk").values_list("kind", flat=True)) == [
        "budget_warning",
        "budget_spent",
    ]


def test_a_stopped_agent_keeps_no_lease_and_can_neither_claim_nor_submit(wave_fleet):
    _, ada, _, _ = wave_fleet
    task = ada.current_task
    dispatch.heartbeat(ada, Beat(context_pct=1, cost_usd=6))  # stopped at the wave's cap
    task.refresh_from_db()
    expires = task.lease_expires_at
    dispatch.heartbeat(Agent.objects.get(pk=ada.pk), Beat(context_pct=2, epoch=task.lease_epoch))
    task.refresh_from_db()
    assert task.lease_expires_at == expires  # ignoring "stop" renews nothing
    ada = Agent.objects.get(pk=ada.pk)
    for call in (
        lambda: dispatch.claim(ada, task=task, paths=["a.py"], mode="write"),
        lambda: dispatch.submit(ada, task=task, commit="ab" * 20, epoch=task.lease_epoch),
    ):
        with pytest.raises(TransitionError) as refused:
            call()
        assert refused.value.code == "stopped"
    assert Task.objects.get(pk=task.pk).status == Task.WORKING


def test_a_spent_wave_waits_while_the_rest_of_the_fleet_works(wave_fleet):
    budget, _, _, _ = wave_fleet
    Budget.objects.filter(pk=budget.pk).update(spent_usd=Decimal("5"))
    elsewhere = make_task(
        wave=make_wave(status=Wave.RUNNING), repository=make_repository(), status=Task.READY
    )
    _, task = dispatch.next_work(make_agent(name="fay"))
    assert task.pk == elsewhere.pk  # not T-3 of the spent wave, and no refusal
    with pytest.raises(TransitionError, match="wave 1"):
        dispatch.next_work(make_agent(name="gus"))  # only the spent wave's work is left


def test_the_task_clock_restarts_when_a_task_comes_back_or_a_person_resumes(wave_fleet, settings):
    _, ada, _, _ = wave_fleet
    settings.FLEET_TASK_MAX_SECONDS = 3600
    old = timezone.now() - timedelta(hours=2)
    Event.objects.filter(kind="task.assign").update(created_at=old)
    task = ada.current_task
    task.submit(commit="ab" * 20, by=ada)
    task.request_changes(by=None, reason="findings")
    Agent.objects.filter(pk=ada.pk).update(status=Agent.IDLE, current_task=None)
    dispatch.next_work(Agent.objects.get(pk=ada.pk))  # back to it: task.resume
    assert Agent.objects.get(pk=ada.pk).status == Agent.WORKING
    assert budgets.sweep() == 2  # bob and eve, held since two hours ago
    assert Agent.objects.get(pk=ada.pk).status == Agent.WORKING

    # A person resumes bob: a new clock, and the session that timed out is over.
    bob = Agent.objects.get(name="bob")
    assert bob.stop_reason == "timeout"
    bob.resume(by=None)
    assert budgets.sweep() == 0


def test_the_admin_audits_and_clamps_a_cap(client, wave_fleet):
    from .conftest import make_user

    budget = wave_fleet[0]
    Budget.objects.filter(pk=budget.pk).update(spent_usd=Decimal("3"))
    admin = make_user("root-admin")
    admin.is_staff = admin.is_superuser = True
    admin.save()
    client.force_login(admin)
    url = f"/admin/fleet/budget/{budget.pk}/change/"
    form = {"scope": "wave", "wave": budget.wave_id, "limit_usd": "1", "limit_tokens": ""}
    response = client.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    budget.refresh_from_db()
    assert budget.limit_usd == Decimal("3") and budget.spent_usd == Decimal("3")  # "stop now"
    event = Event.objects.get(kind="budget.set")
    assert event.actor == "user:root-admin" and event.payload["where"] == "admin"


def test_a_person_who_resumes_an_agent_restarts_its_session_clock(wave_fleet, settings):
    _, ada, _, _ = wave_fleet
    settings.FLEET_SESSION_MAX_SECONDS = 3600
    AgentSession.objects.create(agent=ada, started_at=timezone.now() - timedelta(hours=7))
    ada.stop(reason="person", by=None)
    ada.resume(by=None)
    assert budgets.sweep() == 0
    assert Agent.objects.get(pk=ada.pk).status == Agent.WORKING


def test_agents_are_not_stopped_for_a_cap_raised_meanwhile(wave_fleet):
    budget, ada, _, _ = wave_fleet
    Budget.objects.filter(pk=budget.pk).update(spent_usd=Decimal("5"))
    Budget.objects.filter(pk=budget.pk).update(limit_usd=Decimal("50"))  # raised
    assert budgets.stop_in_scope_later(budget.pk) == 0
    assert Agent.objects.get(pk=ada.pk).status == Agent.WORKING
