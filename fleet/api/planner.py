"""Orchestrator agents draft plans, waves and tasks; people approve them.

The drafts go through the same forms the planner pages use, so an agent's draft is
validated exactly like a lead's; a refused draft changes nothing."""

from __future__ import annotations

from typing import Literal

from django import forms
from django.db import transaction
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema, Status

from fleet import dispatch, planning
from fleet.api.schemas import KEY, NOT_BLANK, ErrorOut, Id, TaskOut, Text, path_type
from fleet.forms import DECLARED_PATTERN, PlanForm, TaskForm, WaveForm
from fleet.models import Agent, Event, Plan, Task, Wave

router = Router(tags=["planning"])
ERRORS = dict.fromkeys((400, 401, 403, 404, 409, 413, 422, 429, 503), ErrorOut)


class Invalid(Exception):
    """A draft the planner's forms refused, with the form's errors: 422, or what the
    refusal is about when the draft's shape is fine: 409 for a slug or key already
    taken, 404 for a repository that does not exist."""

    def __init__(self, form: forms.BaseForm) -> None:
        super().__init__("invalid draft")
        data = form.errors.get_json_data()
        self.errors = {field: [e["message"] for e in errors] for field, errors in data.items()}
        # What the draft's shape cannot help: a slug or key taken, a repository missing.
        state = {
            (field, e["code"])
            for field, errors in data.items()
            for e in errors
            if e["code"] == "unique" or (field, e["code"]) == ("repository", "invalid_choice")
        }
        shape = sum(len(errors) for errors in data.values()) - len(state)
        self.status, self.code = 422, "invalid"
        if state and not shape:
            missing = ("repository", "invalid_choice") in state
            self.status, self.code = (404, "not_found") if missing else (409, "exists")


SLUG = r"^[a-z0-9][a-z0-9-]*$"


class PlanIn(Schema):
    name: Text = Field(..., max_length=200, pattern=NOT_BLANK)
    slug: Text = Field(..., max_length=60, pattern=SLUG, description="unique: 409 if taken")
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
    key: Text = Field(..., max_length=20, pattern=KEY, description="e.g. T-12; unique")
    kind: Literal[tuple(Task.KINDS)] = "feat"  # type: ignore[valid-type]
    title: Text = Field(..., max_length=200, pattern=NOT_BLANK)
    spec: Text = Field("", description="requirements and acceptance criteria")
    repository: Text = Field(
        ..., max_length=60, pattern=SLUG, description="the repository's slug (404 if none)"
    )
    declared_paths: list[DeclaredPath] = Field(default_factory=list, max_length=500)
    read_only: bool = False


class MatrixRowOut(Schema):
    path: str
    repository: str | None
    strategy: str = Field(..., description='"" while unresolved: owner, sequence or contract')
    owner_task: str | None
    tasks: list[str] = Field(..., description="the tasks declaring the path")
    cells: list[str] = Field(
        ..., description='one per column: "", declares, owns, reads, hands off, keeps, moved'
    )


class MatrixOut(Schema):
    columns: list[str] = Field(
        ..., description="task keys: the wave's own, then tasks running in other waves"
    )
    rows: list[MatrixRowOut]
    unresolved: int


class WaveDetailOut(WaveOut):
    tasks: list[TaskOut]
    matrix: MatrixOut

    @staticmethod
    def resolve_tasks(wave: Wave) -> list:
        return list(wave.tasks.select_related("repository").order_by("key"))

    @staticmethod
    def resolve_matrix(wave: Wave) -> dict:
        return _matrix(wave)


class PlanDetailOut(PlanOut):
    waves: list[WaveDetailOut]

    @staticmethod
    def resolve_waves(plan: Plan) -> list:
        return list(plan.waves.select_related("plan", "drafted_by").order_by("number"))


def _matrix(wave: Wave) -> dict:
    planning.sync_shared(wave)  # as the wave page does: the matrix a lead would see
    found = planning.matrix(wave)
    return {
        "columns": [t.key for t in found.columns],
        "rows": [
            {
                "path": row.shared.path,
                "repository": row.shared.repository.slug if row.shared.repository else None,
                "strategy": row.shared.strategy,
                "owner_task": row.shared.owner_task.key if row.shared.owner_task else None,
                "tasks": [t.key for t in row.members],
                "cells": row.cells,
            }
            for row in found.rows
        ],
        "unresolved": found.unresolved,
    }


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


@router.get("plans/{id:plan_id}", response={200: PlanDetailOut, **ERRORS}, summary="Read a plan")
def read_plan(request: HttpRequest, plan_id: Id):
    """The plan, its waves in order with their tasks, and each wave's shared-file matrix
    (the paths several tasks declare, and how a lead resolved each)."""
    _orchestrator(request)
    return get_object_or_404(Plan.objects.select_related("drafted_by"), pk=plan_id)


@router.post("plans/{id:plan_id}/waves", response={201: WaveOut, **ERRORS}, summary="Add a wave")
def create_wave(request: HttpRequest, plan_id: Id, payload: WaveIn):
    """The plan's next wave, as a draft a lead approves."""
    agent = _orchestrator(request)
    plan = get_object_or_404(Plan, pk=plan_id)
    form = WaveForm(data=payload.dict())
    if not form.is_valid():
        raise Invalid(form)
    wave = planning.add_wave(plan, name=form.cleaned_data["name"], by=agent, drafted_by=agent)
    return Status(201, Wave.objects.select_related("plan", "drafted_by").get(pk=wave.pk))


@router.post("waves/{id:wave_id}/tasks", response={201: TaskOut, **ERRORS}, summary="Add a task")
def create_task(request: HttpRequest, wave_id: Id, payload: TaskIn):
    """A task in a draft wave; 409 once the wave is approved. Shared files it causes
    show in the wave's matrix for the lead."""
    agent = _orchestrator(request)
    wave = get_object_or_404(Wave, pk=wave_id)
    form = TaskForm(data=payload.dict())
    if not form.is_valid():
        raise Invalid(form)
    task = planning.add_task(form.save(commit=False), wave, by=agent, drafted_by=agent)
    return Status(201, task)
