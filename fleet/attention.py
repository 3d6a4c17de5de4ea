"""What newly needs a person, by role, pushed on the live socket as it happens: the
browser of a person who opted in shows it as a notification.

Four things call a person away from what they are doing: findings waiting for a
verdict (reviewers and leads), a merge gate turning red (leads), a failed merge
(leads) and an agent stopped at a cap (managers and leads). The pump reads the new
events once per tick for every browser; ``frames`` turns those among them into one
small fragment per role, sent to that role's group of each process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.template.loader import render_to_string
from django.urls import reverse

from fleet.models import Event, MergeRequest
from fleet.roles import LEAD, MANAGER, REVIEWER

# The events that may need a person, and whose they are.
ROLES = {
    "review.findings": (REVIEWER, LEAD),
    "task.gates": (LEAD,),
    "merge.done": (LEAD,),
    "agent.stop": (MANAGER, LEAD),
}
CAPS = ("budget", "timeout")  # the stop reasons that are caps (not a person's stop)
VIEW = "attention"  # the pseudo-page of the groups (``live.group(VIEW, role)``)


@dataclass
class Attention:
    id: int  # the event's: a browser shows each once, however many tabs or roles
    roles: tuple[str, ...]
    title: str
    body: str
    url: str


def _findings(event: Event) -> Attention | None:
    count = (event.payload or {}).get("findings") or 0
    if not count or event.task is None:
        return None
    reviewer = event.actor_agent.name if event.actor_agent else "a fresh reviewer"
    return Attention(
        event.pk,
        ROLES[event.kind],
        f"{event.task.key}: {count} finding{'s' if count != 1 else ''} "
        f"wait{'' if count != 1 else 's'} for a verdict",
        f"{event.task.title} (from {reviewer})",
        reverse("fleet-reviews"),
    )


def _gates(event: Event) -> Attention | None:
    newly = (event.payload or {}).get("newly") or []
    if not newly or event.task is None:
        return None
    reasons = {g["key"]: f"{g['name']}: {g['reason']}" for g in event.task.gates or []}
    return Attention(
        event.pk,
        ROLES[event.kind],
        f"{event.task.key}: a merge gate turned red",
        "; ".join(reasons.get(key, key) for key in newly)[:300],
        reverse("fleet-task", args=[event.task.key]) + "#task-gates",
    )


def _merge(event: Event) -> Attention | None:
    payload = event.payload or {}
    if payload.get("result") != MergeRequest.FAILED or event.task is None:
        return None
    log = MergeRequest.objects.filter(pk=payload.get("merge")).values_list("log", flat=True).first()
    reason = (log or "").strip().partition("\n")[0]
    return Attention(
        event.pk,
        ROLES[event.kind],
        f"{event.task.key}: the merge failed",
        (reason or "it went back to its builder")[:300],
        reverse("fleet-task", args=[event.task.key]) + "#task-merges",
    )


def _stop(event: Event) -> Attention | None:
    reason = (event.payload or {}).get("reason")
    if reason not in CAPS or event.agent is None:
        return None
    cap = "its budget" if reason == "budget" else "its wall-clock limit"
    holding = f" while holding {event.task.key}" if event.task else ""
    return Attention(
        event.pk,
        ROLES[event.kind],
        f"{event.agent.name} was stopped at {cap}",
        f"The agent is stopped{holding}; raise the cap or leave it stopped.",
        reverse("fleet-agent", args=[event.agent.name]),
    )


BUILDERS = {
    "review.findings": _findings,
    "task.gates": _gates,
    "merge.done": _merge,
    "agent.stop": _stop,
}


def collect(rows: list[dict[str, Any]]) -> list[Attention]:
    """What among these new event rows (``id`` and ``kind`` at least) needs a person."""
    ids = [row["id"] for row in rows if row["kind"] in BUILDERS]
    if not ids:
        return []
    events = Event.objects.filter(id__in=ids).select_related("task", "agent", "actor_agent")
    found = []
    for event in events.order_by("id"):
        item = BUILDERS[event.kind](event)
        if item is not None:
            found.append(item)
    return found


def frames(rows: list[dict[str, Any]]) -> list[tuple[tuple[str, str], str]]:
    """One fragment per role that has something new: ((VIEW, role), html)."""
    items = collect(rows)
    by_role: dict[str, list[Attention]] = {}
    for item in items:
        for role in item.roles:
            by_role.setdefault(role, []).append(item)
    return [
        ((VIEW, role), render_to_string("fleet/_attention.html", {"items": mine}))
        for role, mine in sorted(by_role.items())
    ]
