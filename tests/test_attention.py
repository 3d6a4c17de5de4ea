"""Attention: what newly needs a person, by role, from the events the flows write;
pushed on the live socket to the groups of the roles it is for, and no others."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from fleet import attention, gates, merging
from fleet.asgi import application
from fleet.gates import Gate
from fleet.models import Agent, Event, MergeRequest, Task

from .conftest import make_agent, make_repository, make_task, make_user
from .test_consumers import session_cookie_for
from .test_live import frames_until, quiet_for

pytestmark = pytest.mark.django_db


def new_rows(since: int) -> list[dict]:
    return list(Event.objects.filter(id__gt=since).values("id", "kind"))


def last_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def findings_posted(task: Task, reviewer: Agent, count: int) -> None:
    """What dispatch records when a fresh reviewer closes a review."""
    Event.objects.record(
        "review.findings", by=reviewer, task_id=task.pk, payload={"review": 1, "findings": count}
    )


def red_gate(task: Task) -> None:
    red = Gate("checks", "Checks", False, "unit failed on 1a2b3c4d5e")
    gates._record(task, [red], [red.as_dict()])


def test_each_kind_of_attention_is_for_its_roles():
    task = make_task(key="T-7", title="Add tax", status=Task.IN_REVIEW)
    since = last_id()
    findings_posted(task, make_agent(Agent.REVIEWER, name="rev-1"), 2)
    findings_posted(task, make_agent(Agent.REVIEWER, name="rev-2"), 0)  # a clean review
    red_gate(task)
    red_gate(task)  # the same gate still red: not new
    capped = make_agent(name="max")
    capped.stop(reason="budget")
    make_agent(name="mo").stop(reason="person")  # a person stopped it: they know
    items = attention.collect(new_rows(since))
    assert [(i.title, i.roles) for i in items] == [
        ("T-7: 2 findings wait for a verdict", ("reviewer", "lead")),
        ("T-7: a merge gate turned red", ("lead",)),
        ("max was stopped at its budget", ("manager", "lead")),
    ]
    assert items[0].url == "/reviews/" and "from rev-1" in items[0].body
    assert items[1].body == "Checks: unit failed on 1a2b3c4d5e"
    assert items[2].url.endswith("/agents/max/")


def test_a_failed_merge_is_the_leads_with_its_reason():
    builder = make_agent(name="bo")
    repository = make_repository(path="/nonexistent/att")
    task = make_task(repository=repository, key="T-8", status=Task.MERGING, assignee=builder)
    mr = MergeRequest.objects.create(task=task, repository=repository, position=1)
    since = last_id()
    merging._send_back(mr, "the merge check failed on 1a2b3c4d5e", log_text="E   assert 5 == 6")
    (item,) = attention.collect(new_rows(since))
    assert item.roles == ("lead",) and item.title == "T-8: the merge failed"
    assert item.body == "the merge check failed on 1a2b3c4d5e"


def test_frames_go_to_each_role_with_only_its_own():
    task = make_task(key="T-9", status=Task.IN_REVIEW)
    since = last_id()
    findings_posted(task, make_agent(Agent.REVIEWER, name="rev"), 1)
    make_agent(name="max").stop(reason="timeout")
    frames = dict(attention.frames(new_rows(since)))
    assert set(frames) == {("attention", r) for r in ("lead", "reviewer", "manager")}
    assert "T-9" in frames[("attention", "reviewer")]
    assert "max" not in frames[("attention", "reviewer")]
    assert "wall-clock" in frames[("attention", "manager")]
    assert "T-9" not in frames[("attention", "manager")]
    assert "T-9" in frames[("attention", "lead")] and "max" in frames[("attention", "lead")]
    assert all('id="fleet-attention"' in html for html in frames.values())


def test_attention_goes_on_the_pumps_full_refresh_tick_too():
    """The tick that renders every page reads (and marks seen) the new events as well:
    what they need of a person goes on that tick, not never."""
    from fleet import live

    pump = live.Pump()
    pump._collect()  # the first tick: it starts from here
    task = make_task(key="T-11", status=Task.IN_REVIEW)
    findings_posted(task, make_agent(Agent.REVIEWER, name="rev"), 1)
    pump.last_full -= live.REFRESH  # this tick is a full refresh
    _, frames = pump._collect()
    assert pump.last_full > 0 and "T-11" in dict(frames)[("attention", "reviewer")]
    assert pump._collect()[1] == []  # seen: not sent twice


async def watcher_as(role: str, view: str = "overview") -> WebsocketCommunicator:
    from django.contrib.auth.models import Group

    user = await sync_to_async(make_user)(f"{role}-person", role)
    cookie = await sync_to_async(session_cookie_for)(user)
    await sync_to_async(lambda: user.groups.add(Group.objects.get_or_create(name=role)[0]))()
    comm = WebsocketCommunicator(
        application,
        f"/ws/fleet/?view={view}",
        headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie)],
    )
    connected, _ = await comm.connect()
    assert connected
    return comm


@pytest.mark.django_db(transaction=True)
async def test_the_pump_pushes_attention_to_the_people_it_is_for():
    task = await sync_to_async(make_task)(key="T-10", status=Task.IN_REVIEW)
    reviewer = await sync_to_async(make_agent)(Agent.REVIEWER, name="rev")
    people = {role: await watcher_as(role) for role in ("reviewer", "manager")}
    await asyncio.sleep(0.6)
    for comm in people.values():  # the snapshots and the pump's first full frame
        while not await comm.receive_nothing(timeout=0.3):
            await comm.receive_from()
    await sync_to_async(findings_posted)(task, reviewer, 3)
    frame = await frames_until(people["reviewer"], lambda f: 'id="fleet-attention"' in f)
    assert "T-10: 3 findings wait for a verdict" in frame
    await quiet_for(people["manager"], 0.8, 'id="fleet-attention"')
    for comm in people.values():
        await comm.disconnect()
