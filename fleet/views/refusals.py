"""What a page says when the change a person asked for was refused: why, what the
thing is now, and who changed it last and when (from the event log). A stale page's
button (Approve on a wave someone approved meanwhile) gets this message on the page
it came from, never a bare error page."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest
from django.utils import timezone

from fleet.models import Agent, Event, Task, Wave

Subject = Wave | Task | Agent


def _last_change(subject: Subject) -> Event | None:
    """The latest event by a person that changed this wave, task or agent (what a
    stale page's button collided with: an approval, a resume, a verdict), else the
    latest by anyone (an agent starting the wave it approved is not who approved it)."""
    field, prefix = {
        Wave: ("wave", "wave."),
        Task: ("task", "task."),
        Agent: ("agent", "agent."),
    }[type(subject)]
    changes = (
        Event.objects.filter(**{field: subject}, kind__startswith=prefix)
        .exclude(kind__in=("agent.boot", "task.heartbeat"))
        .order_by("-id")
    )
    return changes.filter(actor__startswith="user:").first() or changes.first()


def _who(event: Event) -> str:
    return event.actor.split(":", 1)[-1] if event.actor != "fleet" else "Fleet"


def _name(subject: Subject) -> str:
    if isinstance(subject, Wave):
        return f"Wave {subject.number}"
    return subject.key if isinstance(subject, Task) else subject.name


def state_note(subject: Subject) -> str:
    """'Wave 1 is approved now (wave.approve by lead at 17:20:03, event #12).'"""
    subject.refresh_from_db()
    note = f"{_name(subject)} is {subject.get_status_display()} now"
    event = _last_change(subject)
    if event is not None:
        at = timezone.localtime(event.created_at).strftime("%Y-%m-%d %H:%M:%S")
        note += f" ({event.kind} by {_who(event)} at {at}, event #{event.id})"
    return note + "."


def refused(request: HttpRequest, what: str, reason: str, subject: Subject) -> None:
    """Queue the refusal message for the page the person is sent back to."""
    reason = reason.rstrip(".")
    messages.error(request, f"{what}: {reason}. {state_note(subject)} Nothing changed.")
