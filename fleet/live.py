"""Live pages: the regions a page shows live, rendered once per change for every
browser watching it, and the pump that notices changes.

A live page is a view name and a key: ``overview`` (its key is the filter query),
``agent``, ``task``, ``repository`` and ``wave`` (their key is the primary key), and
the ``budget``, ``merges``, ``reviews`` and ``agents`` pages (no key). Each web process
runs one pump while any browser of it watches. Every tick it reads the events appended
since the last tick and the agents that heartbeated meanwhile (heartbeats are not
events), notes what each page they touch has due (the overview, the event's task,
agent, repository and wave, the merge queue, the review queue, the agents list), and
renders each page whose window is over once, as one frame to that page's group.
A page's window is the TICK after its last frame: a change to a page that has had
no frame for TICK goes at once (a heartbeat of this process pokes the pump; other
processes' changes are polled every TICK), and whatever arrives inside the window
goes in one frame at its end, so a browser gets at most ``1 / TICK`` frames a
second whatever the number of agents, and the last state always arrives.
Heartbeats only send the agents' pulses (the part of a card a heartbeat changes) to
the overview and the agents list. New events that need a person (``fleet.attention``)
also go at once, one fragment per role, to the groups of the people in that role.
A browser that (re)connects gets a full snapshot of its page first, so it converges
after any drop; without a websocket the page polls ``?live=1`` for the same snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections
from django.db.models import Count, OuterRef, Q, Subquery
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.html import conditional_escape
from django.utils.safestring import mark_safe

from fleet import attention
from fleet.models import (
    Agent,
    Budget,
    CheckRun,
    Event,
    MergeRequest,
    Repository,
    Runtime,
    Task,
    Wave,
)
from fleet.templatetags.fleet_tags import age

log = logging.getLogger("fleet.live")

TICK = 0.2  # a page's window after a frame (and the poll): at most five frames a second
PULSE_REFRESH = 5.0  # seconds between full renders of agent and budget pages (spend)
REFRESH = 30.0  # seconds between full snapshots (catches changes that wrote no event)
WINDOW = 500  # ids re-read behind the newest (PostgreSQL may commit ids out of order)
BUDGET_WARN = Decimal("0.8")  # spend at this share of a cap is a warning

# This process, uniquely (PIDs repeat across containers and restarts).
PROCESS = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def group(view: str, key: str = "") -> str:
    """This process's group for a page: each process's pump serves its own browsers,
    so with several processes on Redis no browser gets a frame twice. (Group names
    allow few characters, hence the digest of the key.)"""
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return f"live.{view}.{digest}.{PROCESS}"


def heartbeat_health(status: str, seconds: float | None) -> str:
    """ok / amber / red as the heartbeat lease nears expiry ("off" once stopped)."""
    if status == Agent.STOPPED:
        return "off"
    ttl = settings.FLEET_HEARTBEAT_TTL
    if seconds is None or seconds >= ttl:
        return "red"
    return "amber" if seconds >= ttl / 2 else "ok"


def budget_state(spent: Decimal, cap: Decimal | None) -> str:
    """ "" without a cap, else ok / warn (80%) / over."""
    if cap is None:
        return ""
    if spent >= cap:
        return "over"
    return "warn" if spent >= cap * BUDGET_WARN else "ok"


def _budget_cap() -> Subquery:
    return Subquery(Budget.objects.filter(agent=OuterRef("pk")).values("limit_usd")[:1])


# --- the overview -----------------------------------------------------------


def overview_filters(query: Mapping[str, Any]) -> dict[str, str]:
    """The overview's filters from a query (unknown values are dropped)."""
    filters = {}
    role = query.get("role") or ""
    if role in dict(Agent.ROLE_CHOICES):
        filters["role"] = role
    repository = query.get("repository") or ""
    if repository and Repository.objects.filter(slug=repository).exists():
        filters["repository"] = repository
    return filters


def overview_key(filters: Mapping[str, str]) -> str:
    return urlencode(sorted(filters.items()))


def _agents(ids: list[int] | None = None, **filters: Any) -> list[Agent]:
    now = timezone.now()
    agents = (
        Agent.objects.select_related("current_task", "repository")
        .annotate(
            unread=Count("inbox", filter=Q(inbox__acked_at__isnull=True)),
            budget_usd=_budget_cap(),
        )
        .filter(**filters)
        .order_by("name")
    )
    if ids is not None:
        agents = agents.filter(pk__in=ids)
    agents = list(agents)
    for agent in agents:
        agent.age = agent.heartbeat_age(now)
        agent.rotate_due = agent.context_pct >= settings.FLEET_CONTEXT_ROTATE_PCT
        agent.budget = budget_state(agent.spent_usd, agent.budget_usd)
    return agents


def agent_rows(**filters: Any) -> list[Agent]:
    """Every agent (or those ``filters`` keep) with what its card or row shows: unread
    inbox, budget cap and state, heartbeat age. A few queries whatever their number."""
    return _agents(**filters)


