"""Fleet's side of the agent runtime: what each runner should run, what it reported,
and people's controls (stop, restart, kill, message).

A runner syncs every second or so (``POST /api/v1/runner/sync``): it reports the
tmux sessions it holds and gets back the agents it should run. Everything a sync
decides is written in one transaction, and the answer depends only on the database,
so a runner that repeats a sync (or crashes between two) changes nothing twice.

Generations: a new ``Runtime.generation`` means "a fresh CLI session". It moves when
a person restarts or resumes an agent, when its heartbeat asked for a rotation, when
a reviewer finished a review (one session per review), and when a crashed CLI is
restarted (up to ``FLEET_RUNNER_MAX_RESTARTS`` in a row).
"""

from __future__ import annotations

import logging
import re
import shlex
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from fleet.models import Agent, Event, Message, Review, Runner, Runtime, Task, TransitionError
from fleet.runner.harnesses import HARNESSES, opening

log = logging.getLogger("fleet.runtime")

SCREEN_LINES = 40
SCREEN_CHARS = 8000
ROTATE_PATIENCE = 120.0  # seconds a rotating CLI may finish its turn before it is interrupted
STEADY = 300  # seconds alive after which a session's crashes no longer count in a row
CONTROL = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|[\x00-\x08\x0b-\x1f\x7f]"
)


class RuntimeRefused(Exception):
    """A control was refused; nothing changed."""


def clean_screen(text: str) -> str:
    """The pane's last lines as plain text: control sequences stripped, bounded."""
    lines = [line.rstrip() for line in CONTROL.sub("", text.replace("\r\n", "\n")).split("\n")]
    # A pane is mostly empty rows below what was written (a dead pane's notice at the
    # bottom): runs of them are kept as one.
    lines = [line for i, line in enumerate(lines) if line or (i and lines[i - 1])]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(line.rstrip()[:400] for line in lines[-SCREEN_LINES:])[-SCREEN_CHARS:]


# --- launching -------------------------------------------------------------


def attach(agent: Agent, *, harness: str, model: str = "", command: str = "", directory: Path):
    """Give a freshly spawned agent a runtime: the first runner online starts it."""
    if harness not in HARNESSES:
        raise RuntimeRefused(f"unknown harness {harness!r}")
    if harness == "command" and not command.strip():
        raise RuntimeRefused("the command harness needs a command")
    if harness == "command":
        try:
            shlex.split(command)
        except ValueError as exc:
            raise RuntimeRefused(f"the command cannot be read: {exc}") from None
    runner = Runner.objects.online().filter(error="").order_by("last_seen_at").last()
    closed = Review.objects.filter(reviewer=agent, status=Review.CLOSED).aggregate(last=Max("pk"))
    runtime = Runtime.objects.create(
        reviewed_through=closed["last"] or 0,
        agent=agent,
        harness=harness,
        model=model,
        command=command if harness == "command" else "",
        directory=str(directory),
        runner=runner,
    )
    Event.objects.record(
        "agent.runtime_created",
        agent=agent,
        payload={"harness": harness, "model": model, "runner": runner.name if runner else None},
    )
    return runtime


# --- the sync --------------------------------------------------------------


@dataclass
class Report:
    """One session as the runner saw it."""

    agent: str
    generation: int
    state: str
    exit_code: int | None = None
    screen: str | None = None  # None: unchanged since the last report
    nudged_through: int = 0
    alive_seconds: float = 0.0
    error: str = ""


