"""Orchestrator agents draft plans, waves and tasks; people approve them.

The drafts go through the same forms the planner pages use, so an agent's draft is
validated exactly like a lead's; a refused draft changes nothing."""

from __future__ import annotations

from django import forms
from django.db import transaction
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema, Status

from fleet import dispatch, planning
from fleet.api.schemas import ErrorOut, TaskOut, Text, path_type
from fleet.forms import DECLARED_PATTERN, PlanForm, TaskForm, WaveForm
from fleet.models import Agent, Event, Plan, Wave

router = Router(tags=["planning"])
ERRORS = dict.fromkeys((400, 401, 403, 404, 409, 413, 422, 429, 503), ErrorOut)


class Invalid(Exception):
    """A draft the planner's forms refused (the API's 422, with the form's errors)."""

    def __init__(self, form: forms.BaseForm) -> None:
        super().__init__("invalid draft")
        self.errors = {
            field: [e["message"] for e in errors]
            for field, errors in form.errors.get_json_data().items()
        }


class PlanIn(Schema):
    name: Text = Field(..., max_length=200)
    slug: Text = Field(..., max_length=60)
    description: Text = ""


class PlanOut(Schema):
    id: int
    name: str
    slug: str
    description: str
    drafted_by: str | None = Field(None, alias="drafted_by.name")


class WaveIn(Schema):
    name: Text = Field("", max_length=200)


class WaveOut(Schema):
    id: int
    plan: str = Field(..., alias="plan.slug")
    number: int
    name: str
    status: str
    drafted_by: str | None = Field(None, alias="drafted_by.name")


# Checked by the form (as a lead's draft is, every field's errors at once); the
# schema states its rules.
DeclaredPath = path_type(
    None,
    pattern=DECLARED_PATTERN,
    description="a file, a directory (ending in /) or a glob (src/**/*.py), relative to"
    " the repository root, in its one spelling (the server also takes ./src//*.py for"
    " src/*.py)",
)


class TaskIn(Schema):
    key: Text = Field(..., max_length=20, description="e.g. T-12")
    kind: Text = "feat"
    title: Text = Field(..., max_length=200)
    spec: Text = Field("", description="requirements and acceptance criteria")
    repository: Text = Field(..., max_length=60, description="the repository's slug")
    declared_paths: list[DeclaredPath] = Field(default_factory=list, max_length=500)
    read_only: bool = False


def _orchestrator(request: HttpRequest) -> Agent:
    agent = request.auth
    dispatch.require_role(agent, Agent.ORCHESTRATOR, action="draft plans")
    return agent


@router.post("plans", response={201: PlanOut, **ERRORS}, summary="Draft a plan")
def create_plan(request: HttpRequest, payload: PlanIn):
    """An orchestrator drafts a plan (no waves yet: add them in order)."""
    agent = _orchestrator(request)
    form = PlanForm(data=payload.dict())
    if not form.is_valid():
        raise Invalid(form)
    with transaction.atomic():
        plan = form.save(commit=False)
        plan.drafted_by = agent
        plan.save()
        Event.objects.record("plan.create", by=agent, plan=plan)
    return Status(201, plan)


@router.post("plans/{int:plan_id}/waves", response={201: WaveOut, **ERRORS}, summary="Add a wave")
def create_wave(request: HttpRequest, plan_id: int, payload: WaveIn):
    """The plan's next wave, as a draft a lead approves."""
    agent = _orchestrator(request)
    plan = get_object_or_404(Plan, pk=plan_id)
    form = WaveForm(data=payload.dict())
    if not form.is_valid():
        raise Invalid(form)
    wave = planning.add_wave(plan, name=form.cleaned_data["name"], by=agent, drafted_by=agent)
    return Status(201, Wave.objects.select_related("plan", "drafted_by").get(pk=wave.pk))


@router.post("waves/{int:wave_id}/tasks", response={201: TaskOut, **ERRORS}, summary="Add a task")
def create_task(request: HttpRequest, wave_id: int, payload: TaskIn):
    """A task in a draft wave; 409 once the wave is approved. Shared files it causes
    show in the wave's matrix for the lead."""
    agent = _orchestrator(request)
    wave = get_object_or_404(Wave, pk=wave_id)
    form = TaskForm(data=payload.dict())
    if not form.is_valid():
        raise Invalid(form)
    task = planning.add_task(form.save(commit=False), wave, by=agent, drafted_by=agent)
    return Status(201, task)
