"""The review queue and the verdicts people give on a fresh reviewer's findings."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from fleet import adjudication
from fleet.models import Task
from fleet.roles import LEAD, REVIEWER, ROLES, role_required, user_roles
from fleet.views.live import live_snapshot
from fleet.views.refusals import refused

ADJUDICATORS = (LEAD, REVIEWER)


def can_adjudicate(user) -> bool:
    return bool(user_roles(user) & set(ADJUDICATORS))


def _refused(request: HttpRequest, what: str, exc: Exception, finding_id: int) -> None:
    """A refused verdict, with its task's state and last change when there is one."""
    task = Task.objects.filter(reviews__findings__pk=finding_id).first()
    if task is None:
        messages.error(request, f"{what}: {exc}")
    else:
        refused(request, what, str(exc), task)


def _back(request: HttpRequest) -> HttpResponse:
    """Where the form came from (a page of this site), else the queue."""
    target = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(target)
    return redirect("fleet-reviews")


def reviews_context() -> dict[str, Any]:
    """The review queue's live region, the same for every viewer (the verdict forms
    show only to reviewers and leads, by their role's class on the page)."""
    return {"findings": adjudication.queue(), "next_url": reverse("fleet-reviews")}


@require_GET
@role_required(*ROLES)
def review_queue(request: HttpRequest) -> HttpResponse:
    """Findings waiting for a person, across repositories (j/k to move, a to accept,
    o to overrule with a reason); live: a finding posted or decided elsewhere comes
    and goes without a reload."""
    if request.GET.get("live"):
        return live_snapshot("reviews")
    return render(
        request,
        "fleet/reviews.html",
        {
            **reviews_context(),
            "can_adjudicate": can_adjudicate(request.user),
            "live_view": "reviews",
            "live_key": "",
        },
    )


@require_POST
@role_required(*ADJUDICATORS)
def finding_verdict(request: HttpRequest, finding_id: int) -> HttpResponse:
    try:
        done = adjudication.decide(
            finding_id,
            verdict=request.POST.get("verdict", ""),
            reason=request.POST.get("reason", ""),
            by=request.user,
        )
    except adjudication.Refusal as exc:
        _refused(request, "Not recorded", exc, finding_id)
    else:
        messages.success(request, done)
    return _back(request)


@require_POST
@role_required(*ADJUDICATORS)
def finding_resolve(request: HttpRequest, finding_id: int) -> HttpResponse:
    try:
        messages.success(request, adjudication.resolve(finding_id, by=request.user))
    except adjudication.Refusal as exc:
        _refused(request, "Not resolved", exc, finding_id)
    return _back(request)
