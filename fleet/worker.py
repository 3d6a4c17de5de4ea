"""The worker: periodic sweeps and the merge queue.

Driven by ``manage.py fleet_worker``; modelled on healthchecks' ``sendalerts``:
a plain loop, one tick at a time, stopping cleanly between ticks on SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone

from fleet import correlation
from fleet.correlation import correlated
from fleet.models import Agent, FileClaim, Task, TransitionError

log = logging.getLogger("fleet.worker")


def expire_leases(now) -> int:
    """Return tasks whose lease lapsed to ``ready``, keeping branch and worktree, so
    the next agent resumes; a task that used up its attempts fails instead (the
    circuit breaker: a lead looks at it). Never a task whose agent's CLI is under a
    silent runner (its process may still run)."""
    from fleet import runtime

    count = 0
    for task in Task.objects.lease_expired(now).select_related("assignee"):
        agent_id = task.assignee_id
        if agent_id and runtime.held_by_silent_runner(agent_id, now):
            # Its CLI is under a runner that stopped reporting: it may still be working.
            # The page shows it as unknown; a person decides (stop it, or wait).
            continue
        try:
            if task.attempt >= settings.FLEET_TASK_MAX_ATTEMPTS:
                task.fail(
                    by=None,
                    reason=f"attempt {task.attempt} of {settings.FLEET_TASK_MAX_ATTEMPTS} "
                    "lost its lease; a person decides (retry or cancel)",
                )
            else:
                task.expire_lease(now=now)
        except TransitionError:
            continue  # renewed or moved on since we looked; nothing to do
        Agent.objects.filter(pk=agent_id, current_task=task).update(current_task=None)
        count += 1
    return count


def mark_stale_agents(now) -> int:
    count = 0
    for agent in Agent.objects.stale(now):
        try:
            agent.mark_stale(now=now)
        except TransitionError:
            continue
        count += 1
    return count


def expired_claims(now) -> int:
    """Claims whose agent stopped heartbeating lapse; mark them released so every
    view agrees (a lapsed claim is already free to take over)."""
    return FileClaim.objects.filter(released_at__isnull=True, expires_at__lte=now).update(
        released_at=now
    )


def waves(now) -> int:
    from fleet.planning import advance_waves

    return advance_waves()


def merge_queues(now) -> int:
    from fleet.merging import process_queues

    return process_queues()


def checkpoint_sweep(now) -> int:
    from fleet.checkpoints import sweep

    return sweep(now)


def budget_sweep(now) -> int:
    from fleet.budgets import sweep

    return sweep(now)


def gate_sweep(now) -> int:
    from fleet.gates import sweep

    return sweep(now)


def webhook_deliveries(now) -> int:
    from fleet.webhooks import deliver

    return deliver(now)


def replays(now) -> int:
    from fleet.models import Replay

    return Replay.objects.expired(now).delete()[0]


def merged_worktrees(now) -> int:
    from fleet.merging import collect_merged

    return collect_merged()


SWEEPS: list[tuple[str, Callable[[Any], int]]] = [
    # Silent agents first, and their checkpoints, while they still hold their tasks.
    ("stale_agents", mark_stale_agents),
    ("checkpoints", checkpoint_sweep),
    ("expired_leases", expire_leases),
    ("expired_claims", expired_claims),
    ("budgets", budget_sweep),
    ("gates", gate_sweep),
    ("merges", merge_queues),
    ("merged_worktrees", merged_worktrees),
    ("waves", waves),
    ("webhooks", webhook_deliveries),
    ("replays", replays),
]


@dataclass
class Worker:
    interval: float = 5.0
    stop_requested: threading.Event = field(default_factory=threading.Event)
    # Which sweeps this worker runs (default: all). A deployment can run the merge
    # queue in a worker of its own, so a long check never delays lease expiry.
    sweeps: tuple[str, ...] = tuple(name for name, _ in SWEEPS)

    def tick(self, now=None) -> dict[str, int]:
        now = now or timezone.now()
        results = {}
        for name, sweep in SWEEPS:
            if name not in self.sweeps:
                continue
            try:
                with correlated(f"{name}-{correlation.new()}"):
                    results[name] = sweep(now)
            except Exception:
                # One failing sweep must not stop the others or the loop.
                log.exception("sweep %s failed", name)
                results[name] = -1
        return results

    def request_stop(self, signum: int | None = None, frame: Any = None) -> None:
        log.info("stop requested (signal %s); finishing the current tick", signum)
        self.stop_requested.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def run(self, *, once: bool = False) -> int:
        ticks = 0
        while not self.stop_requested.is_set():
            # A long-running process must drop connections the database closed.
            close_old_connections()
            results = self.tick()
            ticks += 1
            if any(results.values()):
                log.info("tick %d: %s", ticks, results)
            if once:
                break
            self.stop_requested.wait(self.interval)
        return ticks
