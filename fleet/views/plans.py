"""The planner: plans, waves (tasks, the shared-file matrix, the preflight, approval)
and task editing. Leads change things; every signed-in person may look."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from fleet import planning
from fleet.forms import (
    ApproveForm,
    BudgetForm,
    DecisionForm,
    MoveForm,
    PlanForm,
    TaskForm,
    WaveForm,
)
from fleet.models import Budget, CheckRun, Event, Plan, SharedFile, Task, TransitionError, Wave
from fleet.roles import LEAD, MANAGER, ROLES, role_required, user_roles
from fleet.views.live import live_snapshot
from fleet.views.refusals import refused

CENTS = Decimal("0.01")


def _wave(slug: str, number: int) -> Wave:
    return get_object_or_404(Wave.objects.select_related("plan"), plan__slug=slug, number=number)


def _wave_url(wave: Wave, anchor: str = "") -> str:
    url = reverse("fleet-wave", args=[wave.plan.slug, wave.number])
    return f"{url}#{anchor}" if anchor else url


@require_http_methods(["GET", "POST"])
@role_required(*ROLES)
def plan_list(request: HttpRequest) -> HttpResponse:
    is_lead = LEAD in user_roles(request.user)
    form = PlanForm(request.POST or None)
    if request.method == "POST":
        if not is_lead:
            messages.error(request, "Only a lead creates plans.")
            return redirect("fleet-plans")
        if form.is_valid():
            with transaction.atomic():
                plan = form.save(commit=False)
                plan.created_by = request.user
                plan.save()
                Wave.objects.create(plan=plan, number=1, name="Foundation")
                Event.objects.record("plan.create", by=request.user, plan=plan)
            messages.success(request, f"Plan {plan.name} created with its first wave.")
            return redirect("fleet-plan", slug=plan.slug)
    plans = Plan.objects.select_related("created_by", "drafted_by").annotate(
        wave_count=Count("waves", distinct=True), task_count=Count("waves__tasks")
    )
    return render(
        request,
        "fleet/plans.html",
        {"plans": plans, "form": form, "is_lead": is_lead},
        status=400 if form.errors else 200,
    )


@require_http_methods(["GET", "POST"])
@role_required(*ROLES)
def plan_detail(request: HttpRequest, slug: str) -> HttpResponse:
    plan = get_object_or_404(Plan.objects.select_related("drafted_by"), slug=slug)
    is_lead = LEAD in user_roles(request.user)
    form = WaveForm(request.POST or None)
    if request.method == "POST":
        if not is_lead:
            messages.error(request, "Only a lead adds waves.")
            return redirect("fleet-plan", slug=slug)
        if form.is_valid():
            wave = planning.add_wave(plan, name=form.cleaned_data["name"], by=request.user)
            messages.success(request, f"Wave {wave.number} added.")
            return redirect(_wave_url(wave))
    waves = list(
        plan.waves.with_progress()
        .select_related("approved_by", "drafted_by")
        .prefetch_related("tasks")
        .order_by("number")
    )
    return render(
        request,
        "fleet/plan.html",
        {"plan": plan, "waves": waves, "form": form, "is_lead": is_lead},
        status=400 if form.errors else 200,
    )


def plan_repository(wave: Wave) -> str | None:
    """The repository a new task of this wave most likely belongs to: the one most of
    this wave's tasks use, else most of its plan's (None for a plan with no task yet)."""
    for tasks in (Task.objects.filter(wave=wave), Task.objects.filter(wave__plan_id=wave.plan_id)):
        top = (
            tasks.values("repository__slug")
            .annotate(n=Count("id"))
            .order_by("-n", "repository__slug")
            .first()
        )
        if top:
            return top["repository__slug"]
    return None


# The wave's board: a column per stage of a task's life, each card badged with its
# exact state. The last column shows only when a task of the wave ended there.
WAVE_BOARD = [
    ("To do", (Task.DRAFT, Task.READY)),
    ("In progress", (Task.ASSIGNED, Task.WORKING, Task.CHANGES_REQUESTED)),
    ("In review", (Task.IN_REVIEW,)),
    ("Approved", (Task.APPROVED, Task.MERGING)),
    ("Merged", (Task.MERGED,)),
    ("Failed or cancelled", (Task.FAILED, Task.CANCELLED)),
]


def wave_board(tasks: list[Task]) -> list[dict[str, Any]]:
    columns = [
        {"label": label, "statuses": statuses, "tasks": [t for t in tasks if t.status in statuses]}
        for label, statuses in WAVE_BOARD
    ]
    return [c for c in columns if c["tasks"] or Task.FAILED not in c["statuses"]]


def wave_board_context(pk: int) -> dict[str, Any] | None:
    """A wave page's live regions (its title with its state, its board), the same for
    every viewer: lead-only controls are hidden by the page's role classes."""
    wave = Wave.objects.select_related("plan", "drafted_by").filter(pk=pk).first()
    if wave is None:
        return None
    tasks = list(wave.tasks.select_related("repository", "assignee", "drafted_by").order_by("key"))
    return {
        "wave": wave,
        "plan": wave.plan,
        "tasks": tasks,
        "board": wave_board(tasks),
        "other_waves": list(wave.plan.waves.exclude(pk=wave.pk).filter(status=Wave.DRAFT)),
    }


