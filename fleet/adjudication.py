"""People adjudicate a fresh reviewer's findings: accept (a real issue: it goes to the
builder's inbox and a task in review returns to its builder) or overrule (a false
alarm: a reason is required). Verdicts can change until the task merges; every verdict
is an Event with who, when and why. Once the builder resubmits, a person marks each
accepted finding resolved in the new commit."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Max, Q
from django.utils import timezone

from fleet.models import Event, Finding, Message, Review, Task, TransitionError

# A verdict can change until the task merges (or is given up): an accept while it is
# approved or in the merge queue takes it back (the queue drops a task that left
# ``merging``), so auto-merge never closes the window on a person.
SETTLED = (Task.MERGED, Task.CANCELLED)
RETURNABLE = (Task.IN_REVIEW, Task.APPROVED, Task.MERGING)


class Refusal(Exception):
    """Why a verdict or a resolution was not recorded (nothing changed)."""


REASON_MAX = 500


def _locked(finding_id: int) -> tuple[Finding, Task]:
    """The finding and its task, locked task first (the order dispatch uses), and
    only their own rows (PostgreSQL locks no nullable outer join)."""
    task_id = Finding.objects.filter(pk=finding_id).values_list("review__task_id", flat=True)
    task_id = task_id.first()
    if task_id is None:
        raise Refusal(f"There is no finding {finding_id}.")
    task = Task.objects.select_for_update(no_key=True, of=("self",)).get(pk=task_id)
    finding = (
        Finding.objects.select_for_update(no_key=True, of=("self",))
        .select_related("review")
        .get(pk=finding_id)
    )
    return finding, task


def decide(finding_id: int, *, verdict: str, reason: str = "", by: Any) -> str:
    """Record a person's verdict on a finding (see the module docstring); returns what
    happened, in a sentence for the person."""
    reason = reason.strip()
    if verdict not in (Finding.ACCEPTED, Finding.OVERRULED):
        raise Refusal("A verdict is accept or overrule.")
    if verdict == Finding.OVERRULED and not reason:
        raise Refusal("Overruling needs a reason (say, “valid for the library version in use”).")
    if len(reason) > REASON_MAX:
        raise Refusal(f"Keep the reason under {REASON_MAX} characters.")
    with transaction.atomic():
        finding, task = _locked(finding_id)
        if finding.review.status != Review.CLOSED:
            raise Refusal("The review is still open: its findings are not all in yet.")
        if task.status in SETTLED:
            raise Refusal(f"{task.key} is {task.get_status_display()}: its verdicts are final.")
        previous = finding.verdict
        if previous == verdict and finding.reason == reason:
            return f"“{finding.title}” was already {verdict}; nothing changed."
        finding.verdict, finding.reason = verdict, reason
        finding.decided_by, finding.decided_at = by, timezone.now()
        finding.resolved_in_commit = ""  # a new verdict is resolved anew
        finding.save(
            update_fields=["verdict", "reason", "decided_by", "decided_at", "resolved_in_commit"]
        )
        Event.objects.record(
            "finding.accept" if verdict == Finding.ACCEPTED else "finding.overrule",
            by=by,
            **task._event_subjects(),
            payload={
                "finding": finding.pk,
                "title": finding.title,
                "previous": previous,
                "reason": reason,
            },
        )
        if verdict == Finding.ACCEPTED and previous != Finding.ACCEPTED:
            return _send_back(finding, task, by)
        if previous == Finding.ACCEPTED:  # the builder was told to fix it: untell them
            _tell_builder(
                task,
                by,
                f"Withdrawn finding on {task.key}: {finding.title} (do not fix it)",
                f"Overruled by {by.get_username()}: {reason}",
            )
            return f"Overruled “{finding.title}”; its builder is told not to fix it."
        return f"Overruled “{finding.title}” on {task.key}."


def _tell_builder(task: Task, by: Any, subject: str, body: str) -> bool:
    if not task.assignee_id:
        return False
    Message.objects.create(
        recipient_id=task.assignee_id, sender_user=by, task=task, subject=subject, body=body
    )
    return True


def _send_back(finding: Finding, task: Task, by: Any) -> str:
    """An accepted finding goes to the builder; a task in review returns to them."""
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
    told = _tell_builder(task, by, f"Accepted finding on {task.key}: {finding.title}", body)
    if task.status in RETURNABLE:
        try:
            task.request_changes(by=by, reason=f"finding accepted: {finding.title}")
        except TransitionError as exc:  # moved meanwhile (we hold its lock: unlikely)
            raise Refusal(exc.message) from exc
        return f"Accepted “{finding.title}”: {task.key} went back to its builder with it."
    if told:
        return f"Accepted “{finding.title}”: sent to {task.key}'s builder."
    return (
        f"Accepted “{finding.title}”; {task.key} has no builder right now, so the next one "
        "finds it on the task page."
    )


def _submitted_since(task_ids: list[int]) -> dict[int, Any]:
    """Each task's latest submit time (one query)."""
    rows = (
        Event.objects.filter(kind="task.submit", task_id__in=task_ids)
        .values("task_id")
        .annotate(last=Max("created_at"))
    )
    return {row["task_id"]: row["last"] for row in rows}


