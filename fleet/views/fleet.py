"""The fleet overview, the activity log and the navigation shared by every page."""

from __future__ import annotations

from typing import Any

from django import forms
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from fleet import live
from fleet.models import Event, Repository
from fleet.roles import LEAD, MANAGER, REVIEWER, ROLES, role_required, user_roles
from fleet.views.live import live_snapshot

# (label, url name, roles that see it; None means every signed-in person)
NAVIGATION = [
    ("Fleet", "fleet-overview", None),
    ("Plans", "fleet-plans", None),
    ("Agents", "fleet-agents", None),
    ("Repositories", "fleet-repositories", None),
    ("Runners", "fleet-runners", None),
    ("Reviews", "fleet-reviews", None),
    ("Merge queue", "fleet-merges", None),
    ("Budget", "fleet-budget", None),
    ("Activity", "fleet-activity", None),
]
# Detail pages whose address is not under their section's: a task is planned in a
# wave of a plan.
SECTION_OF_PATH = {"/tasks/": "fleet-plans"}


def _section(request: HttpRequest, items: list[tuple[str, str]]) -> str | None:
    """The nav item a page belongs to: its own, or the one whose address its address
    is under (a wave's page is under Plans, an agent's under Agents)."""
    current = request.resolver_match.url_name if request.resolver_match else None
    if any(name == current for name, _ in items):
        return current
    for prefix, name in SECTION_OF_PATH.items():
        if request.path.startswith(prefix):
            return name
    under = [(url, name) for name, url in items if url != "/" and request.path.startswith(url)]
    return max(under)[1] if under else None


def navigation(request: HttpRequest) -> dict[str, Any]:
    """Context processor: the nav links this person may follow, and their roles."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    roles = user_roles(user)
    allowed_items = [
        (label, name, reverse(name))
        for label, name, allowed in NAVIGATION
        if allowed is None or roles & set(allowed)
    ]
    section = _section(request, [(name, url) for _, name, url in allowed_items])
    current = request.resolver_match.url_name if request.resolver_match else None
    # aria-current: "page" on the section's own page, "true" on a page within it.
    items = [
        {
            "label": label,
            "url": url,
            "active": ("page" if name == current else "true") if name == section else "",
        }
        for label, name, url in allowed_items
    ]
    return {"nav_items": items, "user_roles": sorted(roles)}


@require_GET
@role_required(LEAD, REVIEWER, MANAGER)
def overview(request: HttpRequest) -> HttpResponse:
    filters = live.overview_filters(request.GET)
    key = live.overview_key(filters)
    if request.GET.get("live"):
        return live_snapshot("overview", key)
    return render(
        request,
        "fleet/overview.html",
        {**live.overview_context(filters), "live_view": "overview", "live_key": key},
    )


class ActivityFilter(forms.Form):
    """The activity log's filters; every one optional, all combined."""

    kind = forms.CharField(required=False, max_length=64, help_text="e.g. task. or task.submit")
    actor = forms.CharField(required=False, max_length=200, help_text="e.g. agent:ada")
    task = forms.CharField(required=False, max_length=32, label="Task key")
    repository = forms.ChoiceField(required=False)
    correlation = forms.CharField(required=False, max_length=64, label="Correlation id")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["repository"].choices = [("", "any")] + list(
            Repository.objects.order_by("name").values_list("slug", "name")
        )

    def apply(self, events):
        """The valid filters (an invalid one shows its error and is left out)."""
        data = self.cleaned_data
        if data.get("kind"):
            events = events.filter(kind__startswith=data["kind"])
        if data.get("actor"):
            # "agent:ada" is one actor (not agent:adam too); a bare name searches.
            actor = data["actor"]
            events = events.filter(**{"actor" if ":" in actor else "actor__icontains": actor})
        if data.get("task"):
            events = events.filter(task__key=data["task"].upper())
        if data.get("repository"):
            events = events.filter(
                Q(repository__slug=data["repository"])
                | Q(task__repository__slug=data["repository"])
            )
        if data.get("correlation"):
            events = events.filter(correlation_id=data["correlation"])
        return events


ACTIVITY_PAGE = 50


@require_GET
@role_required(*ROLES)
def activity(request: HttpRequest) -> HttpResponse:
    """Every Event, newest first, filterable and paginated."""
    form = ActivityFilter(request.GET or None)
    events = Event.objects.select_related("task", "wave__plan", "agent").order_by("-id")
    if form.is_bound:
        form.is_valid()
        events = form.apply(events)
    page = Paginator(events, ACTIVITY_PAGE).get_page(request.GET.get("page"))
    return render(request, "fleet/activity.html", {"form": form, "page": page})


@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness for process supervisors: answers when the database does."""
    Event.objects.exists()
    return JsonResponse({"ok": True})
