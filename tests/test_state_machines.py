"""Each legal transition writes exactly one Event; each illegal one raises and changes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from fleet.models import Agent, Event, SharedFile, Task, TransitionError, Wave

from .conftest import make_agent, make_task, make_user, make_wave

pytestmark = pytest.mark.django_db


def snapshot(obj) -> tuple[dict, int]:
    row = type(obj).objects.filter(pk=obj.pk).values().get()
    return row, Event.objects.count()


def assert_illegal(obj, action: str, **kwargs) -> TransitionError:
    before = snapshot(obj)
    status_before = obj.status
    with pytest.raises(TransitionError) as exc:
        getattr(obj, action)(**kwargs)
    assert snapshot(obj) == before
    assert obj.status == status_before
    return exc.value


def assert_one_event(obj, action: str, kind: str, **kwargs) -> Event:
    count = Event.objects.count()
    event = getattr(obj, action)(**kwargs)
    assert Event.objects.count() == count + 1
    assert event.kind == kind
    obj_db = type(obj).objects.get(pk=obj.pk)
    assert obj_db.status == obj.status == event.payload["to"]
    return event


# --- Task -----------------------------------------------------------------


def test_task_walks_the_happy_path_with_one_event_per_step():
    lead = make_user("lead1", "lead")
    task = make_task()
    builder = make_agent()
    assert_one_event(task, "make_ready", "task.make_ready", by=lead)
    event = assert_one_event(task, "assign", "task.assign", agent=builder)
    assert event.actor == f"agent:{builder.name}"
    assert task.assignee == builder and task.attempt == 1 and task.lease_epoch == 1
    assert task.lease_is_live()
    assert_one_event(task, "start", "task.start", by=builder)
    assert_one_event(task, "submit", "task.submit", commit="a" * 40, by=builder)
    assert task.head_sha == "a" * 40 and task.lease_expires_at is None
    assert_one_event(task, "request_changes", "task.request_changes", by=lead, reason="tests")
    assert_one_event(task, "resume", "task.resume", by=builder)
    assert task.lease_epoch == 2
    assert_one_event(task, "submit", "task.submit", commit="b" * 40, by=builder)
    assert_one_event(task, "approve", "task.approve", by=lead)
    assert_one_event(task, "enqueue_merge", "task.enqueue_merge", by=lead)
    event = assert_one_event(task, "mark_merged", "task.mark_merged", commit="c" * 40)
    assert event.actor == "fleet" and event.task_id == task.pk and event.wave_id == task.wave_id
    assert task.status == Task.MERGED


@pytest.mark.parametrize(
    "action,kwargs",
    [
        ("start", {"by": None}),
        ("submit", {"commit": "x", "by": None}),
        ("approve", {"by": None}),
        ("enqueue_merge", {"by": None}),
        ("mark_merged", {}),
        ("resume", {"by": None}),
        ("expire_lease", {}),
    ],
)
def test_task_illegal_transitions_from_draft_change_nothing(action, kwargs):
    task = make_task()
    err = assert_illegal(task, action, **kwargs)
    assert "draft" in str(err)


def test_merged_task_cannot_be_cancelled_or_failed():
    task = make_task(status=Task.MERGED)
    assert_illegal(task, "cancel", by=None)
    assert_illegal(task, "fail", by=None, reason="x")


def test_only_builders_can_be_assigned():
    task = make_task(status=Task.READY)
    err = assert_illegal(task, "assign", agent=make_agent(Agent.REVIEWER))
    assert err.code == "role"


def test_no_assignment_outside_a_running_wave_or_to_an_unavailable_agent():
    draft = make_task(wave=make_wave(), status=Task.READY)
    err = assert_illegal(draft, "assign", agent=make_agent())
    assert err.code == "wave_not_running"
    task = make_task(status=Task.READY)
    stopped = make_agent(status=Agent.STOPPED, stop_reason="budget")
    assert assert_illegal(task, "assign", agent=stopped).code == "agent_unavailable"


def test_a_builder_that_lost_its_lease_cannot_submit_over_its_successor():
    task = make_task(status=Task.READY)
    first, second = make_agent(), make_agent()
    task.assign(agent=first, ttl=30)
    stale_copy = Task.objects.get(pk=task.pk)
    task.expire_lease(now=timezone.now() + timedelta(seconds=60))
    task.assign(agent=second)
    task.start(by=second, epoch=2)
    err = assert_illegal(stale_copy, "submit", commit="a" * 40, by=first)
    assert err.code == "not_assignee"
    assert assert_illegal(task, "submit", commit="a" * 40, by=second, epoch=1).code == (
        "stale_lease"
    )
    assert_one_event(task, "submit", "task.submit", commit="b" * 40, by=second, epoch=2)


def test_a_lapsed_lease_cannot_start_or_submit():
    task = make_task(status=Task.READY)
    builder = make_agent()
    task.assign(agent=builder)
    Task.objects.filter(pk=task.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert assert_illegal(task, "start", by=builder).code == "lease_lapsed"


def test_ending_a_task_releases_the_agent_holding_it():
    task = make_task(status=Task.READY)
    builder = make_agent()
    task.assign(agent=builder)
    builder.start_work(task=task)
    event = assert_one_event(task, "fail", "task.fail", by=None, reason="tests red")
    assert event.payload["released"] == [builder.name]
    builder.refresh_from_db()
    assert builder.current_task is None and builder.status == Agent.IDLE
    assert_one_event(task, "retry", "task.retry", by=None)
    assert task.assignee is None
    task.assign(agent=builder)
    task.fail(by=None, reason="again")
    assert_one_event(task, "cancel", "task.cancel", by=None)


def test_stale_in_memory_copy_cannot_repeat_a_transition():
    task = make_task(status=Task.READY)
    other_copy = Task.objects.get(pk=task.pk)
    task.assign(agent=make_agent())
    assert other_copy.status == Task.READY  # stale, but the row is locked and re-read
    assert_illegal(other_copy, "assign", agent=make_agent())


def test_expired_lease_returns_task_to_ready_keeping_branch_and_worktree():
    task = make_task(status=Task.READY, worktree_path="/wt/T-1", base_sha="d" * 40)
    builder = make_agent()
    task.assign(agent=builder, ttl=60)
    builder.start_work(task=task)
    assert_illegal(task, "expire_lease")  # still live
    later = timezone.now() + timedelta(seconds=120)
    event = assert_one_event(task, "expire_lease", "task.expire_lease", now=later)
    assert event.payload["agent"] == builder.name
    assert event.payload["released"] == [builder.name]
    builder.refresh_from_db()
    assert (builder.status, builder.current_task) == (Agent.IDLE, None)
    assert task.assignee is None and task.lease_expires_at is None and task.attempt == 1
    task.refresh_from_db()
    assert (task.worktree_path, task.base_sha, task.lease_epoch) == ("/wt/T-1", "d" * 40, 1)


def test_renewing_with_a_stale_epoch_is_refused():
    task = make_task(status=Task.READY)
    builder = make_agent()
    task.assign(agent=builder, ttl=60)
    task.renew_lease(agent=builder, epoch=1, ttl=600)
    assert task.lease_expires_at > timezone.now() + timedelta(seconds=500)
    before = snapshot(task)
    with pytest.raises(TransitionError) as exc:
        task.renew_lease(agent=builder, epoch=0)
    assert exc.value.code == "stale_lease"
    with pytest.raises(TransitionError):
        task.renew_lease(agent=make_agent(), epoch=1)
    assert snapshot(task) == before


def test_database_refuses_a_lease_without_an_assignee():
    task = make_task()
    with pytest.raises(IntegrityError), transaction.atomic():
        Task.objects.filter(pk=task.pk).update(status=Task.WORKING, lease_expires_at=timezone.now())


# --- Wave -----------------------------------------------------------------


def test_wave_walks_draft_to_verified():
    lead = make_user("lead2", "lead")
    wave = make_wave()
    task = make_task(wave=wave)
    event = assert_one_event(wave, "approve", "wave.approve", by=lead)
    assert event.actor_user == lead and wave.approved_by == lead and wave.approved_at
    assert_one_event(wave, "start", "wave.start", by=lead)
    assert_one_event(wave, "block", "wave.block", reason="T failed")
    assert_one_event(wave, "unblock", "wave.unblock", by=lead)
    assert_illegal(wave, "mark_merged")  # its task is not merged
    Task.objects.filter(pk=task.pk).update(status=Task.MERGED)
    assert_one_event(wave, "mark_merged", "wave.mark_merged")
    assert_one_event(wave, "verify", "wave.verify", by=lead)


def test_wave_approval_needs_a_green_preflight():
    wave = make_wave()
    err = assert_illegal(wave, "approve", by=None)
    assert err.code == "preflight" and "no tasks" in str(err)
    task = make_task(wave=wave)
    shared = SharedFile.objects.create(wave=wave, path="src/routes.py")
    err = assert_illegal(wave, "approve", by=None)
    assert "src/routes.py" in str(err)
    shared.strategy, shared.owner_task = SharedFile.OWNER, task
    shared.save()
    wave.approve(by=None)
    assert wave.status == Wave.APPROVED


def test_next_wave_starts_only_after_the_previous_is_verified():
    first = make_wave(status=Wave.MERGED)
    second = make_wave(plan=first.plan, number=2, status=Wave.APPROVED)
    err = assert_illegal(second, "start")
    assert err.code == "previous_wave"
    first.verify(by=None)
    assert_one_event(second, "start", "wave.start")


def test_agents_do_not_approve_waves():
    wave = make_wave()
    make_task(wave=wave)
    assert assert_illegal(wave, "approve", by=make_agent(Agent.ORCHESTRATOR)).code == "role"


def test_wave_cannot_be_approved_twice():
    wave = make_wave(status=Wave.APPROVED)
    assert_illegal(wave, "approve", by=None)
    assert_illegal(wave, "verify", by=None)


# --- Agent ----------------------------------------------------------------


def test_agent_lifecycle():
    lead = make_user("lead3", "lead")
    agent = make_agent()
    task = make_task(status=Task.READY)
    task.assign(agent=agent)
    assert_one_event(agent, "start_work", "agent.start_work", task=task)
    assert agent.current_task == task
    assert_one_event(agent, "rotate", "agent.rotate")
    assert_one_event(agent, "complete_rotation", "agent.complete_rotation")
    assert agent.status == Agent.WORKING  # back to its task
    assert_one_event(agent, "mark_stale", "agent.mark_stale")
    assert_one_event(agent, "revive", "agent.revive")
    assert agent.status == Agent.WORKING
    assert_one_event(agent, "finish", "agent.finish")
    assert agent.current_task is None
    assert_one_event(agent, "stop", "agent.stop", reason="budget", by=lead)
    assert agent.stop_reason == "budget"
    assert_one_event(agent, "resume", "agent.resume", by=lead)
    assert agent.status == Agent.IDLE and agent.stop_reason == ""


def test_agent_illegal_transitions_change_nothing():
    agent = make_agent(status=Agent.STOPPED, stop_reason="person")
    assert_illegal(agent, "start_work", task=make_task())
    assert_illegal(agent, "stop", reason="budget")
    assert_illegal(agent, "revive")
    idle = make_agent()
    assert_illegal(idle, "finish")
    assert_illegal(idle, "complete_rotation")
    assert_illegal(idle, "stop", reason="nonsense")


def test_an_agent_works_only_on_a_task_leased_to_it():
    task = make_task(status=Task.READY)
    owner, other = make_agent(), make_agent()
    err = assert_illegal(other, "start_work", task=task)
    assert err.code == "not_assignee"
    task.assign(agent=owner)
    assert_illegal(other, "start_work", task=task)
    assert_illegal(make_agent(Agent.REVIEWER), "start_work", task=task)
    assert_one_event(owner, "start_work", "agent.start_work", task=task)


def test_only_reviewers_start_reviews():
    task = make_task(status=Task.IN_REVIEW)
    assert_illegal(make_agent(), "start_review", task=task)
    reviewer = make_agent(Agent.REVIEWER)
    assert_one_event(reviewer, "start_review", "agent.start_review", task=task)
    assert reviewer.status == Agent.REVIEWING and reviewer.current_task == task


def test_database_refuses_a_busy_agent_without_a_task():
    agent = make_agent()
    with pytest.raises(IntegrityError), transaction.atomic():
        Agent.objects.filter(pk=agent.pk).update(status=Agent.WORKING)


def test_tokens_are_stored_hashed_and_revocable():
    agent = make_agent()
    token = agent.issue_token()
    agent.refresh_from_db()
    assert token not in agent.token_hash and len(agent.token_hash) == 64
    assert Agent.objects.by_token(token).get() == agent
    agent.revoke_token(by=None)
    assert not Agent.objects.by_token(token).exists()
    assert Event.objects.filter(kind="agent.token_revoked", agent=agent).count() == 1