def _wave_context(request: HttpRequest, wave: Wave, **forms: Any) -> dict[str, Any]:
    planning.sync_shared(wave)
    approve_form = forms.get("approve_form") or ApproveForm()
    reasons = approve_form.data if approve_form.is_bound else {}
    live = wave_board_context(wave.pk)
    budget = Budget.objects.filter(scope="wave", wave=wave).first()
    budget_form = forms.get("budget_form") or BudgetForm(
        initial={
            "limit_usd": budget.limit_usd.quantize(CENTS) if budget.limit_usd else None,
            "limit_tokens": budget.limit_tokens,
        }
        if budget
        else None
    )
    return {
        **live,
        "live_view": "wave",
        "live_key": wave.pk,
        "matrix": planning.matrix(wave),
        "preflight": planning.preflight(
            wave,
            override_reason=reasons.get("override_reason", ""),
            crowd_reason=reasons.get("crowd_reason", ""),
        )
        if wave.status == Wave.DRAFT
        else None,
        "budget": budget,
        "budget_form": budget_form,
        "task_form": forms.get("task_form")
        or TaskForm(initial={"repository": plan_repository(wave)}),
        "approve_form": approve_form,
        "strategies": SharedFile.STRATEGY_CHOICES[1:],
        "checks": CheckRun.objects.filter(wave=wave).select_related("repository")[:10],
        "is_lead": LEAD in user_roles(request.user),
        "can_budget": bool(user_roles(request.user) & {LEAD, MANAGER}),
        "crowd_limit": settings.FLEET_WAVE_SOFT_LIMIT,
        "approval": Event.objects.filter(wave=wave, kind="wave.approve").first(),
    }


