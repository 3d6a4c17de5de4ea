"""Checkpoints: when an agent rotates or goes silent, the worker records its task's
worktree — uncommitted and untracked files included — as a git ref
``refs/fleet/checkpoints/<KEY>/<n>``, so whoever resumes the task (the next session
or another agent) loses nothing. The heartbeat that asks for a rotation only writes
the event; git runs here, in the worker, never on the heartbeat path."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path

from django.db import IntegrityError, transaction
from django.utils import timezone

from fleet.git import worktrees
from fleet.git.errors import GitError
from fleet.models import Agent, Checkpoint, Event, Task

log = logging.getLogger("fleet.checkpoints")

CAUSES = {"agent.rotate": "rotated", "agent.mark_stale": "stale"}
LOOKBACK = timedelta(days=1)  # events older than this are not checkpointed any more


def sweep(now=None) -> int:
    """Checkpoint the worktree of every agent that rotated or went stale since the
    last sweep (one checkpoint per such event); the number recorded."""
    now = now or timezone.now()
    done = 0
    events = (
        Event.objects.filter(kind__in=list(CAUSES), created_at__gte=now - LOOKBACK)
        .exclude(pk__in=Checkpoint.objects.filter(event__isnull=False).values("event_id"))
        .select_related("agent")
        .order_by("id")
    )
    for event in events:
        agent = event.agent
        task = (
            Task.objects.filter(pk=agent.current_task_id).first()
            if agent is not None and agent.current_task_id
            else None
        )
        if task is None or task.status not in Task.OPEN_STATES or not task.worktree_path:
            # Nothing to keep; remember the event as handled.
            _record(event, None, agent, "", "")
            continue
        if not Path(task.worktree_path).exists():
            _record(event, None, agent, "", "")
            continue
        try:
            ref, sha = worktrees.checkpoint(
                task.worktree_path,
                key=task.key,
                message=f"{task.key}: checkpoint ({CAUSES[event.kind]}) of {agent.name}",
            )
        except GitError as exc:
            # Say so once and move on (a worktree git cannot read will not get better
            # by retrying every tick); the worktree itself is kept for the next agent.
            log.warning("no checkpoint of %s after %s: %s", task.key, event.kind, exc)
            if _record(event, None, agent, "", ""):
                # Said where the lead looks: the task's timeline and the activity log.
                Event.objects.record(
                    "task.checkpoint_failed",
                    task=task,
                    agent=agent,
                    payload={"reason": f"no checkpoint ({CAUSES[event.kind]}): {exc}"[:500]},
                )
            continue
        if _record(event, task, agent, ref, sha):
            done += 1
    return done


def _record(event: Event, task: Task | None, agent: Agent | None, ref: str, sha: str) -> bool:
    # The session that was open when it happened (a rotated agent may have booted since).
    session = (
        agent.sessions.filter(started_at__lte=event.created_at).order_by("-started_at").first()
        if agent is not None
        else None
    )
    try:
        with transaction.atomic():
            Checkpoint.objects.create(
                task=task,
                agent=agent,
                session=session,
                event=event,
                reason=CAUSES[event.kind],
                ref=ref,
                sha=sha,
            )
            if task is not None:
                Event.objects.record(
                    "task.checkpoint",
                    task=task,
                    agent=agent,
                    payload={"ref": ref, "sha": sha, "reason": CAUSES[event.kind]},
                )
    except IntegrityError:
        return False  # another worker recorded this one
    return True
