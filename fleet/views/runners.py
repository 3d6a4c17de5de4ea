"""Runners for people: their state and agents; leads register (token shown once) and
revoke them."""

from __future__ import annotations

import os
import shlex

from django import forms
from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.db.models import Prefetch
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from fleet.models import Event, Runner, Runtime, slug_validator
from fleet.roles import LEAD, ROLES, role_required, user_roles


class RegisterRunnerForm(forms.Form):
    name = forms.CharField(
        max_length=60,
        validators=[slug_validator],
        help_text="lowercase letters, digits and -, e.g. the host's name",
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if Runner.objects.filter(name=name).exists():
            raise forms.ValidationError(f"A runner named {name} already exists.")
        return name


def fleet_url(request: HttpRequest) -> str:
    """The address a runner reaches Fleet at: FLEET_PUBLIC_URL when set, else the one
    this person used."""
    if os.environ.get("FLEET_PUBLIC_URL"):
        return settings.FLEET_PUBLIC_URL
    return request.build_absolute_uri("/").rstrip("/")


def token_file(name: str) -> str:
    return f"~/.config/fleet/runner-{name}.token"


def start_command(request: HttpRequest, name: str) -> str:
    url = shlex.quote(fleet_url(request))
    return f"python -m fleet.runner --url {url} --token-file {token_file(name)}"


def _runners_page(request: HttpRequest, form: RegisterRunnerForm, status: int = 200):
    now = timezone.now()
    runners = list(
        Runner.objects.prefetch_related(
            Prefetch(
                "runtimes",
                queryset=Runtime.objects.select_related("agent").order_by("agent__name"),
                to_attr="runtimes_list",
            )
        )
    )
    for runner in runners:
        runner.shown = runner.state(now)
        runner.age = (now - runner.last_seen_at).total_seconds() if runner.last_seen_at else None
    return render(
        request,
        "fleet/runners.html",
        {
            "runners": runners,
            "form": form,
            "can_manage": LEAD in user_roles(request.user),
            "silent_after": settings.FLEET_RUNNER_SILENT,
            "waiting": Runtime.objects.filter(runner__isnull=True).count(),
        },
        status=status,
    )


@require_GET
@role_required(*ROLES)
def runner_list(request: HttpRequest) -> HttpResponse:
    return _runners_page(request, RegisterRunnerForm())


@require_POST
@role_required(LEAD)
def runner_register(request: HttpRequest) -> HttpResponse:
    form = RegisterRunnerForm(request.POST)
    if not form.is_valid():
        return _runners_page(request, form, status=400)
    name = form.cleaned_data["name"]
    with transaction.atomic():
        runner = Runner.objects.create(name=name)
        Event.objects.record("runner.registered", by=request.user, payload={"runner": name})
        token = runner.issue_token(by=request.user)
    # The token is rendered once, in this response; only its hash is kept.
    return render(
        request,
        "fleet/runner_registered.html",
        {
            "runner": runner,
            "token": token,
            "token_file": token_file(name),
            "command": start_command(request, name),
        },
        status=201,
    )


@require_POST
@role_required(LEAD)
def runner_revoke(request: HttpRequest, name: str) -> HttpResponse:
    runner = get_object_or_404(Runner, name=name)
    if request.POST.get("confirm") != "yes":
        messages.error(request, f"Not revoked: tick the box to confirm revoking {runner.name}.")
    elif runner.token_revoked_at is not None:
        messages.info(request, f"The token of {runner.name} was already revoked.")
    else:
        runner.revoke_token(by=request.user)
        messages.success(
            request,
            f"The token of {runner.name} is revoked: it stops at its next sync and its agents' "
            "tmux sessions are left running (shown as unknown) until a runner adopts them.",
        )
    return redirect("fleet-runners")
