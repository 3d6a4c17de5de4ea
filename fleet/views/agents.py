"""Agents for people: the list, spawning one (token shown once), revoking a token."""

from __future__ import annotations

import shlex
from typing import Any

from django import forms
from django.contrib import messages
from django.db.models import Prefetch, Sum
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from fleet import budgets, live
from fleet import runtime as runtimes
from fleet.models import (
    Agent,
    Checkpoint,
    Event,
    Repository,
    Runtime,
    Task,
    TransitionError,
    slug_validator,
)
from fleet.roles import LEAD, MANAGER, ROLES, role_required, user_roles
from fleet.runner.harnesses import CHOICES as HARNESS_CHOICES
from fleet.spawn import SpawnError, spawn
from fleet.views.live import live_snapshot
from fleet.views.refusals import refused


class SpawnForm(forms.Form):
    repository = forms.ModelChoiceField(queryset=Repository.objects.all(), empty_label=None)
    role = forms.ChoiceField(choices=Agent.ROLE_CHOICES, initial=Agent.BUILDER)
    name = forms.CharField(
        max_length=60, validators=[slug_validator], help_text="lowercase letters, digits and -"
    )
    task = forms.ModelChoiceField(
        queryset=Task.objects.filter(status=Task.READY).select_related("repository"),
        required=False,
        empty_label="(no task)",
        help_text="a builder starts on this ready task in its own worktree",
    )
    harness = forms.ChoiceField(
        choices=HARNESS_CHOICES + [("", "none: I start it by hand")],
        initial="claude",
        required=False,
        help_text="the CLI a runner starts for it in tmux",
    )
    model = forms.CharField(
        max_length=100, required=False, help_text="optional; the CLI's default when empty"
    )
    command = forms.CharField(
        max_length=500,
        required=False,
        help_text='only for the "command" harness: the command line to run in its worktree',
    )

    def clean_name(self) -> str:
        name = self.cleaned_data["name"]
        if Agent.objects.filter(name=name).exists():
            raise forms.ValidationError(f"An agent named {name} already exists.")
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        harness, command = data.get("harness"), (data.get("command") or "").strip()
        if harness == "command" and not command:
            self.add_error("command", 'The "command" harness needs a command to run.')
        elif command and harness != "command":
            self.add_error("command", 'A command is only for the "command" harness.')
        elif command:
            try:
                shlex.split(command)
            except ValueError as exc:
                self.add_error("command", f"This command cannot be read: {exc}.")
        data["command"] = command
        return data


def agents_context() -> dict[str, Any]:
    """The agents page's live table, the same for every viewer (the revoke buttons
    show only to leads, by their role's class on the page)."""
    return {"agents": live.agent_rows()}


@require_GET
@role_required(*ROLES)
def agent_list(request: HttpRequest) -> HttpResponse:
    """Every agent with its state and pulse, live: a heartbeat or a change of state
    shows without a reload."""
    if request.GET.get("live"):
        return live_snapshot("agents")
    return render(
        request,
        "fleet/agents.html",
        {
            **agents_context(),
            "can_manage": LEAD in user_roles(request.user),
            "live_view": "agents",
            "live_key": "",
        },
    )


@require_http_methods(["GET", "POST"])
@role_required(LEAD)
def agent_spawn(request: HttpRequest) -> HttpResponse:
    form = SpawnForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            spawned = spawn(
                repository=form.cleaned_data["repository"],
                role=form.cleaned_data["role"],
                name=form.cleaned_data["name"],
                task=form.cleaned_data["task"],
                by=request.user,
                harness=form.cleaned_data["harness"],
                model=form.cleaned_data["model"].strip(),
                command=form.cleaned_data["command"],
            )
        except SpawnError as exc:
            form.add_error(None, str(exc))
        else:
            runtime = Runtime.objects.select_related("runner").filter(agent=spawned.agent).first()
            # The token is rendered once, in this response, and never stored in clear.
            return render(
                request,
                "fleet/agent_spawned.html",
                {
                    "spawned": spawned,
                    "runtime": runtime,
                    "runner_online": runtime is not None
                    and runtime.runner is not None
                    and runtime.runner.state() == "online",
                },
                status=201,
            )
    return render(request, "fleet/agent_spawn.html", {"form": form})


@require_POST
@role_required(LEAD)
def agent_revoke(request: HttpRequest, name: str) -> HttpResponse:
    agent = get_object_or_404(Agent, name=name)
    if agent.token_revoked_at is None:
        agent.revoke_token(by=request.user)
        messages.success(request, f"The token of {agent.name} is revoked; its calls now get 401.")
    else:
        revoked = Event.objects.filter(agent=agent, kind="agent.token_revoked").first()
        who = f" by {revoked.actor.split(':', 1)[-1]}" if revoked else ""
        at = timezone.localtime(agent.token_revoked_at).strftime("%Y-%m-%d %H:%M:%S")
        messages.info(request, f"The token of {agent.name} was already revoked{who} at {at}.")
    return redirect("fleet-agents")


