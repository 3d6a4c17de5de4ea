"""Agents, their sessions, journal, inbox, and learnings."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from fleet.models.base import Event, StateMachine, TransitionError
from fleet.models.work import Repository, Task, slug_validator

# --- agents ---------------------------------------------------------------


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AgentQuerySet(models.QuerySet):
    def stale(self, now) -> AgentQuerySet:
        """Active agents with no sign of life for ``FLEET_HEARTBEAT_TTL``: no heartbeat,
        no spawn (the row's creation) and no session started (spawn, boot) since then.
        A spawned agent that has not booted yet is not stale, so its first calls are
        served. Plain comparisons and NOT EXISTS, so NULLs mean the same on SQLite
        and PostgreSQL (their GREATEST differ on NULL)."""
        cutoff = now - timedelta(seconds=settings.FLEET_HEARTBEAT_TTL)
        recent_session = AgentSession.objects.filter(agent=OuterRef("pk"), started_at__gte=cutoff)
        return (
            self.filter(status__in=[Agent.IDLE, Agent.WORKING, Agent.REVIEWING, Agent.ROTATING])
            .filter(Q(last_heartbeat_at__lt=cutoff) | Q(last_heartbeat_at__isnull=True))
            .filter(created_at__lt=cutoff)
            .exclude(Exists(recent_session))
        )

    def live(self) -> AgentQuerySet:
        return self.exclude(status__in=[Agent.STOPPED])

    def by_token(self, token: str) -> AgentQuerySet:
        return self.filter(token_hash=hash_token(token), token_revoked_at__isnull=True)


class Agent(StateMachine):
    ORCHESTRATOR, BUILDER, REVIEWER = "orchestrator", "builder", "reviewer"
    ROLE_CHOICES = [(r, r) for r in (ORCHESTRATOR, BUILDER, REVIEWER)]
    IDLE, WORKING, REVIEWING, ROTATING, STALE, STOPPED = (
        "idle",
        "working",
        "reviewing",
        "rotating",
        "stale",
        "stopped",
    )
    STATUS_CHOICES = [(s, s) for s in (IDLE, WORKING, REVIEWING, ROTATING, STALE, STOPPED)]
    ACTIVE = frozenset({IDLE, WORKING, REVIEWING, ROTATING})
    TRANSITIONS = {
        "start_work": (frozenset({IDLE}), WORKING),
        "start_review": (frozenset({IDLE}), REVIEWING),
        "finish": (frozenset({WORKING, REVIEWING}), IDLE),
        "rotate": (frozenset({IDLE, WORKING, REVIEWING}), ROTATING),
        "complete_rotation": (frozenset({ROTATING}), IDLE),
        "mark_stale": (ACTIVE, STALE),
        "revive": (frozenset({STALE}), IDLE),
        "stop": (ACTIVE | {STALE}, STOPPED),
        "resume": (frozenset({STOPPED}), IDLE),
    }
    EVENT_PREFIX = "agent"
    STOP_REASONS = ["budget", "timeout", "person", "revoked"]
    CAPABILITIES = {
        ORCHESTRATOR: ["boot", "heartbeat", "journal", "inbox", "plan", "message"],
        BUILDER: ["boot", "heartbeat", "journal", "inbox", "claim", "submit", "work"],
        REVIEWER: ["boot", "heartbeat", "journal", "inbox", "review", "work"],
    }

    name = models.CharField(max_length=60, unique=True, validators=[slug_validator])
    role = models.CharField(max_length=16, choices=ROLE_CHOICES)
    repository = models.ForeignKey(
        Repository, null=True, blank=True, on_delete=models.SET_NULL, related_name="agents"
    )
    token_hash = models.CharField(max_length=64, unique=True, null=True, blank=True)
    token_revoked_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, default=IDLE)
    stop_reason = models.CharField(max_length=16, blank=True)
    status_line = models.CharField(max_length=200, blank=True)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    context_pct = models.PositiveSmallIntegerField(
        default=0, validators=[MinValueValidator(0), MaxValueValidator(100)]
    )
    # PROTECT: a task an agent is busy with cannot vanish under it (stop it first).
    current_task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    spent_usd = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("0"))
    tokens_used = models.BigIntegerField(default=0)
    ports_start = models.PositiveIntegerField(
        null=True, blank=True, unique=True, help_text="first of this agent's block of TCP ports"
    )
    ports_count = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = AgentQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(context_pct__gte=0) & Q(context_pct__lte=100), name="agent_context_pct"
            ),
            models.CheckConstraint(
                condition=~Q(status__in=["working", "reviewing"]) | Q(current_task__isnull=False),
                name="agent_busy_has_task",
            ),
            models.CheckConstraint(
                condition=Q(spent_usd__gte=0) & Q(tokens_used__gte=0), name="agent_spend_positive"
            ),
            models.CheckConstraint(
                condition=Q(status="stopped") | Q(stop_reason=""), name="agent_stop_reason"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def capabilities(self) -> list[str]:
        return list(self.CAPABILITIES.get(self.role, []))

    def _event_subjects(self) -> dict[str, Any]:
        return {"agent": self, "repository_id": self.repository_id}

    def issue_token(self, *, by: Any = None) -> str:
        """Make a new token, store only its hash, and return it (shown once)."""
        token = "flt_" + secrets.token_urlsafe(32)
        with transaction.atomic():
            self.token_hash = hash_token(token)
            self.token_revoked_at = None
            self.save(update_fields=["token_hash", "token_revoked_at"])
            Event.objects.record("agent.token_issued", by=by, agent=self)
        return token

    def revoke_token(self, *, by: Any) -> None:
        with transaction.atomic():
            self.token_revoked_at = timezone.now()
            self.save(update_fields=["token_revoked_at"])
            Event.objects.record("agent.token_revoked", by=by, agent=self)

    def heartbeat_age(self, now=None) -> float | None:
        if self.last_heartbeat_at is None:
            return None
        return ((now or timezone.now()) - self.last_heartbeat_at).total_seconds()

    @staticmethod
    def _resting_status(current: Agent) -> str:
        """Where an agent returns to after rotating, reviving or resuming."""
        if current.current_task_id is None:
            return Agent.IDLE
        return Agent.REVIEWING if current.role == Agent.REVIEWER else Agent.WORKING

    def start_work(self, *, task: Task, by: Any = None) -> Event:
        def check(current: Agent) -> None:
            if current.role != self.BUILDER:
                raise TransitionError(
                    f"{self.name} is a {current.role}, not a builder", code="role"
                )
            if not Task.objects.filter(
                pk=task.pk, assignee_id=current.pk, status__in=Task.LEASED_STATES
            ).exists():
                raise TransitionError(
                    f"{task.key} is not assigned to {self.name}", code="not_assignee"
                )

        return self._transition(
            "start_work",
            by=by or self,
            check=check,
            changes={"current_task": task},
            payload={"task": task.key},
        )

    def start_review(self, *, task: Task, by: Any = None) -> Event:
        def check(current: Agent) -> None:
            if current.role != self.REVIEWER:
                raise TransitionError(
                    f"{self.name} is a {current.role}, not a reviewer", code="role"
                )

        return self._transition(
            "start_review",
            by=by or self,
            check=check,
            changes={"current_task": task},
            payload={"task": task.key},
        )

    def finish(self, *, by: Any = None) -> Event:
        return self._transition("finish", by=by or self, changes={"current_task": None})

    def rotate(self, *, by: Any = None) -> Event:
        return self._transition("rotate", by=by)

    def complete_rotation(self, *, by: Any = None) -> Event:
        return self._transition("complete_rotation", by=by, target=self._resting_status)

    def mark_stale(self, *, by: Any = None, now=None) -> Event:
        """``now``: only if the agent is still silent as of then, read under its lock (a
        heartbeat or boot may land between the sweep's read and this write)."""

        def check(current: Agent) -> None:
            if now is not None and not Agent.objects.stale(now).filter(pk=current.pk).exists():
                raise TransitionError(f"{self.name} showed a sign of life", code="alive")

        return self._transition("mark_stale", by=by, check=check, after=_release_claims)

    def revive(self, *, by: Any = None) -> Event:
        return self._transition("revive", by=by or self, target=self._resting_status)

    def stop(self, *, reason: str, by: Any = None) -> Event:
        if reason not in self.STOP_REASONS:
            raise TransitionError(f"Unknown stop reason {reason!r}", code="bad_reason")
        return self._transition(
            "stop",
            by=by,
            changes={"stop_reason": reason},
            payload={"reason": reason},
            after=_release_claims,
        )

    def resume(self, *, by: Any) -> Event:
        # The status line it last reported ("stopped at budget cap") is about the stop
        # this undoes: cleared, so the page does not say both "idle" and "stopped".
        return self._transition(
            "resume",
            by=by,
            changes={"stop_reason": "", "status_line": ""},
            target=self._resting_status,
        )


def _release_claims(agent: Agent) -> dict[str, Any]:
    """An agent that stops or goes stale lets go of its file claims (same transaction)."""
    from fleet.models.work import FileClaim

    paths = FileClaim.objects.filter(agent=agent, released_at__isnull=True)
    released = sorted(paths.values_list("path", flat=True))
    if not released:
        return {}
    paths.update(released_at=timezone.now())
    return {"claims_released": released}


class AgentSession(models.Model):
    END_REASONS = ["rotated", "budget", "timeout", "crashed", "stopped"]

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="sessions")
    # Counted per agent (session 1, 2, ... of this agent), as people and the agents'
    # own narration count them; the primary key counts across the fleet.
    number = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(default=timezone.now)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, blank=True, choices=[(r, r) for r in END_REASONS])
    model_name = models.CharField(max_length=100, blank=True)
    context_pct = models.PositiveSmallIntegerField(default=0)  # the latest heartbeat's
    context_peak = models.PositiveSmallIntegerField(default=0)  # the highest of the session
    spent_usd = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("0"))
    tokens_used = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent"], condition=Q(ended_at__isnull=True), name="session_one_open"
            ),
            models.CheckConstraint(
                condition=Q(ended_at__isnull=True, end_reason="")
                | (Q(ended_at__isnull=False) & ~Q(end_reason="")),
                name="session_end_reason",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent} session {self.number}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.number:
            # Sessions of one agent are made one at a time (one open session each, a
            # database constraint), so the next number cannot be taken twice.
            last = AgentSession.objects.filter(agent_id=self.agent_id).aggregate(
                n=models.Max("number")
            )["n"]
            self.number = (last or 0) + 1
        super().save(*args, **kwargs)


