"""People adjudicate a fresh reviewer's findings: accept (a real issue: it goes to the
builder's inbox and a task in review returns to its builder) or overrule (a false
alarm: a reason is required). Verdicts can change until the task merges; every verdict
is an Event with who, when and why. Once the builder resubmits, a person marks each
accepted finding resolved in the new commit."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from fleet.models import Event, Finding, Message, Review, Task, TransitionError

# A verdict can change until the task merges (or is given up).
SETTLED = (Task.MERGING, Task.MERGED, Task.CANCELLED)


class Refusal(Exception):
    """Why a verdict or a resolution was not recorded (nothing changed)."""


def _locked(finding_id: int) -> tuple[Finding, Task]:
    finding = (
        Finding.objects.select_for_update()
        .select_related("review__task__assignee")
        .filter(pk=finding_id)
        .first()
    )
    if finding is None:
        raise Refusal(f"There is no finding {finding_id}.")
    task = Task.objects.select_for_update().get(pk=finding.review.task_id)
    return finding, task


def decide(finding_id: int, *, verdict: str, reason: str = "", by: Any) -> Finding:
    """Record a person's verdict on a finding (see the module docstring)."""
    reason = reason.strip()
    if verdict not in (Finding.ACCEPTED, Finding.OVERRULED):
        raise Refusal("A verdict is accept or overrule.")
    if verdict == Finding.OVERRULED and not reason:
        raise Refusal("Overruling needs a reason (say, “valid for the library version in use”).")
    with transaction.atomic():
        finding, task = _locked(finding_id)
        if finding.review.status != Review.CLOSED:
            raise Refusal("The review is still open: its findings are not all in yet.")
        if task.status in SETTLED:
            raise Refusal(f"{task.key} is {task.get_status_display()}: its verdicts are final.")
        previous = finding.verdict
        if previous == verdict and finding.reason == reason:
            return finding
        finding.verdict, finding.reason = verdict, reason
        finding.decided_by, finding.decided_at = by, timezone.now()
        finding.save(update_fields=["verdict", "reason", "decided_by", "decided_at"])
        Event.objects.record(
            "finding.accept" if verdict == Finding.ACCEPTED else "finding.overrule",
            by=by,
            task=task,
            payload={
                "finding": finding.pk,
                "title": finding.title,
                "previous": previous,
                "reason": reason,
            },
        )
        if verdict == Finding.ACCEPTED and previous != Finding.ACCEPTED:
            _send_back(finding, task, by)
    return finding


def _send_back(finding: Finding, task: Task, by: Any) -> None:
    """An accepted finding goes to the builder; a task in review returns to them."""
    if task.assignee_id:
        where = finding.path + (f":{finding.line_start}" if finding.line_start else "")
        body = "\n\n".join(
            part
            for part in (
                f"{where} [{finding.severity}]",
                finding.body,
                f"Suggested fix: {finding.suggested_fix}" if finding.suggested_fix else "",
                f"Note from {by.get_username()}: {finding.reason}" if finding.reason else "",
            )
            if part
        )
        Message.objects.create(
            recipient_id=task.assignee_id,
            sender_user=by,
            task=task,
            subject=f"Accepted finding on {task.key}: {finding.title}",
            body=body,
        )
    if task.status == Task.IN_REVIEW:
        try:
            task.request_changes(by=by, reason=f"finding accepted: {finding.title}")
        except TransitionError as exc:  # moved meanwhile (we hold its lock: unlikely)
            raise Refusal(exc.message) from exc


def resolve(finding_id: int, *, by: Any) -> Finding:
    """Mark an accepted finding fixed by the builder's resubmitted commit."""
    with transaction.atomic():
        finding, task = _locked(finding_id)
        if finding.verdict != Finding.ACCEPTED:
            raise Refusal("Only an accepted finding is resolved.")
        if task.status in SETTLED:
            raise Refusal(f"{task.key} is {task.get_status_display()}: its findings are final.")
        if not task.head_sha or task.head_sha == finding.review.commit_sha:
            raise Refusal(
                f"{task.key} has not been resubmitted since the review: nothing to check yet."
            )
        if finding.resolved_in_commit == task.head_sha:
            return finding
        finding.resolved_in_commit = task.head_sha
        finding.save(update_fields=["resolved_in_commit"])
        Event.objects.record(
            "finding.resolve",
            by=by,
            task=task,
            payload={"finding": finding.pk, "title": finding.title, "commit": task.head_sha},
        )
    return finding


def queue() -> list[Finding]:
    """What waits for a person: pending findings of closed reviews, and accepted ones
    not yet resolved in a resubmitted commit, for tasks not yet merged."""
    findings = (
        Finding.objects.filter(review__status=Review.CLOSED)
        .filter(Q(verdict=Finding.PENDING) | Q(verdict=Finding.ACCEPTED, resolved_in_commit=""))
        .exclude(review__task__status__in=SETTLED)
        .select_related("review__task__repository", "review__reviewer", "decided_by")
        .order_by("review__task__key", "review_id", "path", "line_start", "pk")
    )
    return [
        f
        for f in findings
        if f.verdict == Finding.PENDING
        or (
            f.verdict == Finding.ACCEPTED
            and not f.resolved_in_commit
            and f.review.task.head_sha
            and f.review.task.head_sha != f.review.commit_sha
        )
    ]
