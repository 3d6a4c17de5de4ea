"""The review workspace's own requests: one file's diff loaded on demand, viewed
marks, the unified/split choice, and people's comments (draft, send, resolve)."""

from __future__ import annotations

import re

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from fleet import workspace
from fleet.adjudication import Refusal
from fleet.git import diffs
from fleet.git.errors import GitError
from fleet.models import ReviewPrefs, Task
from fleet.roles import LEAD, REVIEWER, ROLES, role_required

SHA = re.compile(r"^[0-9a-f]{40}$")
COMMENTERS = (LEAD, REVIEWER)


def _back(key: str, anchor: str = "") -> HttpResponse:
    return redirect(reverse("fleet-task", args=[key]) + (f"#{anchor}" if anchor else ""))


def _int(value: str | None) -> int | None:
    try:
        return int(value or "")
    except ValueError:
        return None


@require_GET
@role_required(*ROLES)
def task_file(request: HttpRequest, key: str) -> HttpResponse:
    """One file of a task's diff (a large one, or one past the first few), rendered
    when a person opens it."""
    task = get_object_or_404(Task.objects.select_related("repository"), key=key)
    path = request.GET.get("path", "")
    base, head = request.GET.get("base", ""), request.GET.get("head", "")
    if not path or not SHA.match(base) or not SHA.match(head):
        return HttpResponseBadRequest("path, base and head (full commit ids) are required")
    try:
        text = diffs.file_diff(task.repository.path, base=base, head=head, path=path)
    except GitError as exc:
        return HttpResponseBadRequest(str(exc))
    parsed = [f for f in diffs.parse(text) if f.path == path]
    if not parsed:
        raise Http404(path)
    split = workspace.prefs(request.user).split
    file = {
        "id": workspace.file_id(path),
        "path": path,
        "hunks": workspace.render_file(parsed[0], split=split),
    }
    return render(request, "fleet/_diff_table.html", {"file": file, "split": split, "task": task})


@require_POST
@role_required(*ROLES)
def task_viewed(request: HttpRequest, key: str) -> HttpResponse:
    """Mark a file viewed (as its patch is now) or not viewed, for this person."""
    task = get_object_or_404(Task, key=key)
    path, patch_hash = request.POST.get("path", ""), request.POST.get("hash", "")
    if not path or len(path) > 500 or not re.match(r"^[0-9a-f]{1,40}$", patch_hash):
        messages.error(request, "Not marked: which file (and its patch) was missing.")
        return _back(key)
    workspace.mark_viewed(
        user=request.user,
        task=task,
        path=path,
        patch_hash=patch_hash,
        viewed=request.POST.get("viewed") != "0",
    )
    if request.htmx:
        return HttpResponse(status=204)
    return _back(key, workspace.file_id(path))


@require_POST
@role_required(*ROLES)
def task_diff_view(request: HttpRequest, key: str) -> HttpResponse:
    """Unified or split, remembered for the person on every task."""
    ReviewPrefs.objects.update_or_create(
        user=request.user, defaults={"split": request.POST.get("split") == "1"}
    )
    return _back(key, "files")


@require_POST
@role_required(*COMMENTERS)
def task_comment(request: HttpRequest, key: str) -> HttpResponse:
    """A draft comment on a line or a range of the task's diff."""
    from fleet.views.tasks import diff_source

    task = get_object_or_404(Task.objects.select_related("repository"), key=key)
    start = _int(request.POST.get("line_start"))
    end = _int(request.POST.get("line_end")) or start
    source = diff_source(task)
    paths = [f.path for f in diffs.parse(source["text"])] if source else []
    try:
        if start is None or end is None:
            raise Refusal("Say which line (or lines) the comment is on.")
        comment = workspace.add_comment(
            task,
            by=request.user,
            path=request.POST.get("path", ""),
            line_start=start,
            line_end=end,
            side=request.POST.get("side", "new"),
            body=request.POST.get("body", ""),
            paths=paths,
        )
    except Refusal as exc:
        messages.error(request, f"Comment not added: {exc}")
        return _back(key, "your-review")
    messages.success(
        request,
        f"Draft comment on {comment.path}:{comment.lines} added; "
        "Request changes sends your drafts to the builder.",
    )
    return _back(key, "your-review")


@require_POST
@role_required(*COMMENTERS)
def task_comment_delete(request: HttpRequest, key: str, comment_id: int) -> HttpResponse:
    try:
        workspace.delete_draft(comment_id, by=request.user)
    except Refusal as exc:
        messages.error(request, f"Not deleted: {exc}")
    return _back(key, "your-review")


@require_POST
@role_required(*COMMENTERS)
def task_comment_resolve(request: HttpRequest, key: str, comment_id: int) -> HttpResponse:
    try:
        messages.success(request, workspace.resolve_comment(comment_id, by=request.user))
    except Refusal as exc:
        messages.error(request, f"Not resolved: {exc}")
    return _back(key, f"comment-{comment_id}")


@require_POST
@role_required(*COMMENTERS)
def task_request_changes(request: HttpRequest, key: str) -> HttpResponse:
    """Send this person's draft comments to the builder in one message."""
    task = get_object_or_404(Task, key=key)
    try:
        messages.success(request, workspace.request_changes(task, by=request.user))
    except Refusal as exc:
        messages.error(request, f"Not sent: {exc}")
    return _back(key)