class JournalEntry(models.Model):
    KINDS = ["done", "learned", "next", "note"]

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="journal")
    session = models.ForeignKey(
        AgentSession, null=True, blank=True, on_delete=models.SET_NULL, related_name="journal"
    )
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="journal"
    )
    kind = models.CharField(max_length=16, choices=[(k, k) for k in KINDS])
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "journal entries"

    def __str__(self) -> str:
        return f"{self.agent} {self.kind}: {self.body[:40]}"


class Message(models.Model):
    recipient = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="inbox")
    sender_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    sender_agent = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="sent"
    )
    task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.SET_NULL)
    subject = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    acked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"to {self.recipient}: {self.subject}"


class Learning(models.Model):
    repository = models.ForeignKey(
        Repository, null=True, blank=True, on_delete=models.SET_NULL, related_name="learnings"
    )
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL)
    title = models.CharField(max_length=200)
    body = models.TextField()
    tags = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title


class ReplayQuerySet(models.QuerySet):
    def expired(self, now):
        return self.filter(created_at__lt=now - timedelta(seconds=settings.FLEET_IDEMPOTENCY_TTL))


class Replay(models.Model):
    """The first answer to an agent's call made with an ``Idempotency-Key``: a retry
    with the same key (its response was lost) gets this answer again and changes
    nothing. Status 0 while the call runs. Kept ``FLEET_IDEMPOTENCY_TTL`` seconds."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="replays")
    key = models.CharField(max_length=200)
    fingerprint = models.CharField(max_length=64, help_text="sha256 of method, path and body")
    status = models.PositiveSmallIntegerField(default=0)
    owner = models.CharField(max_length=200, blank=True, help_text="host:pid:start of its call")
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = ReplayQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["agent", "key"], name="replay_agent_key")]
        indexes = [models.Index(fields=["created_at"], name="replay_created")]  # the sweep

    def __str__(self) -> str:
        return f"{self.agent} {self.key}: {self.status}"
