"""Live pages: the regions a page shows live, rendered once per change for every
browser watching it, and the pump that notices changes.

Each web process runs one pump (started by its first websocket). Every tick it reads
the events appended since the last tick and the agents that heartbeated meanwhile
(heartbeats are not events), renders the affected regions once, and sends them as one
frame to that process's browsers, so a browser gets at most ``1 / TICK`` frames a
second whatever the number of agents. A browser that (re)connects gets a full
snapshot of its page's regions first, so it converges after any drop. Without a
websocket the page polls ``?live=1`` for the same snapshot.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections
from django.db.models import Count, Q
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import format_html

from fleet.models import Agent, Event, Task, Wave
from fleet.templatetags.fleet_tags import age

log = logging.getLogger("fleet.live")

TICK = 0.2  # seconds between pump ticks: at most five frames a second per browser
REFRESH = 10.0  # seconds between full snapshots (heartbeat ages move on by themselves)
WINDOW = 500  # ids re-read behind the newest (PostgreSQL may commit ids out of order)
VIEWS = ("overview",)
OVERVIEW_REGIONS = ("summary", "problems", "agents", "waves", "tasks")


# This process, uniquely (PIDs repeat across containers and restarts).
PROCESS = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def group(view: str) -> str:
    """This process's group for a view: each process's pump serves its own browsers,
    so with several processes on Redis no browser gets a frame twice."""
    return f"live.{view}.{PROCESS}"


def heartbeat_health(status: str, seconds: float | None) -> str:
    """ok / amber / red as the heartbeat lease nears expiry ("off" once stopped)."""
    if status == Agent.STOPPED:
        return "off"
    ttl = settings.FLEET_HEARTBEAT_TTL
    if seconds is None or seconds >= ttl:
        return "red"
    return "amber" if seconds >= ttl / 2 else "ok"


def _agents(ids: list[int] | None = None) -> list[Agent]:
    now = timezone.now()
    agents = Agent.objects.select_related("current_task", "repository").annotate(
        unread=Count("inbox", filter=Q(inbox__acked_at__isnull=True))
    )
    if ids is not None:
        agents = agents.filter(pk__in=ids)
    agents = list(agents)
    for agent in agents:
        agent.age = agent.heartbeat_age(now)
        agent.rotate_due = agent.context_pct >= settings.FLEET_CONTEXT_ROTATE_PCT
    return agents


def overview_context() -> dict[str, Any]:
    agents = _agents()
    statuses = Counter(agent.status for agent in agents)
    return {
        "agents": agents,
        "waves": list(
            Wave.objects.select_related("plan").with_progress().order_by("plan", "number")
        ),
        "tasks": list(
            Task.objects.open()
            .select_related("wave__plan", "repository", "assignee")
            .order_by("wave__number", "key")
        ),
        "statuses": [(s, statuses.get(s, 0)) for s, _ in Agent.STATUS_CHOICES],
        "problems": [a for a in agents if a.status in (Agent.STALE, Agent.STOPPED)],
        **_constants(),
    }


def _constants() -> dict[str, Any]:
    return {
        "rotate_pct": settings.FLEET_CONTEXT_ROTATE_PCT,
        "heartbeat_ttl": settings.FLEET_HEARTBEAT_TTL,
    }


def snapshot(view: str) -> str:
    """Every live region of a page, each a top-level element with its id."""
    if view != "overview":
        raise ValueError(f"no live view {view!r}")
    context = overview_context()
    return "".join(
        render_to_string(f"fleet/overview.html#{region}", context) for region in OVERVIEW_REGIONS
    )


PULSE_FIELDS = ("pk", "status", "last_heartbeat_at", "context_pct", "spent_usd", "status_line")


def pulse(agent: Any, now=None) -> str:
    """The part of an agent's card a heartbeat changes (heartbeat age, context gauge,
    spend, status line), as one element with its own id. Built with ``format_html``
    rather than the template engine: a busy fleet sends hundreds of these a second."""
    now = now or timezone.now()
    get = agent.get if isinstance(agent, dict) else lambda name: getattr(agent, name)
    pk, status, last = get("pk"), get("status"), get("last_heartbeat_at")
    seconds = None if last is None else (now - last).total_seconds()
    health, ttl = heartbeat_health(status, seconds), settings.FLEET_HEARTBEAT_TTL
    rotate, context = settings.FLEET_CONTEXT_ROTATE_PCT, get("context_pct")
    line = get("status_line")
    return format_html(
        '<div class="pulse" id="agent-{}-pulse"><dl>'
        '<dt>Heartbeat</dt><dd class="hb hb-{}" title="Stale after {}s without a heartbeat">'
        "{}</dd>"
        '<dt>Context</dt><dd><span class="gauge" title="Rotation at {}%"><meter min="0" '
        'max="100" low="{}" high="{}" optimum="0" value="{}">{}%</meter></span> {}%</dd>'
        "<dt>Spend</dt><dd>${}</dd></dl>{}</div>",
        pk,
        health,
        ttl,
        age(seconds),
        rotate,
        rotate,
        rotate,
        context,
        context,
        context,
        f"{get('spent_usd'):.2f}",
        format_html('<p class="status-line">{}</p>', line) if line else "",
    )


def pulses(ids: list[int]) -> str:
    """The pulses of these agents, from one query."""
    now = timezone.now()
    rows = Agent.objects.filter(pk__in=ids).values(*PULSE_FIELDS)
    return "".join(pulse(row, now) for row in rows)


class Pump:
    """One per process; see the module docstring."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.last_id: int | None = None
        self.seen: set[int] = set()
        self.beat_seen: dict[int, Any] = {}
        self.last_full = 0.0
        self.frames = 0
        self.watchers = 0

    def watch(self, delta: int) -> None:
        """A browser of this process started (+1) or stopped (-1) watching; the pump
        runs while anyone watches, and stops (closing its connection) when nobody does."""
        self.watchers = max(0, self.watchers + delta)
        if self.watchers:
            self.ensure_running()

    def ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self.task is not None and not self.task.done():
            if self.loop is loop:
                return
            self.task.cancel()  # a pump of another (test) loop
        self.loop, self.last_id, self.seen, self.beat_seen = loop, None, set(), {}
        self.task = loop.create_task(self._run())

    async def _run(self) -> None:
        layer = get_channel_layer()
        while self.watchers:
            try:
                at = time.time()
                html = await sync_to_async(self.collect, thread_sensitive=False)()
                if html:
                    self.frames += 1
                    await layer.group_send(
                        group("overview"), {"type": "fleet.fragment", "html": html, "at": at}
                    )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the live pump failed a tick; trying again")
            await asyncio.sleep(TICK)
        await sync_to_async(close_old_connections, thread_sensitive=False)()

    def collect(self) -> str:
        """What changed since the last tick, rendered: the whole overview after any
        event (or every REFRESH seconds), else the pulses of agents that heartbeated."""
        close_old_connections()
        try:
            window = Event.objects.filter(id__gt=(self.last_id or 0) - WINDOW)
            if self.last_id is None:  # first tick: start from here
                self.last_id = Event.objects.order_by("-id").values_list("id", flat=True).first()
                self.last_id = self.last_id or 0
                window = Event.objects.filter(id__gt=self.last_id - WINDOW)
                self.seen = set(window.values_list("id", flat=True))
                self.last_full = time.monotonic()
                self._beats()
                # Whatever changed between the first browser's snapshot and this
                # baseline would otherwise wait for the next refresh: send it all.
                return snapshot("overview")
            ids = set(window.values_list("id", flat=True))
            new = ids - self.seen
            self.seen = ids
            if ids:
                self.last_id = max(self.last_id, max(ids))
            beats = self._beats()
            if new or time.monotonic() - self.last_full >= REFRESH:
                self.last_full = time.monotonic()
                return snapshot("overview")
            if beats:
                return pulses(beats)
            return ""
        finally:
            close_old_connections()

    def _beats(self) -> list[int]:
        """Agents whose heartbeat time changed since we last looked. A beat is
        stamped when its batch starts and may commit a little later, so the query
        looks a few seconds back and compares with what it saw."""
        since = timezone.now() - timedelta(seconds=5)
        changed = []
        current = dict(
            Agent.objects.filter(last_heartbeat_at__gt=since).values_list("pk", "last_heartbeat_at")
        )
        for pk, stamp in current.items():
            if self.beat_seen.get(pk) != stamp:
                changed.append(pk)
        self.beat_seen = current
        return changed


PUMP = Pump()
