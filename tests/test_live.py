"""Live regions over the websocket: a snapshot on connect, frames for heartbeats and
events, bounded frames under a burst, and convergence after a drop."""

from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from fleet import dispatch, live
from fleet.asgi import application
from fleet.heartbeats import Beat

from .conftest import make_agent, make_user
from .test_consumers import session_cookie_for

pytestmark = pytest.mark.django_db(transaction=True)


async def watcher(view: str = "overview") -> WebsocketCommunicator:
    user = await sync_to_async(make_user)()
    cookie = await sync_to_async(session_cookie_for)(user)
    from django.contrib.auth.models import Group

    await sync_to_async(lambda: user.groups.add(Group.objects.get_or_create(name="lead")[0]))()
    comm = WebsocketCommunicator(
        application,
        f"/ws/fleet/?view={view}",
        headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie)],
    )
    connected, _ = await comm.connect()
    assert connected
    return comm


async def frames_until(comm, predicate, timeout: float = 5.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "no frame matched in time"
        frame = await comm.receive_from(timeout=left)
        if predicate(frame):
            return frame


def beat(agent, line: str) -> None:
    dispatch.heartbeat(agent, Beat(context_pct=12, status_line=line))


async def test_a_snapshot_on_connect_then_a_frame_per_heartbeat():
    agent = await sync_to_async(make_agent)(name="ada", status_line="starting")
    comm = await watcher()
    snapshot = await comm.receive_from(timeout=5)
    for region in ("fleet-summary", "fleet-problems", "fleet-agents", "fleet-waves"):
        assert f'id="{region}"' in snapshot
    assert "starting" in snapshot
    await asyncio.sleep(0.6)  # the pump's first tick: its bearings and a full frame
    await sync_to_async(beat)(agent, "writing the cart tests")
    frame = await frames_until(comm, lambda f: "writing the cart tests" in f)
    assert f'id="agent-{agent.pk}-pulse"' in frame
    await comm.disconnect()


async def test_a_burst_of_heartbeats_gives_a_bounded_number_of_frames():
    agents = [await sync_to_async(make_agent)(name=f"burst-{i}") for i in range(10)]
    comm = await watcher()
    await comm.receive_from(timeout=5)  # the snapshot
    await asyncio.sleep(0.6)

    def burst():
        for i in range(100):
            beat(agents[i % 10], f"beat {i}")

    started = time.monotonic()
    await sync_to_async(burst)()
    frames = []
    while time.monotonic() - started < 3:
        if not await comm.receive_nothing(timeout=0.3):
            frames.append(await comm.receive_from())
    elapsed = time.monotonic() - started
    assert any("beat 99" in f for f in frames)  # the last state arrived
    # At most one frame per pump tick, whatever the number of heartbeats.
    assert len(frames) <= elapsed / live.TICK + 2, len(frames)
    await comm.disconnect()


async def test_a_dropped_dashboard_converges_on_reconnect():
    agent = await sync_to_async(make_agent)(name="cyd", status_line="before")
    comm = await watcher()
    assert "before" in await comm.receive_from(timeout=5)
    await comm.disconnect()
    # Changed while nobody watched: an event (a stop) and a heartbeat.
    await sync_to_async(beat)(agent, "while you were away")
    await sync_to_async(lambda: agent.stop(reason="person"))()
    comm = await watcher()
    snapshot = await comm.receive_from(timeout=5)
    assert "while you were away" in snapshot and "stopped: person" in snapshot
    await comm.disconnect()


async def test_a_dashboard_whose_session_ended_is_closed(monkeypatch):
    from django.contrib.sessions.models import Session

    from fleet import consumers

    monkeypatch.setattr(consumers, "RECHECK", 0.0)
    agent = await sync_to_async(make_agent)(name="dee")
    comm = await watcher()
    await comm.receive_from(timeout=5)
    await asyncio.sleep(0.5)
    await sync_to_async(lambda: Session.objects.all().delete())()  # signed out elsewhere
    await sync_to_async(beat)(agent, "after the logout")
    for _ in range(10):  # frames sent before the logout may still come first
        output = await comm.receive_output(timeout=5)
        if output["type"] == "websocket.close":
            break
    assert output == {"type": "websocket.close", "code": 4401}


def test_the_polling_fallback_answers_the_snapshot_only_to_a_person_with_a_role(client):
    make_agent(name="eve", status_line="polled")
    assert client.get("/?live=1").status_code == 302  # signed out: the login page
    client.force_login(make_user("lea", "lead"))
    response = client.get("/?live=1")
    assert response.status_code == 200 and response["X-Fleet-Live"] == "1"
    html = response.content.decode()
    assert 'id="fleet-agents"' in html and "polled" in html and "<html" not in html


async def quiet_for(comm, seconds: float, forbidden: str) -> None:
    """No frame containing ``forbidden`` arrives for ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not await comm.receive_nothing(timeout=0.2):
            assert forbidden not in await comm.receive_from()


async def test_an_agent_page_gets_its_own_journal_and_pulse_live():
    ada = await sync_to_async(make_agent)(name="ada-page", status_line="start")
    other = await sync_to_async(make_agent)(name="someone-else", status_line="elsewhere")
    comm = await watcher(f"agent&key={ada.pk}")
    snapshot = await comm.receive_from(timeout=5)
    assert 'id="agent-journal"' in snapshot and 'id="fleet-agents"' not in snapshot
    await asyncio.sleep(0.6)
    await sync_to_async(dispatch.journal)(ada, kind="learned", body="prices are cents", task=None)
    frame = await frames_until(comm, lambda f: "prices are cents" in f)
    assert 'id="agent-journal"' in frame
    await sync_to_async(beat)(other, "not for this page")
    await quiet_for(comm, 1.0, "not for this page")
    await sync_to_async(beat)(ada, "ada beats")
    frame = await frames_until(comm, lambda f: "ada beats" in f)
    assert f'id="agent-{ada.pk}-pulse"' in frame and "someone-else" not in frame
    await comm.disconnect()


async def test_task_repository_and_merge_pages_follow_their_events():
    from fleet import merging
    from fleet.models import Task

    from .conftest import make_repository, make_task

    repository = await sync_to_async(make_repository)(path="/nonexistent/live")
    task = await sync_to_async(make_task)(repository=repository, status=Task.APPROVED)
    elsewhere = await sync_to_async(make_task)(status=Task.APPROVED)
    pages = {
        "task": await watcher(f"task&key={task.pk}"),
        "repository": await watcher(f"repository&key={repository.pk}"),
        "merges": await watcher("merges"),
    }
    await asyncio.sleep(0.6)
    for comm in pages.values():  # the snapshots, and the pump's first full frame
        while not await comm.receive_nothing(timeout=0.3):
            await comm.receive_from()
    # A change of another task in another repository touches neither page of ours.
    await sync_to_async(merging.enqueue)(elsewhere, by=None)
    frame = await frames_until(pages["merges"], lambda f: elsewhere.key in f)
    assert 'id="merges-queue"' in frame
    await quiet_for(pages["task"], 0.6, 'id="task-timeline"')
    await quiet_for(pages["repository"], 0.1, 'id="repository-board"')
    await sync_to_async(merging.enqueue)(task, by=None)
    timeline = await frames_until(pages["task"], lambda f: "task.enqueue_merge" in f)
    assert 'id="task-timeline"' in timeline and 'id="task-merges"' in timeline
    assert 'id="task-branch"' in timeline  # gates and diff, against main as last fetched
    board = await frames_until(pages["repository"], lambda f: 'id="repository-queue"' in f)
    assert task.key in board[board.index('id="repository-queue"') :]
    for comm in pages.values():
        await comm.disconnect()


async def test_a_page_that_does_not_exist_is_refused():
    user = await sync_to_async(make_user)("lena", "lead")
    cookie = await sync_to_async(session_cookie_for)(user)
    for query in ("view=task&key=999999", "view=agent&key=x", "view=nothing"):
        comm = WebsocketCommunicator(
            application,
            f"/ws/fleet/?{query}",
            headers=[
                (b"origin", b"http://127.0.0.1"),
                (b"host", b"127.0.0.1"),
                (b"cookie", cookie),
            ],
        )
        connected, code = await comm.connect()
        assert not connected and code == 4404, query


async def test_a_snapshot_that_fails_gives_its_watch_back(monkeypatch):
    def broken(view, key):
        raise RuntimeError("database is locked")

    monkeypatch.setattr(live, "shared_snapshot", broken)
    before = dict(live.PUMP.watched)
    user = await sync_to_async(make_user)("lena", "lead")
    cookie = await sync_to_async(session_cookie_for)(user)
    comm = WebsocketCommunicator(
        application,
        "/ws/fleet/?view=merges",
        headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1"), (b"cookie", cookie)],
    )
    with pytest.raises(RuntimeError):
        await comm.connect()
        await comm.receive_output(timeout=5)
    assert dict(live.PUMP.watched) == before


async def drain(comm, quiet: float = 0.3) -> None:
    """Read whatever frames are on their way until none comes for ``quiet`` seconds."""
    while not await comm.receive_nothing(timeout=quiet):
        await comm.receive_from()


def no_refreshes(monkeypatch) -> None:
    """No periodic frames (every agent's pulse, every page) to open a window meanwhile."""
    monkeypatch.setattr(live, "PULSE_REFRESH", 600.0)
    monkeypatch.setattr(live, "REFRESH", 600.0)


async def test_a_change_after_quiet_goes_at_once_and_a_burst_in_its_window_trails(monkeypatch):
    # A long window, so "at once" and "at the window's end" cannot be confused.
    monkeypatch.setattr(live, "TICK", 3.0)
    no_refreshes(monkeypatch)
    ada = await sync_to_async(make_agent)(name="ada-lead")
    bob = await sync_to_async(make_agent)(name="bob-trail")
    comm = await watcher()
    await comm.receive_from(timeout=5)  # the snapshot
    await comm.receive_from(timeout=5)  # the pump's first frame: everything
    await asyncio.sleep(live.TICK)  # quiet for a whole window
    await drain(comm)
    page = ("overview", "")

    beaten = time.monotonic()
    await sync_to_async(beat)(ada, "first")
    leading = await frames_until(comm, lambda f: "first" in f, timeout=live.TICK / 2)
    assert time.monotonic() - beaten < live.TICK / 2  # not held for a window
    led_at = live.PUMP.sent[page]

    # Inside the window that frame opened: three beats, one frame at its end.
    for agent, line in ((ada, "second"), (ada, "third"), (bob, "bob beats")):
        await sync_to_async(beat)(agent, line)
    trailing = await comm.receive_from(timeout=2 * live.TICK)
    assert "third" in trailing and "bob beats" in trailing  # the latest state of both
    assert "second" not in trailing and "first" not in trailing
    assert trailing.count(f'id="agent-{ada.pk}-pulse"') == 1
    assert live.PUMP.sent[page] - led_at >= live.TICK  # at the window's end, not before
    assert f'id="agent-{bob.pk}-pulse"' not in leading
    await comm.disconnect()


async def test_a_steady_stream_gets_at_most_five_frames_a_second_and_its_last_state():
    from channels.layers import get_channel_layer

    agents = [await sync_to_async(make_agent)(name=f"steady-{i}") for i in range(5)]
    comm = await watcher()
    await comm.receive_from(timeout=5)  # the snapshot
    # What the pump sends the page's group, as the layer carries it to every browser.
    layer = get_channel_layer()
    tap = await layer.new_channel()
    await layer.group_add(live.group("overview", ""), tap)
    await asyncio.sleep(0.6)
    await drain(comm)

    def stream():
        for i in range(120):  # a beat every 20 ms or so, for a few seconds
            beat(agents[i % 5], f"steady {i}")
            time.sleep(0.02)

    streaming = asyncio.ensure_future(sync_to_async(stream)())
    stamps, received = [], []
    while True:
        if await comm.receive_nothing(timeout=1.0):
            if streaming.done():
                break
            continue
        received.append(await comm.receive_from())
        stamps.append((await asyncio.wait_for(layer.receive(tap), 5))["sent"])
    await streaming
    await layer.group_discard(live.group("overview", ""), tap)
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert len(stamps) >= 3, gaps  # a stream, not one frame
    # On the wire: never more than five in any second (a frame after a slow render
    # may follow its predecessor sooner than a TICK; it is not held for it).
    assert max(sum(1 for s in stamps if t <= s < t + 1) for t in stamps) <= 5, gaps
    assert any("steady 119" in frame for frame in received)  # nothing lost
    await comm.disconnect()


async def test_each_page_has_its_own_window(monkeypatch):
    monkeypatch.setattr(live, "TICK", 3.0)
    no_refreshes(monkeypatch)
    ada = await sync_to_async(make_agent)(name="ada-own", status_line="start")
    bob = await sync_to_async(make_agent)(name="bob-own")
    overview, page = await watcher(), await watcher(f"agent&key={ada.pk}")
    for comm in (overview, page):
        await comm.receive_from(timeout=5)  # the snapshot (then maybe the pump's first frame)
    await asyncio.sleep(live.TICK)
    await drain(overview)
    await drain(page)
    await sync_to_async(beat)(bob, "bob first")
    await frames_until(overview, lambda f: "bob first" in f, timeout=live.TICK / 2)
    # The overview's window is open; ada's page has had nothing for a window: at once.
    beaten = time.monotonic()
    await sync_to_async(beat)(ada, "ada now")
    frame = await frames_until(page, lambda f: "ada now" in f, timeout=live.TICK / 2)
    assert time.monotonic() - beaten < live.TICK / 2
    assert 'id="agent-journal"' in frame  # the agent's page, in full
    # The overview has it at its window's end.
    await frames_until(overview, lambda f: "ada now" in f, timeout=2 * live.TICK)
    for comm in (overview, page):
        await comm.disconnect()


async def test_a_wave_page_moves_a_card_across_its_board_live():
    from fleet.models import Task, Wave

    from .conftest import make_task, make_wave

    wave = await sync_to_async(make_wave)(status=Wave.RUNNING)
    task = await sync_to_async(make_task)(wave=wave, status=Task.READY, key="T-900")
    other = await sync_to_async(make_task)(status=Task.READY)  # another wave's
    agent = await sync_to_async(make_agent)(name="wave-builder")
    page = await watcher(f"wave&key={wave.pk}")
    snapshot = await page.receive_from(timeout=5)
    to_do = snapshot[
        snapshot.index('id="column-to-do"') : snapshot.index('id="column-in-progress"')
    ]
    assert 'id="task-T-900"' in to_do and 'id="wave-title"' in snapshot
    await asyncio.sleep(0.6)
    while not await page.receive_nothing(timeout=0.3):
        await page.receive_from()
    await sync_to_async(other.assign)(agent=agent)  # not this wave's: no frame
    await quiet_for(page, 0.6, 'id="tasks"')
    await sync_to_async(task.assign)(agent=await sync_to_async(make_agent)(name="b2"))
    frame = await frames_until(page, lambda f: 'id="tasks"' in f)
    doing = frame[frame.index('id="column-in-progress"') : frame.index('id="column-in-review"')]
    assert 'id="task-T-900"' in doing
    await page.disconnect()


def test_ages_go_in_no_frame_the_browser_advances_them(monkeypatch):
    from datetime import timedelta

    from django.conf import settings
    from django.utils import timezone

    monkeypatch.setattr(live, "PULSE_REFRESH", 0.2)  # many chances to send ages
    monkeypatch.setattr(live, "REFRESH", 600.0)
    quiet = make_agent(name="quiet", last_heartbeat_at=timezone.now() - timedelta(seconds=7))
    stopped = make_agent(name="stopped", status="stopped")
    pump, page = live.Pump(), ("overview", "")
    pump.watched[page] = 1
    pump._collect()  # the first tick sends everything
    for _ in range(3):
        time.sleep(0.25)
        pump.opened.clear()  # the page's window is over: anything due would go now
        assert pump._collect()[1] == []
    # What the browser counts from: the age at the render, and the lease.
    row = {"pk": quiet.pk, "status": "idle", "spent_usd": 0, "context_pct": 0}
    now = timezone.now()
    html = live.pulse(row | {"last_heartbeat_at": now - timedelta(seconds=7.25)}, now)
    ttl = settings.FLEET_HEARTBEAT_TTL
    assert f'class="hb hb-ok" data-age="7.2" data-ttl="{ttl}">7s ago<' in html
    html = live.pulses([stopped.pk])
    assert 'class="hb hb-off">' in html  # a stopped agent's age stands still


def test_a_refresh_renders_beside_the_ticks_and_its_frame_ends_with_fresh_pulses(monkeypatch):
    import threading

    from fleet.models import Event

    no_refreshes(monkeypatch)
    ada = make_agent(name="ada-refresh")
    gate, real = threading.Event(), live._fresh_snapshot

    def slow(view, key):  # a large fleet's overview: it takes a while
        gate.wait(10)
        return real(view, key)

    monkeypatch.setattr(live, "_fresh_snapshot", slow)
    pump, page = live.Pump(), ("overview", "")
    pump.watched[page] = 1

    def tick() -> list[str]:
        pump.opened.clear()  # the page's window is over: what it has due goes now
        return [html for p, html in pump._collect()[1] if p == page]

    pump._collect()  # the first tick sends everything
    pump.last_full = -1e9  # the periodic refresh is due at the next read
    assert tick() == [] and page in pump.refreshing  # started, not awaited
    beat(ada, "while it renders")
    (pulses,) = tick()  # the pulses go meanwhile
    assert "while it renders" in pulses and 'id="fleet-agents"' not in pulses
    gate.set()
    began, _ = pump.refreshing[page].future.result(timeout=10)
    (frame,) = tick()
    # The page in full, read from `began` on; then the fresh pulse of the agent that beat
    # meanwhile, read at this tick (its tail: see the consumer's test below).
    assert 'id="fleet-agents"' in frame and page not in pump.refreshing
    tail_began, tail = pump.tails[page]
    assert tail_began == began and f'id="agent-{ada.pk}-pulse"' in tail
    assert "while it renders" in tail and 'id="fleet-agents"' not in tail

    # A render for an event supersedes a refresh still under way.
    gate.clear()
    pump.last_full = -1e9
    assert tick() == [] and page in pump.refreshing
    Event.objects.record("agent.note", agent=ada, payload={"note": "an event"})
    (full,) = tick()
    assert 'id="fleet-agents"' in full and page not in pump.refreshing
    gate.set()
    assert tick() == []  # its result, when it comes, is dropped

    # A page already due in full (its window still closed) needs no refresh besides.
    Event.objects.record("agent.note", agent=ada, payload={"note": "another"})
    pump.opened[page] = time.monotonic()  # a frame just went: the window is closed
    assert pump._collect()[1] == [] and pump.due[page].full  # noted, waiting
    pump.last_full = -1e9  # the refresh's tick comes while it waits
    assert pump._collect()[1] == [] and page not in pump.refreshing


async def test_a_refresh_frame_gives_a_browser_with_a_newer_snapshot_its_pulses_only():
    from fleet.consumers import FleetConsumer

    consumer = FleetConsumer()
    consumer.snapshot_at, consumer.checked_at, consumer.acks = 10.0, time.monotonic(), False
    sent = []

    async def capture(html):
        sent.append(html)

    consumer._send = capture
    frame = {"type": "fleet.fragment", "html": "<regions>", "tail": "<pulses>", "sent": 0.0}
    await consumer.fleet_fragment(frame | {"at": 11.0, "tail_at": 12.0})  # both newer
    await consumer.fleet_fragment(frame | {"at": 9.0, "tail_at": 12.0})  # regions older
    await consumer.fleet_fragment(frame | {"at": 8.0, "tail_at": 9.0})  # both older
    await consumer.fleet_fragment({"type": "fleet.fragment", "html": "<plain>", "at": 11.0})
    assert sent == ["<regions><pulses>", "<pulses>", "<plain>"]