@require_http_methods(["GET"])
@role_required(*ROLES)
def wave_detail(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    wave = _wave(slug, number)
    if request.GET.get("live"):
        return live_snapshot("wave", str(wave.pk))
    return render(request, "fleet/wave.html", _wave_context(request, wave))


@require_POST
@role_required(LEAD)
def wave_add_task(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    wave = _wave(slug, number)
    form = TaskForm(request.POST)
    if form.is_valid():
        try:
            task = planning.add_task(form.save(commit=False), wave, by=request.user)
        except TransitionError as exc:
            wave.refresh_from_db()
            if wave.status != Wave.DRAFT:  # a stale page: the form is gone from it now
                refused(request, "Not added", exc.message, wave)
                return redirect(_wave_url(wave, "tasks"))
            form.add_error(None, exc.message)
        else:
            messages.success(request, f"{task.key} added to wave {wave.number}.")
            return redirect(_wave_url(wave, "matrix"))
    context = _wave_context(request, wave, task_form=form)
    return render(request, "fleet/wave.html", context, status=400)


@require_POST
@role_required(LEAD)
def wave_decide(request: HttpRequest, slug: str, number: int, shared_id: int) -> HttpResponse:
    wave = _wave(slug, number)
    shared = get_object_or_404(SharedFile, pk=shared_id, wave=wave)
    form = DecisionForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Pick a strategy and the task it is about.")
        return redirect(_wave_url(wave, "matrix"))
    task = Task.objects.filter(key=form.cleaned_data["task"]).first()
    strategy = form.cleaned_data["strategy"]
    try:
        moved = planning.decide(shared, strategy=strategy, task=task, by=request.user)
    except TransitionError as exc:
        refused(request, "Not decided", exc.message, wave)
    else:
        if moved:
            target = Task.objects.get(pk=moved[0].pk).wave
            messages.success(
                request,
                f"{shared.path}: {task.key} keeps it; moved "
                f"{', '.join(t.key for t in moved)} to wave {target.number}.",
            )
        else:
            messages.success(request, f"{shared.path}: {strategy}, {task.key} owns it.")
    return redirect(_wave_url(wave, "matrix"))


@require_POST
@role_required(LEAD, MANAGER)
def wave_budget(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    wave = _wave(slug, number)
    form = BudgetForm(request.POST)
    if not form.is_valid():
        context = _wave_context(request, wave, budget_form=form)
        return render(request, "fleet/wave.html", context, status=400)
    form.save(wave, by=request.user)
    messages.success(request, f"Budget for wave {wave.number} set.")
    return redirect(_wave_url(wave, "preflight"))


@require_POST
@role_required(LEAD)
def wave_approve(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    wave = _wave(slug, number)
    form = ApproveForm(request.POST)
    if form.is_valid():
        try:
            planning.approve(
                wave,
                by=request.user,
                override_reason=form.cleaned_data["override_reason"],
                crowd_reason=form.cleaned_data["crowd_reason"],
            )
        except TransitionError as exc:
            wave.refresh_from_db()
            if wave.status != Wave.DRAFT:  # approved (or more) meanwhile: a stale page
                refused(request, "Not approved", "it is no longer a draft", wave)
                return redirect(_wave_url(wave))
            form.add_error(None, exc.message)
        else:
            wave.refresh_from_db()
            messages.success(request, f"Wave {wave.number} approved. {wave.announcement}")
            return redirect(_wave_url(wave))
    context = _wave_context(request, wave, approve_form=form)
    return render(request, "fleet/wave.html", context, status=400)


@require_http_methods(["GET", "POST"])
@role_required(LEAD)
def task_edit(request: HttpRequest, key: str) -> HttpResponse:
    task = get_object_or_404(Task.objects.select_related("wave__plan", "repository"), key=key)
    locked = not (task.status == Task.DRAFT and task.wave.status == Wave.DRAFT)
    form = TaskForm(request.POST or None, instance=Task.objects.get(pk=task.pk), locked=locked)
    if request.method == "POST" and form.is_valid():
        fields = {name: form.cleaned_data[name] for name in form.changed_data}
        fields.pop("key", None)
        try:
            event = planning.revise(task, by=request.user, **fields)
        except TransitionError as exc:
            form.add_error(None, exc.message)
        else:
            if event is None:
                messages.info(request, "Nothing changed.")
            elif "notified" in event.payload:
                messages.success(
                    request,
                    f"{task.key} is now spec v{task.spec_version};"
                    f" {event.payload['notified']} was told in its inbox.",
                )
            else:
                messages.success(request, f"{task.key} saved.")
            return redirect(_wave_url(task.wave, "tasks"))
    return render(
        request,
        "fleet/task_form.html",
        {"task": task, "form": form, "locked": locked},
        status=400 if form.errors else 200,
    )


@require_POST
@role_required(LEAD)
def task_move(request: HttpRequest, key: str) -> HttpResponse:
    task = get_object_or_404(Task.objects.select_related("wave__plan"), key=key)
    form = MoveForm(request.POST)
    target = None
    if form.is_valid():
        target = Wave.objects.filter(
            plan_id=task.wave.plan_id, number=form.cleaned_data["wave"]
        ).first()
    if target is None:
        messages.error(request, "Pick a wave of this plan to move the task to.")
        return redirect(_wave_url(task.wave, "tasks"))
    try:
        planning.move_task(task, target, by=request.user)
    except TransitionError as exc:
        refused(request, "Not moved", exc.message, task)
        return redirect(_wave_url(task.wave, "tasks"))
    messages.success(request, f"{task.key} moved to wave {target.number}.")
    return redirect(_wave_url(target, "tasks"))