@require_POST
@role_required(LEAD, MANAGER)
def agent_resume(request: HttpRequest, name: str) -> HttpResponse:
    """Resume a stopped agent (audited); refused while a cap it spends against is
    still spent: raise that cap first."""
    agent = get_object_or_404(Agent, name=name)
    task = Task.objects.select_related("wave").filter(pk=agent.current_task_id).first()
    spent = budgets.spent_budgets(agent, task)
    if agent.status != Agent.STOPPED:
        refused(request, "Not resumed", f"{agent.name} is not stopped", agent)
    elif spent:
        messages.error(
            request, f"Not resumed: {budgets.refusal(spent[0]).message}. Raise that cap first."
        )
    else:
        try:
            agent.resume(by=request.user)
        except TransitionError as exc:
            refused(request, "Not resumed", exc.message, agent)
        else:
            messages.success(request, f"{agent.name} is resumed ({agent.status}).")
    return redirect("fleet-agent", name=agent.name)


def _control(request: HttpRequest, name: str, act, done: str) -> HttpResponse:
    """Run one of people's controls on an agent's CLI; a refusal is said on the page
    (nothing changed), never an error page."""
    agent = get_object_or_404(Agent, name=name)
    try:
        act(agent)
    except runtimes.RuntimeRefused as exc:
        messages.error(request, f"Refused: {exc}. Nothing changed.")
    else:
        messages.success(request, done.format(name=agent.name))
    return redirect("fleet-agent", name=agent.name)


@require_POST
@role_required(LEAD)
def agent_stop(request: HttpRequest, name: str) -> HttpResponse:
    return _control(
        request,
        name,
        lambda agent: runtimes.stop(agent, by=request.user),
        "{name} is stopped: its runner ends the CLI cleanly (its exit command, then a signal).",
    )


@require_POST
@role_required(LEAD)
def agent_kill(request: HttpRequest, name: str) -> HttpResponse:
    if request.POST.get("confirm") != "yes":
        messages.error(request, "Not killed: tick the box to confirm. Nothing changed.")
        return redirect("fleet-agent", name=get_object_or_404(Agent, name=name).name)
    return _control(
        request,
        name,
        lambda agent: runtimes.stop(agent, by=request.user, kill=True),
        "{name} is killed: its runner ends the CLI at once, without the grace period.",
    )


@require_POST
@role_required(LEAD)
def agent_restart(request: HttpRequest, name: str) -> HttpResponse:
    return _control(
        request,
        name,
        lambda agent: runtimes.restart(agent, by=request.user),
        "{name} restarts: a fresh CLI session in the same worktree, booting from its journal.",
    )


class MessageForm(forms.Form):
    subject = forms.CharField(max_length=200)
    body = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)


@require_POST
@role_required(LEAD)
def agent_message(request: HttpRequest, name: str) -> HttpResponse:
    form = MessageForm(request.POST)
    if not form.is_valid():
        agent = get_object_or_404(Agent, name=name)
        messages.error(request, "Not sent: a message needs a subject (200 characters at most).")
        return redirect("fleet-agent", name=agent.name)

    def send(agent: Agent) -> None:
        if not Runtime.objects.filter(agent=agent).exists():
            raise runtimes.RuntimeRefused(f"{agent.name} was not started by a runner")
        runtimes.message(
            agent,
            by=request.user,
            subject=form.cleaned_data["subject"],
            body=form.cleaned_data["body"],
        )

    return _control(
        request,
        name,
        send,
        "Sent to {name}'s inbox; its runner types a nudge once the CLI is idle at its prompt.",
    )


def agent_context(pk: int) -> dict[str, Any] | None:
    """An agent's page: its card, sessions, journal, inbox and spend (None if gone)."""
    found = live._agents(ids=[pk])
    if not found:
        return None
    agent = found[0]
    runtime = Runtime.objects.select_related("runner").filter(agent_id=pk).first()
    if runtime is not None:
        runtime.agent = agent
    spend = agent.spend.aggregate(
        tokens_in=Sum("tokens_in"), tokens_out=Sum("tokens_out"), cost=Sum("cost_usd")
    )
    return {
        "agent": agent,
        "sessions": list(
            agent.sessions.order_by("-started_at").prefetch_related(
                Prefetch(
                    "checkpoints",
                    queryset=Checkpoint.objects.exclude(ref="").order_by("created_at"),
                    to_attr="checkpoints_list",
                )
            )[:20]
        ),
        "journal": list(agent.journal.select_related("task").order_by("-created_at")[:50]),
        "inbox": list(agent.inbox.select_related("task").order_by("-created_at")[:50]),
        "spend_events": list(agent.spend.select_related("task").order_by("-created_at")[:50]),
        "spend": spend,
        "runtime": runtime,
    }


@require_GET
@role_required(*ROLES)
def agent_detail(request: HttpRequest, name: str) -> HttpResponse:
    pk = get_object_or_404(Agent.objects.values_list("pk", flat=True), name=name)
    if request.GET.get("live"):
        return live_snapshot("agent", str(pk))
    context = agent_context(pk)
    if context is None:
        raise Http404(name)
    return render(request, "fleet/agent.html", {**context, "live_view": "agent", "live_key": pk})