@dataclass
class Problem:
    """One thing a person should look at, with where to look."""

    level: str  # "bad" or "warn"
    subject: str
    text: str
    url: str = ""


def problems(agents: list[Agent], tasks: list[Task]) -> list[Problem]:
    """Stale and stopped agents, budget warnings, red gates and failed merges: what a
    lead supervises by exception. Two queries whatever the number of tasks."""
    from django.urls import reverse

    found: list[Problem] = []
    for agent in agents:
        url = reverse("fleet-agent", args=[agent.name])
        holding = f" while holding {agent.current_task.key}" if agent.current_task else ""
        if agent.status == Agent.STALE:
            found.append(
                Problem(
                    "bad", agent.name, f"is silent: last heartbeat {age(agent.age)}{holding}.", url
                )
            )
        elif agent.status == Agent.STOPPED and agent.stop_reason == "budget":
            found.append(Problem("bad", agent.name, f"was stopped at its budget{holding}.", url))
        elif agent.status == Agent.STOPPED:
            found.append(
                Problem("warn", agent.name, f"is stopped ({agent.stop_reason}){holding}.", url)
            )
        if agent.budget in ("warn", "over") and agent.status != Agent.STOPPED:
            found.append(
                Problem(
                    "bad" if agent.budget == "over" else "warn",
                    agent.name,
                    f"has spent ${agent.spent_usd:.2f} of its ${agent.budget_usd:.2f} budget.",
                    url,
                )
            )
    from fleet import budgets

    shared = (
        Budget.objects.exclude(scope="agent")
        .filter(budgets.CAPPED)
        .select_related("wave__plan", "plan", "repository", "task")
    )
    for budget, fraction in budgets.warnings(list(shared)):
        found.append(
            Problem(
                "bad" if fraction >= 1 else "warn",
                budgets.describe(budget),
                f"has spent {budgets.figures(budget)} of its budget"
                + (": its agents are stopped." if fraction >= 1 else " (80% or more)."),
                _budget_url(budget),
            )
        )
    by_pk = {task.pk: task for task in tasks}
    for task in tasks:
        if task.ownership and not task.ownership.get("ok", True):
            found.append(
                Problem(
                    "bad",
                    task.key,
                    "ownership gate is red: it changed files outside its paths or owned by others.",
                    reverse("fleet-task", args=[task.key]),
                )
            )
        if task.status not in (Task.IN_REVIEW, Task.APPROVED):
            continue
        # The other gates as the worker last worked them out (these three have
        # entries of their own below).
        for gate in task.gates or []:
            if gate["ok"] or not gate.get("needs_person", True):
                continue
            if gate["key"] in ("ownership", "checks", "review"):
                continue
            found.append(
                Problem(
                    "bad",
                    task.key,
                    f"{gate['name'].lower()} gate is red: {gate['reason']}.",
                    reverse("fleet-task", args=[task.key]) + "#task-gates",
                )
            )
    latest: dict[tuple[int, str], CheckRun] = {}
    runs = CheckRun.objects.filter(task__in=list(by_pk)).order_by("created_at", "pk")
    for run in runs.only("task_id", "name", "status", "commit_sha"):
        latest[(run.task_id, run.name)] = run
    for (task_id, name), run in sorted(latest.items()):
        task = by_pk[task_id]
        if run.status in ("failed", "error") and run.commit_sha == task.head_sha:
            found.append(
                Problem(
                    "bad",
                    task.key,
                    f"check {name} {run.status}.",
                    reverse("fleet-task", args=[task.key]),
                )
            )
    from fleet.adjudication import queue

    counts = Counter(f.review.task_id for f in queue(tasks=list(by_pk)))
    for task_id, n in sorted(counts.items()):
        task = by_pk[task_id]
        found.append(
            Problem(
                "warn",
                task.key,
                f"has {n} review finding{'s' if n != 1 else ''} waiting for a person.",
                reverse("fleet-reviews"),
            )
        )
    last_merge: dict[int, MergeRequest] = {}
    merges = MergeRequest.objects.filter(task__in=list(by_pk)).order_by("created_at", "pk")
    for mr in merges.only("task_id", "result", "step"):
        last_merge[mr.task_id] = mr
    for task_id, mr in sorted(last_merge.items()):
        if mr.result == MergeRequest.FAILED:
            task = by_pk[task_id]
            found.append(
                Problem(
                    "bad",
                    task.key,
                    f"merge failed at {mr.step}; it went back to its builder.",
                    reverse("fleet-task", args=[task.key]),
                )
            )
    return found


def _budget_url(budget: Budget) -> str:
    from django.urls import reverse

    if budget.scope == "wave":
        return reverse("fleet-wave", args=[budget.wave.plan.slug, budget.wave.number]) + "#budget"
    if budget.scope == "task":
        return reverse("fleet-task", args=[budget.task.key])
    if budget.scope == "repository":
        return reverse("fleet-repository", args=[budget.repository.slug])
    if budget.scope == "plan":
        return reverse("fleet-plan", args=[budget.plan.slug])
    return ""


