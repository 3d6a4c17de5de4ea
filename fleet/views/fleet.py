"""The fleet overview, the activity log and the navigation shared by every page."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from fleet import live
from fleet.models import Event
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


@require_GET
@role_required(LEAD, REVIEWER, MANAGER)
def overview(request: HttpRequest) -> HttpResponse:
    if request.GET.get("live"):
        # The polling fallback (no websocket): the live regions, swapped by id.
        response = HttpResponse(live.snapshot("overview"))
        response["X-Fleet-Live"] = "1"  # what live.js checks (a login page is not this)
        return response
    return render(
        request, "fleet/overview.html", {**live.overview_context(), "live_view": "overview"}
    )


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