def sync(
    runner: Runner,
    *,
    host: str,
    pid: int,
    version: str,
    tmux: str,
    error: str,
    sessions: list[Report],
    ended: list[dict],
) -> dict[str, Any]:
    now = timezone.now()
    with transaction.atomic():
        runner = Runner.objects.select_for_update().get(pk=runner.pk)
        runner.host, runner.pid, runner.version = host[:200], pid, version[:60]
        runner.tmux, runner.error, runner.last_seen_at = tmux[:200], error[:500], now
        runner.save(update_fields=["host", "pid", "version", "tmux", "error", "last_seen_at"])
        # Agents nobody runs yet go to the first runner that asks and can start them; a
        # runner that cannot (no tmux) holds them only while no other one can, so its
        # error shows on their pages, and gives up those it never started.
        if not error:
            broken = Runner.objects.exclude(error="").exclude(pk=runner.pk)
            Runtime.objects.filter(
                Q(runner__isnull=True) | Q(state=Runtime.PENDING, runner__in=broken)
            ).update(runner=runner)
        elif not Runner.objects.online().filter(error="").exclude(pk=runner.pk).exists():
            Runtime.objects.filter(runner__isnull=True).update(runner=runner)
        runtimes = {
            r.agent.name: r
            for r in Runtime.objects.select_for_update(of=("self",))
            .filter(runner=runner)
            .select_related("agent")
        }
        reported = {s.agent: s for s in sessions}
        for name, runtime in runtimes.items():
            _observe(runtime, reported.get(name), now=now, runner_error=error)
        for item in ended:
            Event.objects.record(
                "runner.session_ended",
                payload={
                    "runner": runner.name,
                    "session": str(item.get("session", ""))[:100],
                    "reason": str(item.get("reason", ""))[:200],
                },
            )
        answer = [_desired(runtime, now) for runtime in runtimes.values()]
    return {
        "runner": runner.name,
        "interval": settings.FLEET_RUNNER_INTERVAL,
        "agents": answer,
    }


def _observe(runtime: Runtime, seen: Report | None, *, now, runner_error: str) -> None:
    """Take in what the runner saw of one agent's CLI (or that it holds none)."""
    agent = runtime.agent
    fields = {"reported_at"}
    runtime.reported_at = now
    before = (runtime.state, runtime.exit_code, runtime.error)
    if seen is None:
        if runtime.state in Runtime.ALIVE and runtime.observed_generation == runtime.generation:
            # It held a session for this generation and now holds none: gone (tmux
            # server killed, a reboot). Starting it again is the runner's next step.
            runtime.state = Runtime.ENDED
        elif runner_error:
            # Nothing can start on that runner (tmux missing): said on the agent's
            # page; it starts once the runner can.
            runtime.error = runner_error[:500]
            fields.add("error")
        elif agent.status == Agent.STOPPED:
            runtime.state = Runtime.ENDED if runtime.state != Runtime.PENDING else Runtime.PENDING
        fields |= {"state"}
    else:
        if seen.generation == runtime.generation:
            runtime.observed_generation = seen.generation
            runtime.state = seen.state if seen.state in Runtime.STATES else Runtime.BUSY
            runtime.exit_code = seen.exit_code
            runtime.error = seen.error[:500]
            fields |= {"observed_generation", "state", "exit_code", "error"}
            if seen.screen is not None:
                runtime.screen, runtime.screen_at = clean_screen(seen.screen), now
                fields |= {"screen", "screen_at"}
            if seen.alive_seconds >= STEADY and runtime.restarts:
                runtime.restarts = 0
                fields.add("restarts")
        if seen.nudged_through > runtime.nudged_through:
            runtime.nudged_through, runtime.nudged_at = seen.nudged_through, now
            fields |= {"nudged_through", "nudged_at"}
            Event.objects.record(
                "agent.woken", agent=agent, payload={"through": seen.nudged_through}
            )
        if seen.state == Runtime.EXITED and seen.generation == runtime.generation:
            _exited(runtime, seen, fields)
    if (runtime.state, runtime.exit_code, runtime.error) != before:
        Event.objects.record(
            "agent.runtime",
            agent=agent,
            payload={
                "state": runtime.state,
                "exit_code": runtime.exit_code,
                "error": runtime.error,
                "generation": runtime.generation,
            },
        )
    runtime.save(update_fields=sorted(fields))