def overview_context(filters: Mapping[str, str] | None = None) -> dict[str, Any]:
    filters = dict(filters or {})
    agent_filter, task_filter = {}, {}
    if "role" in filters:
        agent_filter["role"] = filters["role"]
    if "repository" in filters:
        agent_filter["repository__slug"] = filters["repository"]
        task_filter["repository__slug"] = filters["repository"]
    agents = _agents(**agent_filter)
    statuses = Counter(agent.status for agent in agents)
    waves = Wave.objects.select_related("plan").with_progress().order_by("plan", "number")
    if task_filter:
        waves = waves.filter(pk__in=Task.objects.filter(**task_filter).values("wave_id"))
    tasks = list(
        Task.objects.open()
        .filter(**task_filter)
        .select_related("wave__plan", "repository", "assignee")
        .order_by("wave__number", "key")
    )
    return {
        "agents": agents,
        "waves": list(waves),
        "tasks": tasks,
        "statuses": [(s, statuses.get(s, 0)) for s, _ in Agent.STATUS_CHOICES],
        "problems": problems(agents, tasks),
        "filters": filters,
        "repositories": list(Repository.objects.order_by("name").values_list("slug", "name")),
        "roles": [r for r, _ in Agent.ROLE_CHOICES],
    }


# --- the pages ------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """A live page: its regions (each a top-level element with an id) for a key, and
    which keys of it an event touches."""

    template: str
    regions: tuple[str, ...]
    context: Callable[[str], dict[str, Any] | None]  # None: no such object
    touched: Callable[[dict[str, Any]], set[str] | None]  # an event row -> keys; None: all


def _overview(key: str) -> dict[str, Any]:
    from urllib.parse import parse_qsl

    return overview_context(dict(parse_qsl(key)))  # canonical: see resolve()


def _int_key(key: str) -> int | None:
    return int(key) if key.isascii() and key.isdecimal() else None


def _keys(*pks: int | None) -> set[str]:
    return {str(pk) for pk in pks if pk}


def _agent(key: str) -> dict[str, Any] | None:
    from fleet.views.agents import agent_context

    pk = _int_key(key)
    return None if pk is None else agent_context(pk)


def _task(key: str) -> dict[str, Any] | None:
    from fleet.views.tasks import task_live_context

    pk = _int_key(key)
    return None if pk is None else task_live_context(pk)


def _repository(key: str) -> dict[str, Any] | None:
    from fleet.views.tasks import repository_context

    pk = _int_key(key)
    return None if pk is None else repository_context(pk)


def _wave(key: str) -> dict[str, Any] | None:
    from fleet.views.plans import wave_board_context

    pk = _int_key(key)
    return None if pk is None else wave_board_context(pk)


def _merges(key: str) -> dict[str, Any]:
    from fleet.views.tasks import merges_context

    return merges_context()


def _reviews(key: str) -> dict[str, Any]:
    from fleet.views.reviews import reviews_context

    return reviews_context()


def _agent_list(key: str) -> dict[str, Any]:
    from fleet.views.agents import agents_context

    return agents_context()


def _moves_agents(row: dict[str, Any]) -> set[str]:
    """The agents page shows each agent's status, task and token: agents' own events
    and any that names an agent (an assignment, a review taken) move it."""
    if row["kind"] == "agent.journal":
        return set()
    if row["kind"].startswith("agent.") or row["agent_id"] or row["actor_agent_id"]:
        return {""}
    return set()


# Events that change what waits in the review queue: findings posted and decided,
# reviews, and tasks moving (a resubmit makes an accepted finding resolvable; a merge
# settles its findings).
REVIEW_KINDS = ("finding.", "review.", "task.")


def _budget(key: str) -> dict[str, Any]:
    from fleet.views.budget import budget_context

    return budget_context(key)


# Events that move the budget page (spend itself arrives with heartbeats, which the
# page follows at the pump's full refresh).
BUDGET_KINDS = ("agent.stop", "agent.resume", "budget.", "task.mark_merged")

PAGES: dict[str, Page] = {
    "overview": Page(
        "fleet/overview.html",
        ("summary", "problems", "agents", "waves", "tasks"),
        _overview,
        lambda row: set() if row["kind"] == "agent.journal" else None,
    ),
    "agent": Page(
        "fleet/agent.html",
        ("runtime", "agent-card", "sessions", "journal", "inbox", "spend"),
        _agent,
        lambda row: _keys(row["agent_id"], row["actor_agent_id"], row["task__assignee_id"]),
    ),
    "task": Page(
        "fleet/task.html",
        ("task-facts", "task-gates", "task-branch", "task-threads", "task-findings")
        + ("timeline", "merges", "checks"),
        _task,
        lambda row: _keys(row["task_id"]),
    ),
    "repository": Page(
        "fleet/repository.html",
        ("board", "claims", "queue"),
        _repository,
        lambda row: _keys(row["repository_id"], row["task__repository_id"]),
    ),
    "wave": Page(
        "fleet/wave.html",
        ("wave-title", "wave-board"),
        _wave,
        lambda row: _keys(row["wave_id"], row["task__wave_id"]),
    ),
    "budget": Page(
        "fleet/budget.html",
        ("budget-caps", "budget-charts", "budget-tables"),
        _budget,
        lambda row: {""} if row["kind"].startswith(BUDGET_KINDS) else set(),
    ),
    "reviews": Page(
        "fleet/reviews.html",
        ("review-queue",),
        _reviews,
        lambda row: {""} if row["kind"].startswith(REVIEW_KINDS) else set(),
    ),
    "agents": Page(
        "fleet/agents.html",
        ("agents-table",),
        _agent_list,
        _moves_agents,
    ),
    "merges": Page(
        "fleet/merges.html",
        ("queue", "batches", "recent"),
        _merges,
        lambda row: {""} if row["kind"].startswith(("merge.", "task.")) else set(),
    ),
}


class NoSuchPage(LookupError):
    pass


KEYLESS = ("merges", "reviews", "agents")  # one page for everyone: no key


def resolve(view: str, key: str) -> str:
    """The canonical key of a page a browser asks for (NoSuchPage if there is none)."""
    if view not in PAGES:
        raise NoSuchPage(f"no live view {view!r}")
    if view == "overview":
        from urllib.parse import parse_qsl

        return overview_key(overview_filters(dict(parse_qsl(key))))
    if view in KEYLESS:
        return ""
    if view == "budget":
        from fleet.views.budget import budget_key

        return budget_key(key)
    model = {"agent": Agent, "task": Task, "repository": Repository, "wave": Wave}[view]
    pk = _int_key(key)
    if pk is None or not model.objects.filter(pk=pk).exists():
        raise NoSuchPage(f"no {view} {key!r}")
    return str(pk)


def snapshot(view: str, key: str = "") -> str:
    """Every live region of a page, each a top-level element with its id."""
    page = PAGES.get(view)
    if page is None:
        raise NoSuchPage(f"no live view {view!r}")
    context = page.context(key)
    if context is None:
        raise NoSuchPage(f"no {view} {key!r}")
    return "".join(
        render_to_string(f"{page.template}#{region}", context) for region in page.regions
    )


# Snapshots render on their own small pool: a storm of reconnecting dashboards (every
# browser after a restart) queues there, not in front of handshakes, heartbeats or
# the pump.
RENDERERS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fleet-snapshot")
# The pump's periodic full refreshes, one page after another, on a thread of their own:
# neither in the way of the pump's ticks nor of the snapshots of browsers connecting.
REFRESHER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-refresh")
SNAPSHOT_REUSE = 2.0  # seconds a snapshot may serve other browsers that connect
_rendered: dict[tuple[str, str], tuple[float, str]] = {}
_rendering: dict[tuple[str, str], threading.Lock] = {}
_guard = threading.Lock()


def shared_snapshot(view: str, key: str) -> tuple[float, str]:
    """(when its rendering began, the snapshot) for a browser that just joined the
    page's group and counts among its watchers. One render serves every browser that
    connects meanwhile, as long as that is exact: another browser already watches
    (so the pump is running for the page) and the pump has sent the page nothing
    rendered since this snapshot began — a change after it then reaches the new
    browser in a frame (it is in the group), and the consumer keeps frames rendered
    after the snapshot's start."""
    page = (view, key)
    with _guard:
        lock = _rendering.setdefault(page, threading.Lock())
    with lock:
        cached = _rendered.get(page)
        if (
            cached is not None
            and time.monotonic() - cached[0] < SNAPSHOT_REUSE
            and PUMP.watched.get(page, 0) >= 2
            and PUMP.sent_at.get(page, 0.0) < cached[0]
        ):
            return cached
        close_old_connections()
        try:
            started = time.monotonic()
            fresh = (started, snapshot(view, key))
        finally:
            close_old_connections()
        with _guard:
            if len(_rendered) > 20:  # forget pages nobody opened lately
                for old in [p for p, (at, _) in _rendered.items() if started - at > SNAPSHOT_REUSE]:
                    _rendered.pop(old, None)
                    _rendering.pop(old, None)
            _rendered[page] = fresh
        return fresh


