"""The fleet overview, the activity log and the navigation shared by every page."""

from __future__ import annotations

from collections import Counter
from typing import Any

from django.conf import settings
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from fleet.models import Agent, Event, Task, Wave
from fleet.roles import LEAD, MANAGER, REVIEWER, ROLES, role_required, user_roles

# (label, url name, roles that see it; None means every signed-in person)
NAVIGATION = [
    ("Fleet", "fleet-overview", None),
    ("Plans", "fleet-plans", None),
    ("Agents", "fleet-agents", None),
    ("Repositories", "fleet-repositories", None),
    ("Activity", "fleet-activity", None),
]


def navigation(request: HttpRequest) -> dict[str, Any]:
    """Context processor: the nav links this person may follow, and their roles."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    roles = user_roles(user)
    current = request.resolver_match.url_name if request.resolver_match else None
    items = [
        {"label": label, "url": reverse(name), "active": name == current}
        for label, name, allowed in NAVIGATION
        if allowed is None or roles & set(allowed)
    ]
    return {"nav_items": items, "user_roles": sorted(roles)}


def _heartbeat_health(agent: Agent, now) -> str:
    """ok / amber / red as the heartbeat lease nears expiry."""
    if agent.status == Agent.STOPPED:
        return "off"
    age = agent.heartbeat_age(now)
    ttl = settings.FLEET_HEARTBEAT_TTL
    if age is None or age >= ttl:
        return "red"
    if age >= ttl / 2:
        return "amber"
    return "ok"


@require_GET
@role_required(LEAD, REVIEWER, MANAGER)
def overview(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    agents = list(
        Agent.objects.select_related("current_task", "repository").annotate(
            unread=Count("inbox", filter=Q(inbox__acked_at__isnull=True))
        )
    )
    for agent in agents:
        agent.health = _heartbeat_health(agent, now)
        agent.age = agent.heartbeat_age(now)
        agent.rotate_due = agent.context_pct >= settings.FLEET_CONTEXT_ROTATE_PCT
    waves = list(Wave.objects.select_related("plan").with_progress().order_by("plan", "number"))
    tasks = list(
        Task.objects.open()
        .select_related("wave__plan", "repository", "assignee")
        .order_by("wave__number", "key")
    )
    statuses = Counter(agent.status for agent in agents)
    problems = [a for a in agents if a.status in (Agent.STALE, Agent.STOPPED)]
    context = {
        "agents": agents,
        "waves": waves,
        "tasks": tasks,
        "statuses": [(s, statuses.get(s, 0)) for s, _ in Agent.STATUS_CHOICES],
        "problems": problems,
        "rotate_pct": settings.FLEET_CONTEXT_ROTATE_PCT,
        "heartbeat_ttl": settings.FLEET_HEARTBEAT_TTL,
    }
    return render(request, "fleet/overview.html", context)


@require_GET
@role_required(*ROLES)
def activity(request: HttpRequest) -> HttpResponse:
    events = Event.objects.select_related("task", "wave", "agent").order_by("-id")[:200]
    return render(request, "fleet/activity.html", {"events": events})


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for process supervisors: answers when the database does."""
    Event.objects.exists()
    return JsonResponse({"ok": True})