def _resolvable(finding: Finding, task: Task, last_submit) -> bool:
    """An accepted finding can be checked once the builder resubmitted after it was
    accepted and the task is back in review."""
    return (
        finding.verdict == Finding.ACCEPTED
        and not finding.resolved_in_commit
        and task.status in (Task.IN_REVIEW, Task.APPROVED)
        and last_submit is not None
        and finding.decided_at is not None
        and last_submit > finding.decided_at
    )


def resolve(finding_id: int, *, by: Any) -> str:
    """Mark an accepted finding fixed by the builder's resubmitted commit."""
    with transaction.atomic():
        finding, task = _locked(finding_id)
        if finding.verdict != Finding.ACCEPTED:
            raise Refusal("Only an accepted finding is resolved.")
        if finding.resolved_in_commit:
            return f"“{finding.title}” was already resolved."
        if task.status in SETTLED:
            raise Refusal(f"{task.key} is {task.get_status_display()}: its findings are final.")
        if not _resolvable(finding, task, _submitted_since([task.pk]).get(task.pk)):
            raise Refusal(
                f"{task.key} has not been resubmitted since the finding was accepted: "
                "nothing to check yet."
            )
        finding.resolved_in_commit = task.head_sha
        finding.save(update_fields=["resolved_in_commit"])
        Event.objects.record(
            "finding.resolve",
            by=by,
            **task._event_subjects(),
            payload={"finding": finding.pk, "title": finding.title, "commit": task.head_sha},
        )
    return f"“{finding.title}” is resolved in {task.head_sha[:10]}."


def queue(tasks=None) -> list[Finding]:
    """What waits for a person: pending findings of closed reviews, and accepted ones
    the builder has resubmitted since, for tasks not yet merging (optionally only
    these tasks). Each carries ``resolvable``."""
    findings = (
        Finding.objects.filter(review__status=Review.CLOSED)
        .filter(Q(verdict=Finding.PENDING) | Q(verdict=Finding.ACCEPTED, resolved_in_commit=""))
        .exclude(review__task__status__in=SETTLED)
        .select_related("review__task__repository", "review__reviewer", "decided_by")
        .order_by("review__task__key", "review_id", "path", "line_start", "pk")
    )
    if tasks is not None:
        findings = findings.filter(review__task__in=tasks)
    findings = list(findings)
    submitted = _submitted_since(list({f.review.task_id for f in findings}))
    kept = []
    for f in findings:
        f.resolvable = _resolvable(f, f.review.task, submitted.get(f.review.task_id))
        if f.verdict == Finding.PENDING or f.resolvable:
            kept.append(f)
    return kept