def _exited(runtime: Runtime, seen: Report, fields: set[str]) -> None:
    """A CLI of the current generation exited. Rotating or stopped: expected. Else a
    crash: restarted (a new generation) up to the limit, then a person looks."""
    agent = runtime.agent
    if agent.status == Agent.STOPPED:
        return
    if agent.status == Agent.ROTATING:
        _rotation(runtime, fields)  # it ended its session itself, as asked
        return
    runtime.restarts += 1
    fields.add("restarts")
    tail = "\n".join(runtime.screen.splitlines()[-10:])
    Event.objects.record(
        "agent.crashed",
        agent=agent,
        payload={"exit_code": seen.exit_code, "restarts": runtime.restarts, "screen": tail},
    )
    if runtime.restarts <= settings.FLEET_RUNNER_MAX_RESTARTS:
        _bump(runtime, fields, reason="crashed")
    else:
        runtime.state = Runtime.FAILED
        runtime.error = (
            f"the CLI exited {runtime.restarts} times in a row (last exit code "
            f"{seen.exit_code}); restart it from this page once fixed"
        )
        fields |= {"state", "error"}


def _bump(runtime: Runtime, fields: set[str], *, reason: str, by=None) -> None:
    runtime.generation += 1
    runtime.kill = False
    fields |= {"generation", "kill"}
    Event.objects.record(
        "agent.runtime_generation",
        by=by,
        agent=runtime.agent,
        payload={"generation": runtime.generation, "reason": reason},
    )


def _rotation(runtime: Runtime, fields: set[str]) -> None:
    """One fresh session per rotation asked for (per session that rotates)."""
    agent = runtime.agent
    open_session = agent.sessions.filter(ended_at__isnull=True).values_list("pk", flat=True).first()
    if runtime.rotated_session != open_session or open_session is None:
        runtime.rotated_session = open_session
        fields.add("rotated_session")
        _bump(runtime, fields, reason="rotation")


def _desired(runtime: Runtime, now) -> dict[str, Any]:
    """What the runner should do with one agent's CLI."""
    agent = runtime.agent
    fields: set[str] = set()
    patience = 0.0
    if agent.status == Agent.ROTATING:
        # The heartbeat asked for a rotation: a fresh session, once the CLI has
        # finished its turn (its journal written).
        _rotation(runtime, fields)
    if agent.role == Agent.REVIEWER:
        _fresh_review_session(runtime, agent, fields)
    if agent.status == Agent.ROTATING:
        patience = ROTATE_PATIENCE
    if fields:
        runtime.save(update_fields=sorted(fields))
    harness = HARNESSES[runtime.harness]
    run = agent.status != Agent.STOPPED and runtime.state != Runtime.FAILED
    if runtime.state == Runtime.FAILED and runtime.observed_generation != runtime.generation:
        run = agent.status != Agent.STOPPED  # a person restarted it
    return {
        "name": agent.name,
        "role": agent.role,
        "harness": runtime.harness,
        "model": runtime.model,
        "command": runtime.command,
        "directory": runtime.directory,
        "permissions": agent.repository.agent_permissions if agent.repository else "worktree",
        "generation": runtime.generation,
        "run": run,
        "kill": runtime.kill and agent.status == Agent.STOPPED,  # a resume clears it
        "patience": patience,
        "prompt": opening(agent.role, harness.hooks),
        "nudge": _nudge(runtime, agent),
    }


def _fresh_review_session(runtime: Runtime, agent: Agent, fields: set[str]) -> None:
    """A reviewer gets a fresh CLI session once each review is done, so the next review
    starts with nothing of the last one in its context. Seen either way: the runtime
    saw it reviewing and now it is not, or a review of it closed since the last fresh
    session (a review taken and finished between two syncs)."""
    closed = (
        Review.objects.filter(reviewer=agent, status=Review.CLOSED).aggregate(last=Max("pk"))[
            "last"
        ]
        or 0
    )
    if agent.status == Agent.REVIEWING and agent.current_task_id:
        if runtime.review_task_id != agent.current_task_id:
            earlier = closed > runtime.reviewed_through
            runtime.review_task_id = agent.current_task_id
            runtime.reviewed_through = max(closed, runtime.reviewed_through)
            fields |= {"review_task_id", "reviewed_through"}
            if earlier:
                # It finished one review and took the next between two syncs: the next
                # one in a fresh session (which boots into it), not in the last's context.
                _bump(runtime, fields, reason="review done")
        return
    if runtime.review_task_id is None and closed <= runtime.reviewed_through:
        return
    runtime.review_task_id, runtime.reviewed_through = None, max(closed, runtime.reviewed_through)
    fields |= {"review_task_id", "reviewed_through"}
    _bump(runtime, fields, reason="review done")


