"""A task's page (branch facts, the stale-base gate, merges and checks) and the
repositories page (worktrees and their disk use)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from fleet import merging, planning
from fleet.git import facts, merge, worktrees
from fleet.git.errors import GitError
from fleet.git.repo import head_sha
from fleet.models import FileClaim, MergeRequest, Repository, Task, TransitionError
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
        allowed = planning.allowed_paths(task)
        branch = facts.branch_facts(repository.path, main=main, head=head, allowed=allowed)
        lost = facts.stale_base_report(repository.path, main=main, head=head)
    except GitError as exc:
        return {"branch_error": str(exc)}
    return {"facts": branch, "lost": lost, "declared": allowed}


def _ownership_gate(task: Task, state: dict[str, Any]) -> dict[str, Any] | None:
    """The gate as worked out at submit, or (before submit) on the branch as it is."""
    if task.ownership:
        return {**task.ownership, "when": "at submit"}
    branch = state.get("facts")
    if branch is None:
        return None
    owned = planning.owned_by_others(task, [f.path for f in branch.files])
    return {
        "ok": not branch.outside and not owned,
        "outside": branch.outside,
        "owned": owned,
        "changed": len(branch.files),
        "when": "on the branch now",
    }


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
    context["ownership"] = _ownership_gate(task, context)
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


@require_GET
@role_required(*ROLES)
def repository_list(request: HttpRequest) -> HttpResponse:
    rows = []
    now = timezone.now()
    for repository in Repository.objects.order_by("name"):
        claims = list(
            FileClaim.objects.live(now)
            .filter(repository=repository)
            .select_related("agent", "task")
            .order_by("path", "mode")
        )
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
                "claims": claims,
                "tree": claim_tree(claims),
                "queue": repository.merges.filter(result=MergeRequest.PENDING)
                .select_related("task")
                .order_by("position"),
            }
        )
    return render(request, "fleet/repositories.html", {"rows": rows})
