"""The transition machinery and the event log every state change writes to."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import models, transaction
from django.utils import timezone


class TransitionError(Exception):
    """An illegal state transition or a failed precondition (the API's 409)."""

    def __init__(self, message: str, *, code: str = "illegal_transition") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- events ---------------------------------------------------------------


def after_event(using: str | None = None) -> None:
    """Once the event's transaction commits, this process's live pump reads it at once
    (a page that had no frame for its window gets it now, not at the next poll)."""

    def poke() -> None:
        from fleet.live import PUMP

        PUMP.poke(None)

    transaction.on_commit(poke, using=using)


class EventQuerySet(models.QuerySet):
    def after(self, event_id: int) -> EventQuerySet:
        return self.filter(id__gt=event_id).order_by("id")

    def for_task(self, task: Any) -> EventQuerySet:
        return self.filter(task=task)

    def record(self, kind: str, **fields: Any) -> Event:
        """Append one event (the arguments are ``build``'s)."""
        event = self.build(kind, **fields)
        event.save(force_insert=True, using=self.db)
        after_event(self.db)
        return event

    def build(
        self,
        kind: str,
        *,
        by: Any = None,
        payload: dict | None = None,
        correlation_id: str = "",
        **subjects: Any,
    ) -> Event:
        """The event ``record`` appends, not saved yet (hot paths insert it in plain SQL);
        ``by`` is a User, an Agent, or None for Fleet itself."""
        from fleet.correlation import CURRENT
        from fleet.models.agents import Agent

        actor_user = by if isinstance(by, AbstractBaseUser) else None
        actor_agent = by if isinstance(by, Agent) else None
        if actor_user is not None:
            actor = f"user:{actor_user.get_username()}"
        elif actor_agent is not None:
            actor = f"agent:{actor_agent.name}"
        else:
            actor = "fleet"
        return self.model(
            kind=kind,
            actor=actor,
            actor_user=actor_user,
            actor_agent=actor_agent,
            payload=payload or {},
            correlation_id=correlation_id or CURRENT.get(),
            **subjects,
        )


class Event(models.Model):
    """Audit log and outbox: one row per state change, written in its transaction."""

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    kind = models.CharField(max_length=64, db_index=True)
    actor = models.CharField(max_length=200)
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor_agent = models.ForeignKey(
        "Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    repository = models.ForeignKey(
        "Repository", null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    plan = models.ForeignKey(
        "Plan", null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    wave = models.ForeignKey(
        "Wave", null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    task = models.ForeignKey(
        "Task", null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    agent = models.ForeignKey(
        "Agent", null=True, blank=True, on_delete=models.SET_NULL, related_name="events"
    )
    payload = models.JSONField(default=dict, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True)

    objects = EventQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"#{self.id} {self.kind} by {self.actor}"


class StateMachine(models.Model):
    """Shared transition machinery for Wave, Task and Agent.

    ``TRANSITIONS`` maps an action to (allowed source states, target state).
    """

    TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {}
    EVENT_PREFIX = ""

    class Meta:
        abstract = True

    def can(self, action: str) -> bool:
        sources, _ = self.TRANSITIONS[action]
        return self.status in sources

    def _event_subjects(self) -> dict[str, Any]:
        raise NotImplementedError

    def _transition(
        self,
        action: str,
        *,
        by: Any,
        check: Any = None,
        changes: dict[str, Any] | None = None,
        payload: dict | None = None,
        target: Any = None,
        after: Any = None,
    ) -> Event:
        """Check, change, save and record one transition atomically.

        ``check(current)`` raises ``TransitionError`` to refuse; ``target`` may be a
        callable of the locked row; ``after(current)`` runs inside the same
        transaction once the row is saved (to keep related rows consistent) and
        may return extra payload for the event.
        """
        sources, default_target = self.TRANSITIONS[action]
        changes = dict(changes or {})
        with transaction.atomic():
            # Read the row under lock so a stale in-memory copy or a concurrent
            # writer cannot slip an illegal transition through.
            current = type(self).objects.select_for_update(no_key=True).get(pk=self.pk)
            if current.status not in sources:
                raise TransitionError(
                    f"{self} cannot {action.replace('_', ' ')} from {current.status!r}"
                    f" (allowed from: {', '.join(sorted(sources))})"
                )
            if check is not None:
                check(current)
            to = target(current) if callable(target) else (target or default_target)
            from_status = current.status
            for field, value in {"status": to, **changes}.items():
                setattr(current, field, value)
            fields = ["status", *changes]
            if hasattr(current, "updated_at"):
                current.updated_at = timezone.now()
                fields.append("updated_at")
            current.save(update_fields=fields)
            expressions = [f for f, v in changes.items() if hasattr(v, "resolve_expression")]
            if expressions:
                current.refresh_from_db(fields=expressions)
            extra = after(current) if after is not None else None
            event = Event.objects.record(
                f"{self.EVENT_PREFIX}.{action}",
                by=by,
                payload={"from": from_status, "to": to, **(payload or {}), **(extra or {})},
                **current._event_subjects(),
            )
        # Mirror the change onto this instance only once this transition's block
        # has succeeded. (If an enclosing transaction later rolls back, the caller
        # owns that rollback and should re-read the row.)
        for field in fields:
            setattr(self, field, getattr(current, field))
        return event