async def render_snapshot(view: str, key: str) -> tuple[float, str]:
    return await sync_to_async(shared_snapshot, thread_sensitive=False, executor=RENDERERS)(
        view, key
    )


# --- pulses ---------------------------------------------------------------

PULSE_FIELDS = ("pk", "status", "last_heartbeat_at", "context_pct", "spent_usd", "status_line")


def pulse(agent: dict[str, Any], now=None) -> str:
    """The part of an agent's card a heartbeat changes (heartbeat age, context gauge,
    spend against budget, status line), as one element with its own id. Built by
    plain formatting rather than the template engine or ``format_html`` (eight times
    slower): a busy fleet sends hundreds of these a second."""
    now = now or timezone.now()
    get = agent.get
    pk, status, last = get("pk"), get("status"), get("last_heartbeat_at")
    seconds = None if last is None else (now - last).total_seconds()
    # A freshly spawned agent has not beaten yet: that is news, not a silence (the
    # stale sweep gives it the heartbeat TTL from its spawn before calling it silent).
    newborn = last is None and status != Agent.STALE
    health, rotate, context = (
        "off" if newborn else heartbeat_health(status, seconds),
        settings.FLEET_CONTEXT_ROTATE_PCT,
        get("context_pct"),
    )
    spent, cap = get("spent_usd"), get("budget_usd")
    line = get("status_line")
    state = budget_state(spent, cap)
    # Plain formatting: every value but the status line is a number or one of a few
    # fixed words; the status line is the agent's, and escaped.
    of = f" of ${cap:.2f}" if cap is not None else ""
    said = f'<p class="status-line">{conditional_escape(line)}</p>' if line else ""
    # The age moves on by itself: the browser advances it from here, its colour turning
    # as the lease nears its end (live.js), so no frame goes for it.
    ticks = (
        f' data-age="{max(0.0, seconds):.1f}" data-ttl="{int(settings.FLEET_HEARTBEAT_TTL)}"'
        if seconds is not None and health != "off"
        else ""
    )
    return mark_safe(
        f'<div class="pulse" id="agent-{int(pk)}-pulse"><dl>'
        f'<dt>Heartbeat</dt><dd class="hb hb-{health}"{ticks}>'
        f"{'none yet' if newborn else age(seconds)}</dd>"
        f'<dt>Context</dt><dd><span class="gauge" title="Rotation at {rotate}%"><meter min="0" '
        f'max="100" low="{rotate}" high="{rotate}" optimum="0" value="{context}">{context}%'
        f"</meter></span> {context}%</dd>"
        f'<dt>Spend</dt><dd class="spend spend-{state or "none"}">${spent:.2f}{of}</dd></dl>'
        f"{said}</div>"
    )


