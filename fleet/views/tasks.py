"""A task's page (branch facts, the stale-base gate, merges and checks) and the
repositories page (worktrees and their disk use)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib import messages
from django.db import transaction
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from fleet import adjudication, gates, workspace
from fleet.forms import MergeBatchForm
from fleet.git import worktrees
from fleet.git.errors import GitError
from fleet.models import (
    Event,
    FileClaim,
    MergeBatch,
    MergeRequest,
    Repository,
    ReviewComment,
    Task,
    TransitionError,
    Wave,
)
from fleet.roles import LEAD, REVIEWER, ROLES, role_required, user_roles
from fleet.runner import harnesses
from fleet.views.live import live_snapshot
from fleet.views.refusals import refused
from fleet.views.reviews import can_adjudicate


def diff_source(task: Task, state: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What the workspace shows: a merged task's squash commit on main against its
    parent (what landed, see ``gates.branch_state``); else the branch against its merge
    base (``state``: the branch state worked out already). None when there is no diff."""
    if state is None:
        state = gates.branch_state(task, fetch=False)
    branch = state.get("facts")
    if branch is None:
        return None
    landed = bool(state.get("landed"))
    return {"base": branch.merge_base, "head": branch.head, "text": branch.diff, "landed": landed}


def task_live_context(pk: int, *, fetch: bool = False) -> dict[str, Any] | None:
    """A task page's live regions: facts, the gates (and whether it may merge), the
    branch against main with its diff and each finding inline (main as last fetched
    unless ``fetch``), timeline, merges and checks."""
    task = Task.objects.select_related("repository", "wave__plan", "assignee").filter(pk=pk).first()
    if task is None:
        return None
    context = {
        "task": task,
        "timeline": list(task.events.order_by("-id")[:100]),
        "merges": list(task.merge_requests.order_by("-created_at")),
        "checks": list(task.checks.order_by("-created_at")[:20]),
        **gates.branch_state(task, fetch=fetch),
    }
    context["ownership"] = gates.ownership_report(task, context)
    # A merged or cancelled task's gates no longer apply.
    context["gates"] = [] if task.status in adjudication.SETTLED else gates.evaluate(task, context)
    context["dod"] = next((g for g in context["gates"] if g.key == "dod"), None)
    context["all_green"] = bool(context["gates"]) and not gates.red(context["gates"])
    context["merge_pending"] = any(mr.result == MergeRequest.PENDING for mr in context["merges"])
    context["worktree_exists"] = bool(task.worktree_path) and Path(task.worktree_path).exists()
    context["reviews"] = adjudication.reviews_of(task)
    findings = [f for review in context["reviews"] for f in review.findings_list]
    context["next_url"] = reverse("fleet-task", args=[task.key])
    context["diff"] = diff_source(task, context)
    comments = list(
        task.comments.exclude(state=ReviewComment.DRAFT).select_related("author", "resolved_by")
    )
    last_submit = adjudication._submitted_since([task.pk]).get(task.pk)
    for comment in comments:
        comment.resolvable = (
            comment.state == ReviewComment.SENT
            and task.status not in adjudication.SETTLED
            and last_submit is not None
            and comment.sent_at is not None
            and last_submit > comment.sent_at
        )
    context["threads"] = workspace.threads(
        task,
        findings,
        comments,
        head=context["diff"]["head"] if context["diff"] else task.head_sha,
        repo_path=task.repository.path,
    )
    return context


@require_GET
@role_required(*ROLES)
def task_detail(request: HttpRequest, key: str) -> HttpResponse:
    pk = get_object_or_404(Task.objects.values_list("pk", flat=True), key=key)
    if request.GET.get("live"):
        return live_snapshot("task", str(pk))
    context = task_live_context(pk, fetch=True)
    if context is None:
        raise Http404(key)
    roles = user_roles(request.user)
    split = workspace.prefs(request.user).split
    source = context["diff"]
    viewed = workspace.viewed_marks(request.user, context["task"])
    files = (
        workspace.files(
            source["text"], base=source["base"], head=source["head"], split=split, viewed=viewed
        )
        if source
        else []
    )
    context.update(
        is_lead=LEAD in roles,
        can_adjudicate=can_adjudicate(request.user),
        can_comment=bool(roles & {LEAD, REVIEWER}),
        live_view="task",
        live_key=pk,
        split=split,
        files=files,
        viewed_count=sum(f["viewed"] for f in files),
        drafts=list(
            context["task"].comments.filter(author=request.user, state=ReviewComment.DRAFT)
        ),
    )
    return render(request, "fleet/task.html", context)