def _nudge(runtime: Runtime, agent: Agent) -> dict[str, Any] | None:
    """What to type into the CLI's idle prompt, if anything is new for it: unread
    messages past the last nudge, or work ready for an idle agent."""
    if agent.status == Agent.STOPPED:
        return None
    unread = Message.objects.filter(recipient=agent, acked_at__isnull=True).aggregate(
        count=Count("pk"), through=Max("pk")
    )
    count, through = unread["count"], unread["through"] or 0
    if count and through > runtime.nudged_through:
        noun = "message" if count == 1 else "messages"
        return {
            "through": through,
            "text": f"You have {count} new Fleet {noun}: read them with the fleet inbox tool "
            "and act on them.",
        }
    if agent.status == Agent.IDLE and _work_ready(agent):
        return {
            "through": 0,
            "text": "New work is ready for you in Fleet: pull it with the fleet work_next tool.",
        }
    return None


def _work_ready(agent: Agent) -> bool:
    if agent.role == Agent.BUILDER:
        ready = Task.objects.ready().filter(assignee__isnull=True)
        if agent.repository_id:
            ready = ready.filter(repository_id=agent.repository_id)
        return (
            ready.exists()
            or Task.objects.filter(status=Task.CHANGES_REQUESTED, assignee=agent).exists()
        )
    if agent.role == Agent.REVIEWER:
        open_reviews = Review.objects.filter(status=Review.OPEN, reviewer__isnull=True).exclude(
            task__assignee=agent
        )
        if agent.repository_id:
            open_reviews = open_reviews.filter(task__repository_id=agent.repository_id)
        return open_reviews.exists()
    return False


# --- people's controls -----------------------------------------------------


def _runtime(agent: Agent) -> Runtime:
    runtime = Runtime.objects.select_for_update().filter(agent=agent).first()
    if runtime is None:
        raise RuntimeRefused(f"{agent.name} was not started by a runner (no harness)")
    return runtime


def stop(agent: Agent, *, by, kill: bool = False) -> None:
    """Stop the agent (audited); its runner ends the CLI: cleanly, or at once (kill)."""
    with transaction.atomic():
        runtime = _runtime(agent)
        if agent.status != Agent.STOPPED:
            try:
                agent.stop(reason="person", by=by)
            except TransitionError as exc:
                raise RuntimeRefused(exc.message) from exc
        if runtime.kill != kill:
            runtime.kill = kill
            runtime.save(update_fields=["kill"])
        Event.objects.record("agent.killed" if kill else "agent.stopped", by=by, agent=agent)


def restart(agent: Agent, *, by) -> None:
    """A fresh CLI session in the same worktree (a stopped agent is resumed first)."""
    with transaction.atomic():
        runtime = _runtime(agent)
        if agent.status == Agent.STOPPED:
            try:
                agent.resume(by=by)
            except TransitionError as exc:
                raise RuntimeRefused(exc.message) from exc
        fields = {"restarts", "state", "error"}
        runtime.restarts, runtime.error = 0, ""
        runtime.state = Runtime.STARTING if runtime.runner_id else Runtime.PENDING
        _bump(runtime, fields, reason="restarted by a person", by=by)
        runtime.save(update_fields=sorted(fields))


def message(agent: Agent, *, by, subject: str, body: str) -> Message:
    """An inbox message from a person; the runner types a nudge at the idle prompt."""
    with transaction.atomic():
        sent = Message.objects.create(recipient=agent, sender_user=by, subject=subject, body=body)
        Event.objects.record(
            "agent.message", by=by, agent=agent, payload={"message": sent.pk, "subject": subject}
        )
    return sent


def held_by_silent_runner(agent_id: int, now=None) -> bool:
    """The agent's CLI is under a runner that stopped reporting: it may still run, so
    its task is not handed to anyone else."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.FLEET_RUNNER_SILENT)
    return Runtime.objects.filter(
        agent_id=agent_id, runner__last_seen_at__lt=cutoff, state__in=Runtime.ALIVE
    ).exists()