def reviews_of(task: Task) -> list[Review]:
    """A task's reviews, newest first, with their findings (each with ``resolvable``)."""
    reviews = list(
        task.reviews.select_related("reviewer", "task")
        .prefetch_related("findings__decided_by")
        .order_by("-created_at")
    )
    last = _submitted_since([task.pk]).get(task.pk)
    for review in reviews:
        review.findings_list = list(review.findings.all())
        for finding in review.findings_list:
            finding.resolvable = _resolvable(finding, task, last)
    return reviews


def request_rereview(task: Task, *, by: Any) -> str:
    """A lead asks for a re-review of the submitted commit: a new Review that only a
    reviewer who never reviewed (or held) the task may take. When it closes, the
    findings accepted before it are settled and its own wait for a verdict."""
    with transaction.atomic():
        task = Task.objects.select_for_update(no_key=True).get(pk=task.pk)
        if task.status not in (Task.IN_REVIEW, Task.APPROVED):
            raise Refusal(
                f"{task.key} is {task.get_status_display()}; a re-review is of a submitted "
                "task waiting to merge."
            )
        if task.reviews.filter(status=Review.OPEN).exists():
            raise Refusal(f"{task.key} already has a review open.")
        review = Review.objects.create(
            task=task,
            commit_sha=task.head_sha,
            provenance={"requested_by": by.get_username()},
        )
        Event.objects.record(
            "review.requested",
            by=by,
            **task._event_subjects(),
            payload={"review": review.pk, "commit": task.head_sha},
        )
    return f"A new fresh reviewer will review {task.key} at {task.head_sha[:10]}."


def withdraw_rereview(task: Task, *, by: Any) -> str:
    """Take back a re-review nobody took yet (say, no reviewer in the fleet may take
    it): the task's earlier reviews stand and a person resolves what was accepted."""
    with transaction.atomic():
        task = Task.objects.select_for_update(no_key=True).get(pk=task.pk)
        review = (
            task.reviews.select_for_update(no_key=True)
            .filter(status=Review.OPEN, reviewer__isnull=True)
            .filter(provenance__has_key="requested_by")
            .first()
        )
        if review is None:
            raise Refusal(f"{task.key} has no re-review waiting for a reviewer.")
        Event.objects.record(
            "review.withdrawn",
            by=by,
            **task._event_subjects(),
            payload={"review": review.pk, "commit": review.commit_sha},
        )
        review.delete()
    return f"The re-review of {task.key} is withdrawn."


def tick(task: Task, *, item: str, ticked: bool, by: Any) -> str:
    """Tick (or untick) a definition-of-done item a person checks, for the commit
    submitted now. The tick holds for that commit and for any later one carrying the
    same change (the same patch id: a rebase that leaves the task's patch alone); a
    resubmit that changes the patch needs a new tick."""
    from fleet.gates import task_patch_id

    # Worked out before the lock (a git call); kept only for the commit it is of.
    submitted = task.head_sha
    patch = task_patch_id(task) if ticked and submitted else ""
    with transaction.atomic():
        task = (
            Task.objects.select_for_update(no_key=True, of=("self",))
            .select_related("repository")
            .get(pk=task.pk)
        )
        manual = [i for i in task.repository.dod_items or [] if isinstance(i, str)]
        if item not in manual:
            raise Refusal(f"“{item[:100]}” is not an item of {task.repository}'s checklist.")
        if not task.head_sha:
            raise Refusal(f"{task.key} has not been submitted: nothing to tick yet.")
        if task.status in SETTLED:
            raise Refusal(f"{task.key} is {task.get_status_display()}: its checklist is final.")
        ticks = dict(task.dod_ticks or {})
        if ticked:
            ticks[item] = {
                "by": by.get_username(),
                "at": timezone.now().isoformat(),
                "commit": task.head_sha,
                "patch": patch if task.head_sha == submitted else "",
            }
        else:
            ticks.pop(item, None)
        task.dod_ticks = ticks
        task.save(update_fields=["dod_ticks"])
        Event.objects.record(
            "task.dod_tick",
            by=by,
            **task._event_subjects(),
            payload={"item": item, "ticked": ticked, "commit": task.head_sha},
        )
    return f"“{item}” {'ticked' if ticked else 'unticked'} for {task.head_sha[:10]}."