@require_POST
@role_required(LEAD)
def task_rebase(request: HttpRequest, key: str) -> HttpResponse:
    """Rebase the agent's worktree onto fresh main, when it is clean and applies cleanly."""
    task = get_object_or_404(Task.objects.select_related("repository"), key=key)
    ok, message = gates.rebase(task, by=request.user)
    (messages.success if ok else messages.error)(request, message)
    return redirect("fleet-task", key=key)


@require_POST
@role_required(LEAD)
def task_queue_merge(request: HttpRequest, key: str) -> HttpResponse:
    """Merge by exception: a task whose gates are all green (worked out afresh,
    against main freshly fetched) is approved and enters the merge queue."""
    task = get_object_or_404(Task.objects.select_related("repository", "wave"), key=key)
    try:
        gates.queue_merge(task, by=request.user)
    except TransitionError as exc:
        refused(request, "Not queued", exc.message, task)
    else:
        messages.success(request, f"{task.key} is queued for merging.")
    return redirect("fleet-task", key=key)


@require_POST
@role_required(LEAD)
def task_rereview(request: HttpRequest, key: str) -> HttpResponse:
    """Ask a new fresh reviewer to review the task's submitted commit (or withdraw a
    re-review nobody took yet)."""
    task = get_object_or_404(Task, key=key)
    act = (
        adjudication.withdraw_rereview
        if request.POST.get("action") == "withdraw"
        else adjudication.request_rereview
    )
    try:
        messages.success(request, act(task, by=request.user))
    except adjudication.Refusal as exc:
        messages.error(request, f"Not requested: {exc}")
    return redirect("fleet-task", key=key)


@require_POST
@role_required(LEAD, REVIEWER)
def task_dod_tick(request: HttpRequest, key: str) -> HttpResponse:
    """Tick (or untick) a definition-of-done item a person checks, for the commit
    submitted now."""
    task = get_object_or_404(Task.objects.select_related("repository"), key=key)
    try:
        messages.success(
            request,
            adjudication.tick(
                task,
                item=request.POST.get("item", ""),
                ticked=request.POST.get("ticked") != "0",
                by=request.user,
            ),
        )
    except adjudication.Refusal as exc:
        messages.error(request, f"Not ticked: {exc}")
    return redirect(reverse("fleet-task", args=[key]) + "#dod")


def _set_auto_merge(request: HttpRequest, target: Repository | Wave, where: str) -> HttpResponse:
    """Turn auto-merge on or off for a wave or a repository (audited)."""
    on = request.POST.get("auto_merge") == "1"
    with transaction.atomic():
        target.auto_merge = on
        target.save(update_fields=["auto_merge"])
        subjects = {"wave": target} if isinstance(target, Wave) else {"repository": target}
        Event.objects.record(
            f"{'wave' if isinstance(target, Wave) else 'repository'}.auto_merge",
            by=request.user,
            **subjects,
            payload={"on": on},
        )
    messages.success(
        request,
        f"Auto-merge is {'on' if on else 'off'} for {target}: tasks whose gates are all green "
        + ("enter the merge queue by themselves." if on else "wait for a lead to click Merge."),
    )
    return redirect(where)


@require_POST
@role_required(LEAD)
def repository_auto_merge(request: HttpRequest, slug: str) -> HttpResponse:
    repository = get_object_or_404(Repository, slug=slug)
    return _set_auto_merge(request, repository, reverse("fleet-repository", args=[slug]))


@require_POST
@role_required(LEAD)
def repository_agent_permissions(request: HttpRequest, slug: str) -> HttpResponse:
    """What agent CLIs a runner starts in this repository may do without asking
    (audited); they take effect at each CLI's next start."""
    repository = get_object_or_404(Repository, slug=slug)
    chosen = request.POST.get("agent_permissions", "")
    if chosen not in dict(harnesses.PERMISSIONS):
        messages.error(request, f"Unknown agent permissions {chosen!r}; nothing changed.")
    elif chosen != repository.agent_permissions:
        with transaction.atomic():
            before = repository.agent_permissions
            repository.agent_permissions = chosen
            repository.save(update_fields=["agent_permissions"])
            Event.objects.record(
                "repository.agent_permissions",
                by=request.user,
                repository=repository,
                payload={"from": before, "to": chosen},
            )
        messages.success(
            request,
            f"Agents in {repository} now run with {chosen!r} permissions, from each CLI's "
            "next start (restart an agent to apply it now).",
        )
    return redirect("fleet-repository", slug=repository.slug)