def pulses(ids: list[int] | None) -> str:
    """The pulses of these agents (None: every agent), from one query."""
    now = timezone.now()
    rows = Agent.objects.annotate(budget_usd=_budget_cap()).order_by("pk")
    if ids is not None:
        rows = rows.filter(pk__in=ids)
    return "".join(pulse(row, now) for row in rows.values(*PULSE_FIELDS, "budget_usd"))


# --- the pump -------------------------------------------------------------

PULSED = ("overview", "agents")  # pages that show agents' pulses

EVENT_FIELDS = (
    "id",
    "kind",
    "task_id",
    "agent_id",
    "actor_agent_id",
    "repository_id",
    "task__repository_id",
    "task__assignee_id",
    "wave_id",
    "task__wave_id",
)


@dataclass
class Due:
    """What a page has to be sent at its next frame: all of it (``full``), or the
    pulses of these agents (they beat)."""

    full: bool = False
    beats: set[int] = field(default_factory=set)
    refreshed: tuple[float, str, set[int]] | None = None  # a Refresh done: (began, html, beats)


@dataclass
class Refresh:
    """A page's periodic full render, under way on a thread of its own rather than in
    the pump's tick (the overview of a large fleet takes a second or more, and the
    pulses must not wait for it), and the agents that beat since it was asked for,
    whose pulses go after it, fresh, in the same frame. The future's result is (when
    the render began, its html)."""

    future: Future
    beats: set[int] = field(default_factory=set)


