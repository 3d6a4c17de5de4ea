"""A task's page (branch facts, the stale-base gate, merges and checks) and the
repositories page (worktrees and their disk use)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from fleet import merging
from fleet.git import facts, merge, worktrees
from fleet.git.errors import GitError
from fleet.git.repo import head_sha
from fleet.models import MergeRequest, Repository, Task, TransitionError
from fleet.roles import LEAD, ROLES, role_required, user_roles


def _main_ref(repository: Repository) -> str:
    """Main's tip, freshly fetched (the local branch when there is no remote)."""
    return merge.tip(
        repository.path, remote=repository.remote_name, branch=repository.default_branch
    )


def _branch_state(task: Task) -> dict[str, Any]:
    """Facts and the stale-base report, or the one-line reason there are none."""
    repository = task.repository
    try:
        main = _main_ref(repository)
        try:
            head = task.head_sha or head_sha(repository.path, f"refs/heads/{task.branch}")
        except GitError:
            return {"branch_error": f"{task.branch} does not exist yet"}
        # Claims are released at submit; they still say which paths the task meant.
        allowed = list(task.declared_paths or []) + list(
            task.claims.values_list("path", flat=True).distinct()
        )
        branch = facts.branch_facts(repository.path, main=main, head=head, allowed=allowed)
        lost = facts.stale_base_report(repository.path, main=main, head=head)
    except GitError as exc:
        return {"branch_error": str(exc)}
    return {"facts": branch, "lost": lost, "declared": allowed}


@require_GET
@role_required(*ROLES)
def task_detail(request: HttpRequest, key: str) -> HttpResponse:
    task = get_object_or_404(
        Task.objects.select_related("repository", "wave__plan", "assignee"), key=key
    )
    context = {
        "task": task,
        "merges": task.merge_requests.order_by("-created_at"),
        "checks": task.checks.order_by("-created_at")[:20],
        "is_lead": LEAD in user_roles(request.user),
        **_branch_state(task),
    }
    context["worktree_exists"] = bool(task.worktree_path) and Path(task.worktree_path).exists()
    return render(request, "fleet/task.html", context)


@require_POST
@role_required(LEAD)
def task_rebase(request: HttpRequest, key: str) -> HttpResponse:
    """Rebase the agent's worktree onto fresh main, when it is clean and applies cleanly."""
    task = get_object_or_404(Task.objects.select_related("repository"), key=key)
    if not task.worktree_path or not Path(task.worktree_path).exists():
        messages.error(request, f"{task.key} has no worktree to rebase.")
        return redirect("fleet-task", key=key)
    try:
        main = _main_ref(task.repository)
        conflicts = worktrees.rebase(
            Path(task.worktree_path),
            onto=main,
            branch=task.branch,
            expect_head=task.head_sha or None,  # once submitted: only the submitted commit
        )
    except GitError as exc:
        messages.error(request, f"Not rebased: {exc}")
        return redirect("fleet-task", key=key)
    if conflicts and conflicts[0].startswith("("):
        messages.error(request, f"Not rebased {conflicts[0]}; the branch is unchanged.")
    elif conflicts:
        messages.error(
            request,
            f"Not rebased: it would conflict in {', '.join(conflicts)}; the branch is unchanged "
            "and the builder must resolve it.",
        )
    else:
        new_head = head_sha(task.worktree_path)
        if task.head_sha:
            Task.objects.filter(pk=task.pk).update(head_sha=new_head)
        messages.success(request, f"Rebased {task.branch} onto {main[:10]}.")
    return redirect("fleet-task", key=key)


@require_POST
@role_required(LEAD)
def task_queue_merge(request: HttpRequest, key: str) -> HttpResponse:
    """Approve a reviewed task (if it is still in review) and queue it for merging."""
    task = get_object_or_404(Task, key=key)
    try:
        if task.status == Task.IN_REVIEW:
            task.approve(by=request.user)
        merging.enqueue(task, by=request.user)
    except TransitionError as exc:
        messages.error(request, f"Not queued: {exc.message}")
    else:
        messages.success(request, f"{task.key} is queued for merging.")
    return redirect("fleet-task", key=key)


@require_GET
@role_required(*ROLES)
def repository_list(request: HttpRequest) -> HttpResponse:
    rows = []
    for repository in Repository.objects.order_by("name"):
        tasks = repository.tasks.exclude(worktree_path="").order_by("key")
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
        kept = MergeRequest.objects.filter(
            repository=repository, result=MergeRequest.MERGED, log__startswith="kept"
        ).select_related("task")
        rows.append(
            {
                "repository": repository,
                "worktrees": trees,
                "bytes": sum(t["bytes"] for t in trees),
                "kept": kept,
                "queue": repository.merges.filter(result=MergeRequest.PENDING)
                .select_related("task")
                .order_by("position"),
            }
        )
    return render(request, "fleet/repositories.html", {"rows": rows})