@require_POST
@role_required(LEAD)
def repository_merge_batch(request: HttpRequest, slug: str) -> HttpResponse:
    """How many queued tasks the merge queue tests as one batch (audited); the next
    batch the worker builds uses it."""
    repository = get_object_or_404(Repository, slug=slug)
    before = repository.merge_batch_size
    form = MergeBatchForm(request.POST)
    if not form.is_valid():
        errors = " ".join(form.errors.get("merge_batch_size", ["Enter a whole number."]))
        messages.error(request, f"Batch size not changed: {errors}")
    elif form.cleaned_data["merge_batch_size"] != before:
        with transaction.atomic():
            repository.merge_batch_size = form.cleaned_data["merge_batch_size"]
            repository.save(update_fields=["merge_batch_size"])
            Event.objects.record(
                "repository.merge_batch_size",
                by=request.user,
                repository=repository,
                payload={"from": before, "to": repository.merge_batch_size},
            )
        size = repository.merge_batch_size
        messages.success(
            request,
            f"The merge queue of {repository} now tests "
            + ("one task at a time." if size == 1 else f"up to {size} tasks together."),
        )
    return redirect("fleet-repository", slug=slug)


@require_POST
@role_required(LEAD)
def wave_auto_merge(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    wave = get_object_or_404(Wave.objects.select_related("plan"), plan__slug=slug, number=number)
    return _set_auto_merge(request, wave, reverse("fleet-wave", args=[slug, number]))


def claim_tree(claims: list[FileClaim]) -> list[dict[str, Any]]:
    """Live claims as the lines of a file tree: each directory once, then its files
    with their holders, indented by depth."""
    lines: list[dict[str, Any]] = []
    seen_dirs: set[str] = set()
    by_path: dict[str, list[FileClaim]] = {}
    for claim in claims:
        by_path.setdefault(claim.path, []).append(claim)
    for path in sorted(by_path):
        parts = path.split("/")
        for depth in range(len(parts) - 1):
            directory = "/".join(parts[: depth + 1])
            if directory not in seen_dirs:
                seen_dirs.add(directory)
                lines.append({"depth": depth, "name": parts[depth] + "/", "claims": []})
        lines.append({"depth": len(parts) - 1, "name": parts[-1], "claims": by_path[path]})
    return lines


def _worktrees(tasks) -> list[dict[str, Any]]:
    """The worktrees that exist, with their disk use and uncommitted files."""
    trees = []
    for task in tasks:
        path = Path(task.worktree_path)
        if not path.exists():
            continue
        try:
            dirty = worktrees.dirty_files(path)
        except GitError as exc:
            dirty = [str(exc)]
        trees.append(
            {"task": task, "path": path, "bytes": worktrees.disk_usage(path), "dirty": dirty}
        )
    return trees


def _live_claims(repository: Repository | None = None) -> list[FileClaim]:
    claims = FileClaim.objects.live(timezone.now()).select_related("agent", "task", "repository")
    if repository is not None:
        claims = claims.filter(repository=repository)
    return list(claims.order_by("repository__name", "path", "mode"))


def _pending(repository: Repository | None = None) -> list[MergeRequest]:
    queue = MergeRequest.objects.filter(result=MergeRequest.PENDING).select_related(
        "task", "repository"
    )
    if repository is not None:
        queue = queue.filter(repository=repository)
    return list(queue.order_by("repository__name", "position"))


@require_GET
@role_required(*ROLES)
def repository_list(request: HttpRequest) -> HttpResponse:
    """Every repository with its worktrees (and their disk use), queue and claims."""
    repositories = list(Repository.objects.order_by("name"))
    tasks = Task.objects.exclude(worktree_path="").select_related("repository").order_by("key")
    claims, queue = _live_claims(), _pending()
    kept = MergeRequest.objects.filter(
        result=MergeRequest.MERGED, log__startswith="kept"
    ).select_related("task")
    rows = []
    for repository in repositories:
        trees = _worktrees(t for t in tasks if t.repository_id == repository.pk)
        mine = [c for c in claims if c.repository_id == repository.pk]
        rows.append(
            {
                "repository": repository,
                "worktrees": trees,
                "bytes": sum(t["bytes"] for t in trees),
                "kept": [mr for mr in kept if mr.repository_id == repository.pk],
                "claims": mine,
                "tree": claim_tree(mine),
                "queue": [mr for mr in queue if mr.repository_id == repository.pk],
            }
        )
    return render(request, "fleet/repositories.html", {"rows": rows})


BOARD = [
    Task.DRAFT,
    Task.READY,
    Task.ASSIGNED,
    Task.WORKING,
    Task.IN_REVIEW,
    Task.CHANGES_REQUESTED,
    Task.APPROVED,
    Task.MERGING,
    Task.MERGED,
]
BOARD_DONE = 10  # merged tasks shown on the board, newest first


def repository_context(pk: int) -> dict[str, Any] | None:
    """A repository page's live regions: the tasks board by state, claims, queue."""
    repository = Repository.objects.filter(pk=pk).first()
    if repository is None:
        return None
    tasks = list(
        Task.objects.filter(repository=repository)
        .exclude(status__in=[Task.MERGED, Task.CANCELLED, Task.FAILED])
        .select_related("assignee", "wave__plan")
        .order_by("key")
    )
    tasks += list(
        Task.objects.filter(repository=repository, status=Task.MERGED)
        .select_related("assignee", "wave__plan")
        .order_by("-updated_at")[:BOARD_DONE]
    )
    labels = dict(Task.STATUS_CHOICES)
    claims = _live_claims(repository)
    return {
        "repository": repository,
        "board": [
            {"status": s, "label": labels[s], "tasks": [t for t in tasks if t.status == s]}
            for s in BOARD
        ],
        "claims": claims,
        "tree": claim_tree(claims),
        "queue": _pending(repository),
    }


@require_GET
@role_required(*ROLES)
def repository_detail(request: HttpRequest, slug: str) -> HttpResponse:
    pk = get_object_or_404(Repository.objects.values_list("pk", flat=True), slug=slug)
    if request.GET.get("live"):
        return live_snapshot("repository", str(pk))
    context = repository_context(pk)
    if context is None:
        raise Http404(slug)
    repository = context["repository"]
    trees = _worktrees(repository.tasks.exclude(worktree_path="").order_by("key"))
    context.update(
        worktrees=trees,
        bytes=sum(t["bytes"] for t in trees),
        live_view="repository",
        live_key=repository.pk,
    )
    return render(request, "fleet/repository.html", context)


RECENT_MERGES = 30
RECENT_BATCHES = 6


def _batches() -> list[MergeBatch]:
    """Open batches and the latest done ones, each with its tasks and its trials."""
    batches = list(
        MergeBatch.objects.select_related("repository")
        .prefetch_related(Prefetch("members", queryset=MergeRequest.objects.select_related("task")))
        .order_by("-pk")[:RECENT_BATCHES]
    )
    for batch in batches:
        members = {mr.task.key: mr for mr in batch.members.all()}
        keys = list(dict.fromkeys(k for t in batch.trials for k in t["tasks"]))
        keys += [key for key in sorted(members) if key not in keys]
        batch.rows = [{"key": key, "mr": members.get(key)} for key in keys]
        for number, trial in enumerate(batch.trials, start=1):
            trial["number"], trial["size"] = number, len(trial["tasks"])
    return batches


def merges_context() -> dict[str, Any]:
    """The merge queue: pending entries per repository, the batches being tested (and
    the latest done), then the latest results."""
    return {
        "queue": _pending(),
        "batches": _batches(),
        "recent": list(
            MergeRequest.objects.exclude(result=MergeRequest.PENDING)
            .select_related("task", "repository")
            .order_by("-updated_at", "-pk")[:RECENT_MERGES]
        ),
    }


@require_GET
@role_required(*ROLES)
def merge_queue(request: HttpRequest) -> HttpResponse:
    if request.GET.get("live"):
        return live_snapshot("merges")
    return render(
        request, "fleet/merges.html", {**merges_context(), "live_view": "merges", "live_key": ""}
    )