class Pump:
    """One per process; see the module docstring."""

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.wake: asyncio.Event | None = None
        self.last_id: int | None = None
        self.seen: set[int] = set()
        self.beat_seen: dict[int, Any] = {}
        self.beats_read: datetime | None = None  # when _beats last looked
        self.beat_rows: dict[int, dict] = {}  # the newest pulse row of agents with one due
        self.screen_seen: dict[int, Any] = {}
        self.last_full = self.last_pulses = 0.0
        self.read_at = 0.0  # when the pump last read what changed
        # Changed on the event loop, copied by the pump's worker thread: hence the lock.
        self.lock = threading.Lock()
        self.watched: Counter[tuple[str, str]] = Counter()
        self.sent_at: dict[tuple[str, str], float] = {}  # `at` of the page's last frame
        self.sent: dict[tuple[str, str], float] = {}  # when that frame went to the layer
        self.sends: dict[tuple[str, str], deque[float]] = {}  # when its last frames did
        self.opened: dict[tuple[str, str], float] = {}  # when the read for it began
        self.due: dict[tuple[str, str], Due] = {}  # read, waiting for the page's window
        self.refreshing: dict[tuple[str, str], Refresh] = {}
        # A refresh's frame: when its regions were read, and the fresh pulses after them.
        self.tails: dict[tuple[str, str], tuple[float, str]] = {}
        self.poked: set[int] | None = set()  # agents that beat since the last read (None: any)

    def watch(self, view: str, key: str, delta: int) -> None:
        """A browser of this process started (+1) or stopped (-1) watching a page; the
        pump runs while anyone watches, and stops (closing its connection) when nobody
        does. A browser watches before its snapshot starts, so every tick that reads a
        change after that renders its page too."""
        page = (view, key)
        with self.lock:
            self.watched[page] += delta
            if self.watched[page] <= 0:
                del self.watched[page]
                self.sent_at.pop(page, None)
                self.sent.pop(page, None)  # (what it had due goes at the next read)
                self.sends.pop(page, None)
                self.opened.pop(page, None)
        if self.watched:
            self.ensure_running()

    def poke(self, agents: Iterable[int] | None = None) -> None:
        """Something changed in this process (a heartbeat batch of these agents was
        recorded; None: anything): a page that may have a frame gets it now rather
        than at the next poll."""
        if self.wake is not None and self.loop is not None:
            ids = None if agents is None else frozenset(agents)
            with contextlib.suppress(RuntimeError):  # that loop has closed (tests)
                self.loop.call_soon_threadsafe(self._poked, ids)

    def _poked(self, ids: frozenset[int] | None) -> None:
        if self.poked is not None:
            self.poked = None if ids is None else self.poked | ids
        self.wake.set()

    def ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self.task is not None and not self.task.done():
            if self.loop is loop:
                return
            self.task.cancel()  # a pump of another (test) loop
        self.loop, self.last_id, self.seen, self.beat_seen = loop, None, set(), {}
        self.beats_read = None
        self.screen_seen, self.due, self.beat_rows, self.poked = {}, {}, {}, set()
        self.refreshing, self.tails = {}, {}
        self.wake = asyncio.Event()
        self.task = loop.create_task(self._run())

    async def _run(self) -> None:
        layer = get_channel_layer()
        while self.watched:
            self.wake.clear()  # a poke from now on means another tick
            self.poked = set()
            try:
                at, frames = await sync_to_async(self.collect, thread_sensitive=False)()
                for page, html in frames:
                    tail = self.tails.pop(page, None)
                    # Reads for a page are TICK apart, but renders vary in length: on
                    # the wire too, at most five frames in any second (a frame waits
                    # only when the page's fifth-last left less than a second ago).
                    count = max(1, round(1 / TICK))
                    sends = self.sends.get(page)
                    if sends is None or sends.maxlen != count:
                        sends = self.sends[page] = deque(sends or (), maxlen=count)
                    if len(sends) == count:
                        wait = sends[0] + count * TICK - time.monotonic()
                        if wait > 0:
                            await asyncio.sleep(wait)
                    self.sent_at[page] = at  # before sending: see shared_snapshot
                    sent = self.sent[page] = time.monotonic()
                    sends.append(sent)
                    message = {"type": "fleet.fragment", "html": html, "at": at, "sent": sent}
                    if tail is not None:
                        # A refresh: its regions were read from tail[0] on, its pulses
                        # at this tick (a browser whose snapshot began between the
                        # two takes the pulses only: see FleetConsumer.fleet_fragment).
                        message.update(at=tail[0], tail=tail[1], tail_at=at)
                    await layer.group_send(group(*page), message)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the live pump failed a tick; trying again")
                await asyncio.sleep(TICK)
            await self._pause()
        self.task = None  # a browser that comes during the cleanup starts a new pump
        await sync_to_async(close_old_connections, thread_sensitive=False)()
        if self.watched:
            self.ensure_running()

    def _opens(self, page: tuple[str, str]) -> float:
        """When the page's window ends: it may have its next frame from then on. (From
        the start of the read its last frame came from, so that a steady stream gets a
        frame every TICK, not every TICK and a read.)"""
        return self.opened.get(page, -TICK) + TICK

    def _wanted(self) -> float:
        """When a page the pokes since the last read concern may have its frame (a
        heartbeat shows on the pages of pulses and on its agent's page only; an event
        may show anywhere)."""
        poked = self.poked
        pages = [
            page
            for page in self.watched
            if poked is None
            or page[0] in PULSED
            or (page[0] == "agent" and _int_key(page[1]) in poked)
        ]
        return min(map(self._opens, pages), default=float("inf"))

    async def _pause(self) -> None:
        """Until the next tick: the next poll (changes other processes made), the end
        of the window of a page with a frame due, or — once poked — the moment a page
        the poke concerns may have a frame: at once when it has had none for TICK
        (the leading edge), else at its window's end, which then carries everything
        that arrived inside the window (the trailing frame)."""
        wanted = float("inf")
        while self.watched:
            if self.wake.is_set():  # what the pokes want stays in self.poked
                self.wake.clear()
                wanted = min(wanted, self._wanted())
            until = min([self.read_at + TICK, wanted] + [self._opens(page) for page in self.due])
            delay = until - time.monotonic()
            if delay <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)

    def collect(self) -> tuple[float, list[tuple[tuple[str, str], str]]]:
        """What changed since the last tick, noted against every watched page it
        shows on; then the frames of the pages whose window is over, each rendered
        once: in full when events touched it (and every page every REFRESH seconds),
        else the pulses of the agents that beat (their ages move on in the browser).

        Returns ``at`` with the frames: a moment after the change was read and before
        anything was rendered, so a frame is never older than what it shows (what a
        page had due from earlier reads was read earlier still). The pages are those
        watched once the changes were read: a browser watches before its snapshot
        starts, so a change its snapshot missed reaches it here."""
        close_old_connections()
        try:
            return self._collect()
        finally:
            close_old_connections()

    def _read(
        self,
    ) -> tuple[float, dict, list[dict] | None, list[int], bool, bool, list]:
        """(at, watched pages, new event rows or None for "render everything", agents
        that heartbeated, whether agent and budget pages are due in full (every
        PULSE_REFRESH), whether every page is due a refresh (every REFRESH), and the
        new event rows even when everything renders: they are marked seen, and what
        needs a person goes from them)."""
        now = self.read_at = time.monotonic()
        every = refresh = False
        if self.last_id is None:  # first tick: start from here, and send everything
            self.last_id = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
            self.seen = set(
                Event.objects.filter(id__gt=self.last_id - WINDOW).values_list("id", flat=True)
            )
            self._beats()
            self.last_full = self.last_pulses = now
            rows, beats, new_rows = None, [], []
        else:
            ids = set(
                Event.objects.filter(id__gt=self.last_id - WINDOW).values_list("id", flat=True)
            )
            new = ids - self.seen
            rows = list(Event.objects.filter(id__in=new).values(*EVENT_FIELDS)) if new else []
            new_rows = rows
            self.seen = ids
            if ids:
                self.last_id = max(self.last_id, max(ids))
            beats = self._beats()
            if now - self.last_full >= REFRESH:
                self.last_full = self.last_pulses = now
                every = refresh = True
            elif now - self.last_pulses >= PULSE_REFRESH:
                self.last_pulses = now
                every = True
        if rows is not None and beats:
            self.beat_rows.update(_pulse_rows(beats))
        with self.lock:
            watched = dict(self.watched)
        return time.monotonic(), watched, rows, beats, every, refresh, new_rows

    def _collect(self) -> tuple[float, list[tuple[tuple[str, str], str]]]:
        at, watched, rows, beats, every, refresh, new_rows = self._read()
        self._note(watched, rows, beats, every, refresh)
        self.tails = {}  # (none left unless a tick failed half way)
        # What newly needs a person is not held back by any page's window (nor lost
        # on the first tick, which renders every page without the rows).
        needs = attention.frames(new_rows) if new_rows else []
        self._refreshed()
        ready = sorted(page for page in self.due if self._opens(page) <= self.read_at)
        if not ready:
            return at, needs
        for page in ready:
            self.opened[page] = self.read_at
        now, pulsed = timezone.now(), {}
        in_full = {page for page in ready if self.due[page].full}
        for page in in_full & set(self.refreshing):
            self.refreshing.pop(page).future.cancel()  # this render supersedes it
        frames = self._render(in_full)
        for page in ready:
            due = self.due.pop(page)
            if due.full:
                continue
            if due.refreshed is not None:
                began, html, since = due.refreshed
                fresh = _pulse_rows(sorted(since | due.beats)) if since | due.beats else {}
                frames.append((page, html))
                self.tails[page] = (began, "".join(pulse(fresh[pk], now) for pk in sorted(fresh)))
                continue
            # The pulses (the same for every page of pulses due them: render once).
            which = tuple(sorted(due.beats & set(self.beat_rows)))
            if which not in pulsed:
                pulsed[which] = "".join(pulse(self.beat_rows[pk], now) for pk in which)
            if pulsed[which]:
                frames.append((page, pulsed[which]))
        frames.sort(key=lambda frame: frame[0])
        frames += needs
        keep = set().union(*(due.beats for due in self.due.values()))
        self.beat_rows = {pk: row for pk, row in self.beat_rows.items() if pk in keep}
        return at, frames

    def _note(
        self,
        watched: Mapping[tuple[str, str], int],
        rows: list[dict] | None,
        beats: list[int],
        every: bool,
        refresh: bool = False,
    ) -> None:
        """Add what this read found to what each watched page has due."""
        for page in [page for page in self.due if page not in watched]:
            del self.due[page]  # nobody watches it any more
        for page in [page for page in self.refreshing if page not in watched]:
            del self.refreshing[page]
        full = set(watched) if rows is None else self._touched(rows, watched)
        full |= self._screens(watched)
        if rows is not None:
            # An agent's own page (small) is rendered again when it beat, spend and
            # session included, and every PULSE_REFRESH; so is the budget page (spend
            # arrives with heartbeats, not events).
            full |= {
                page
                for page in watched
                if (page[0] == "agent" and (every or _int_key(page[1]) in beats))
                or (page[0] == "budget" and every)
            }
        for page in full:
            self.due.setdefault(page, Due()).full = True
            if page in self.refreshing:
                self.refreshing.pop(page).future.cancel()  # this render supersedes it
        for page, under_way in self.refreshing.items():
            if page[0] in PULSED:
                under_way.beats.update(beats)
        if refresh:  # (a page due in full anyway needs none)
            self._refresh([page for page in watched if not self.due.get(page, Due()).full])
        if rows is None or not beats:
            return
        # The pages of pulses get the pulses of the agents that beat.
        for page in watched:
            if page[0] in PULSED and page not in full:
                self.due.setdefault(page, Due()).beats.update(beats)

    def _refresh(self, pages: list[tuple[str, str]]) -> None:
        """Start the periodic full render of these pages on a thread of its own (it
        catches changes that wrote no event); the pump is poked when one is done."""
        for page in pages:
            if page in self.refreshing:
                continue
            future = REFRESHER.submit(_fresh_snapshot, *page)
            self.refreshing[page] = Refresh(future)
            future.add_done_callback(lambda _: self.poke(None))

    def _refreshed(self) -> None:
        """Refreshes done since the last tick: due at their page's window."""
        for page, under_way in list(self.refreshing.items()):
            if not under_way.future.done():
                continue
            del self.refreshing[page]
            try:
                began, html = under_way.future.result()
            except NoSuchPage:
                continue  # deleted meanwhile; its browsers keep what they have
            except Exception:
                log.exception("refreshing the live page %s %s failed", *page)
                continue
            due = self.due.setdefault(page, Due())
            due.refreshed = (began, html, under_way.beats)

    @staticmethod
    def _touched(rows: list[dict], watched: Mapping[tuple[str, str], int]) -> set[tuple[str, str]]:
        touched: set[tuple[str, str]] = set()
        for row in rows:
            for view, key in watched:
                which = PAGES[view].touched(row)
                if which is None or key in which:
                    touched.add((view, key))
        return touched

    @staticmethod
    def _render(pages: set[tuple[str, str]]) -> list[tuple[tuple[str, str], str]]:
        frames = []
        for view, key in sorted(pages):
            try:
                frames.append(((view, key), snapshot(view, key)))
            except NoSuchPage:
                continue  # deleted meanwhile; its browsers keep what they have
            except Exception:  # one broken page must not starve the others
                log.exception("rendering the live page %s %s failed", view, key)
        return frames

    def _screens(self, watched: Mapping[tuple[str, str], int]) -> set[tuple[str, str]]:
        """Watched agent pages whose terminal view changed: a runner reports screens
        up to once a second without an event (one query a tick, only while an agent
        page is watched; a page watched since the last tick has its snapshot)."""
        pages = {_int_key(key): (view, key) for view, key in watched if view == "agent"}
        pages.pop(None, None)
        if not pages:
            self.screen_seen = {}
            return set()
        current = dict(
            Runtime.objects.filter(agent_id__in=pages).values_list("agent_id", "screen_at")
        )
        changed = {
            pages[pk]
            for pk, at in current.items()
            if pk in self.screen_seen and self.screen_seen[pk] != at
        }
        self.screen_seen = current
        return changed

    def _beats(self) -> list[int]:
        """Agents whose heartbeat time changed since we last looked. A beat is stamped
        when its batch starts and may commit a little later, so the query looks a few
        seconds back — from the previous look, however long ago that was (a beat
        missed stays wrong on screen, its age counting on in the browser) — and
        compares with what it saw (only the stamps: the pulse rows of the agents that
        changed are read after, in one query)."""
        now = timezone.now()
        since = min(now, self.beats_read or now) - timedelta(seconds=5)
        self.beats_read = now
        current = dict(
            Agent.objects.filter(last_heartbeat_at__gt=since).values_list("pk", "last_heartbeat_at")
        )
        changed = [pk for pk, stamp in current.items() if self.beat_seen.get(pk) != stamp]
        self.beat_seen = current
        return changed


def _fresh_snapshot(view: str, key: str) -> tuple[float, str]:
    close_old_connections()
    try:
        began = time.monotonic()
        return began, snapshot(view, key)
    finally:
        close_old_connections()


def _pulse_rows(ids: list[int]) -> dict[int, dict]:
    """The pulse rows of these agents, by primary key (one query)."""
    rows = (
        Agent.objects.filter(pk__in=ids)
        .annotate(budget_usd=_budget_cap())
        .values(*PULSE_FIELDS, "budget_usd")
    )
    return {row["pk"]: row for row in rows}


PUMP = Pump()
