"""The merge gates of a task, each green or red with its reason and a link to the
evidence; merge by exception when they are all green.

The gates are isolation, ownership, stale base, review, checks, definition of done
and budget. The task page works them out afresh; the worker's sweep works them out
for every task waiting to merge, keeps the result on the task (the problems panel
reads it), notifies the repository's webhook when a task comes to need a person,
and, where auto-merge is on for the wave or the repository, queues a task whose
gates are all green. The merge queue's own test of the candidate is the last gate.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import Q, Sum
from django.urls import reverse

from fleet import planning, webhooks
from fleet.git import facts, merge, worktrees
from fleet.git import paths as globs
from fleet.git.errors import GitError
from fleet.git.repo import head_sha
from fleet.models import (
    Agent,
    Budget,
    CheckRun,
    Event,
    Finding,
    MergeRequest,
    Review,
    ReviewComment,
    SpendEvent,
    Task,
    TransitionError,
)

log = logging.getLogger("fleet.gates")

MERGE_CHECK = "merge check"  # the queue's own check: the last gate, not one of these
WAITING = (Task.IN_REVIEW, Task.APPROVED)  # the states a task merges from


@dataclass
class Gate:
    key: str
    name: str
    ok: bool
    reason: str
    link: str = ""
    # False when the gate is red only because something is under way (a review or a
    # check running): nobody needs to act.
    needs_person: bool = True
    items: list[dict[str, Any]] | None = None  # the definition-of-done checklist

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "items"}


# --- the branch against main ------------------------------------------------


def landed_commit(task: Task) -> str:
    """The squashed commit a merged task landed as on main ('' if not recorded)."""
    payload = (
        Event.objects.filter(task=task, kind="task.mark_merged")
        .order_by("-id")
        .values_list("payload", flat=True)
        .first()
    )
    if payload and payload.get("commit"):
        return payload["commit"]
    return (
        MergeRequest.objects.filter(task=task, result=MergeRequest.MERGED)
        .exclude(candidate_sha="")
        .order_by("-updated_at")
        .values_list("candidate_sha", flat=True)
        .first()
        or ""
    )


def _landed_state(task: Task) -> dict[str, Any]:
    """A merged task's branch is what it landed as: that commit against its parent on
    main (main moving on afterwards makes it neither stale nor behind)."""
    sha = landed_commit(task)
    if not sha:
        return {"branch_error": f"{task.key} is merged; the commit it landed as is not recorded"}
    path = task.repository.path
    try:
        branch = facts.branch_facts(path, main=f"{sha}^", head=sha)
        message = facts.commit_message(path, sha)
    except GitError as exc:
        return {"branch_error": f"{task.key} landed as {sha[:10]}, which cannot be read: {exc}"}
    subject = message.strip().splitlines()[0] if message.strip() else ""
    return {
        "facts": branch,
        "landed": {
            "sha": branch.head,
            "subject": subject,
            "files": len(branch.files),
            "added": sum(f.added or 0 for f in branch.files),
            "removed": sum(f.removed or 0 for f in branch.files),
        },
        "head_message": message,
    }


def branch_state(task: Task, *, fetch: bool = True) -> dict[str, Any]:
    """Facts and the stale-base report, or the one-line reason there are none. Against
    main freshly fetched, or (``fetch=False``: live updates, the worker's sweep) as
    last fetched. A merged task's facts are of the commit it landed as."""
    if task.status == Task.MERGED:
        return _landed_state(task)
    repository = task.repository
    try:
        main = planning.base_ref(repository) if fetch else planning.known_base(repository)
        try:
            head = task.head_sha or head_sha(repository.path, f"refs/heads/{task.branch}")
        except GitError:
            return {"branch_error": f"{task.branch} does not exist yet"}
        allowed = planning.allowed_paths(task)
        branch = facts.branch_facts(repository.path, main=main, head=head, allowed=allowed)
        stale = facts.stale_base(repository.path, main=main, head=head)
        message = facts.commit_message(repository.path, head)
    except GitError as exc:
        return {"branch_error": str(exc)}
    return {
        "facts": branch,
        "stale": stale,
        "lost": stale.lost,
        "resurrected": stale.resurrected,
        "declared": allowed,
        "head_message": message,
    }


def ownership_report(task: Task, state: dict[str, Any]) -> dict[str, Any] | None:
    """The ownership gate as worked out at submit, or (before submit) on the branch."""
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


# --- the gates ---------------------------------------------------------------


def _isolation(task: Task, state: dict[str, Any]) -> Gate:
    link = reverse("fleet-repository", args=[task.repository.slug]) + "#worktrees"
    gate = Gate("isolation", "Isolation", False, "", link)
    if not task.worktree_path:
        gate.reason = "the task has no worktree of its own"
        return gate
    sharing = (
        Task.objects.open()
        .filter(worktree_path=task.worktree_path)
        .exclude(pk=task.pk)
        .values_list("key", flat=True)
    )
    if sharing:
        gate.reason = f"its worktree is shared with {', '.join(sharing)}"
        return gate
    if not Path(task.worktree_path).exists():
        gate.reason = f"its worktree {task.worktree_path} is missing"
        return gate
    if not task.base_sha:
        gate.reason = "its branch base is unknown (not dispatched off fresh main)"
        return gate
    branch = state.get("facts")
    if branch is not None:
        try:
            on_main = merge.is_ancestor(task.repository.path, task.base_sha, branch.main)
        except GitError:
            on_main = False
        if not on_main:
            gate.reason = f"its base {task.base_sha[:10]} is not a commit of main"
            return gate
    gate.ok = True
    gate.reason = f"its own worktree, branched off main at {task.base_sha[:10]}"
    return gate


def _ownership(task: Task, state: dict[str, Any]) -> Gate:
    gate = Gate("ownership", "Ownership", False, "", "#ownership")
    report = ownership_report(task, state)
    if report is None:
        gate.reason = state.get("branch_error") or "nothing to check yet"
        return gate
    if report.get("error"):
        gate.reason = report["error"]
    elif report.get("ok"):
        gate.ok = True
        gate.reason = f"every changed file is within its paths ({report.get('when')})"
    else:
        parts = []
        if report.get("outside"):
            parts.append(f"{len(report['outside'])} file(s) outside its paths")
        if report.get("owned"):
            parts.append(", ".join(f"{o['path']} belongs to {o['owner']}" for o in report["owned"]))
        gate.reason = "; ".join(parts) or "red at submit"
    return gate


def _stale_base(task: Task, state: dict[str, Any]) -> Gate:
    gate = Gate("stale_base", "Stale base", False, "", "#stale-base")
    if "branch_error" in state:
        gate.reason = state["branch_error"]
        return gate
    stale = state["stale"]
    if stale.red:
        gate.reason = stale.reason()
        return gate
    gate.ok = True
    gate.reason = "the stale-base report is empty"
    return gate


def _review(task: Task) -> Gate:
    gate = Gate("review", "Review", False, "", "#task-findings")
    reviews = list(task.reviews.select_related("reviewer").order_by("created_at"))
    if not reviews:
        gate.reason = "not reviewed yet"
        gate.needs_person = False
        return gate
    open_reviews = [r for r in reviews if r.status == Review.OPEN]
    if open_reviews:
        review = open_reviews[-1]
        gate.reason = (
            f"{review.reviewer.name} is reviewing {review.commit_sha[:10]}"
            if review.reviewer
            else f"waiting for a fresh reviewer to take {review.commit_sha[:10]}"
        )
        gate.needs_person = False
        return gate
    findings = list(Finding.objects.filter(review__task=task).only("verdict", "resolved_in_commit"))
    pending = [f for f in findings if f.verdict == Finding.PENDING]
    unresolved = [f for f in findings if f.verdict == Finding.ACCEPTED and not f.resolved_in_commit]
    if pending:
        gate.reason = f"{len(pending)} finding(s) waiting for a verdict"
        gate.link = reverse("fleet-reviews")
        return gate
    if unresolved:
        gate.reason = f"{len(unresolved)} accepted finding(s) not resolved yet"
        gate.needs_person = task.status in WAITING  # else the builder is on it
        return gate
    # A person's own comments sent to the builder hold the gate as accepted findings do.
    comments = task.comments.filter(state=ReviewComment.SENT).count()
    if comments:
        gate.reason = f"{comments} review comment(s) not resolved yet"
        gate.needs_person = task.status in WAITING
        return gate
    accepted = sum(f.verdict == Finding.ACCEPTED for f in findings)
    overruled = sum(f.verdict == Finding.OVERRULED for f in findings)
    last = reviews[-1]
    gate.ok = True
    gate.reason = (
        f"reviewed by {last.reviewer.name if last.reviewer else 'a reviewer'}"
        f" in a fresh session; {len(findings)} finding(s): {accepted} accepted and resolved,"
        f" {overruled} overruled"
    )
    return gate


def _checks(task: Task) -> Gate:
    gate = Gate("checks", "Checks", False, "", "#task-checks")
    head = task.head_sha
    if not head:
        gate.reason = "not submitted yet"
        gate.needs_person = False
        return gate
    latest: dict[str, CheckRun] = {}
    self_reported = 0
    runs = task.checks.exclude(name=MERGE_CHECK).select_related("reported_by")
    for run in runs.order_by("created_at", "pk"):
        # The API takes abbreviated shas (and older submits kept them as given).
        if not (
            run.commit_sha and (head.startswith(run.commit_sha) or run.commit_sha.startswith(head))
        ):
            continue
        if run.reported_by is not None and run.reported_by.role == Agent.BUILDER:
            self_reported += 1  # a builder does not certify its own work
            continue
        latest[run.name] = run
    failed = [run for run in latest.values() if run.status in ("failed", "error")]
    running = [run for run in latest.values() if run.status in ("pending", "running")]
    missing = [name for name in task.repository.required_checks or [] if name not in latest]
    if failed:
        gate.reason = ", ".join(f"{run.name} {run.status}" for run in failed) + f" on {head[:10]}"
    elif running:
        gate.reason = ", ".join(f"{run.name} {run.status}" for run in running)
        gate.needs_person = False
    elif missing:
        gate.reason = f"waiting for {', '.join(missing)} on {head[:10]}"
        gate.needs_person = False
    else:
        gate.ok = True
        gate.reason = (
            f"{len(latest)} check(s) passed on {head[:10]}"
            if latest
            else "no checks are required and none were reported"
        )
    if self_reported:
        gate.reason += f" ({self_reported} run(s) reported by a builder do not count)"
    return gate


def dod_label(item: Any) -> str:
    """How a checklist item reads on the page (and its key among the ticks)."""
    if isinstance(item, str):
        return item
    kind = item.get("auto") if isinstance(item, dict) else None
    if kind == "changelog":
        return "A CHANGELOG entry"
    if kind == "task_key":
        return "The task key in the commit message"
    if kind == "docs":
        docs, when = (", ".join(map(str, item.get(k) or [])) for k in ("docs", "when"))
        return f"Docs ({docs}) touched when {when} changed"
    return f"Unknown item {item!r}"


def _changelog(path: str) -> bool:
    """A CHANGELOG file, or a fragment in a towncrier-style ``changelog.d/``."""
    parts = Path(path).parts
    return parts[-1].upper().startswith("CHANGELOG") or "changelog.d" in parts[:-1]


def task_patch_id(task: Task, state: dict[str, Any] | None = None) -> str:
    """The patch id of the task's own change (merge base to its submitted commit),
    '' when git cannot tell (a tick then holds for its commit only). Kept in
    ``state`` so one evaluation works it out once."""
    if state is not None and "patch_id" in state:
        return state["patch_id"]
    branch = (state or {}).get("facts")
    try:
        main = branch.main if branch is not None else planning.known_base(task.repository)
        patch = facts.patch_id(task.repository.path, main=main, head=task.head_sha)
    except GitError:
        patch = ""
    if state is not None:
        state["patch_id"] = patch
    return patch


def _same_change(task: Task, tick: dict[str, Any], state: dict[str, Any]) -> bool:
    """A tick given on an earlier commit that carries the task's change unchanged."""
    if not tick.get("patch") or not task.head_sha:
        return False
    return task_patch_id(task, state) == tick["patch"]


def _dod_item(task: Task, item: Any, state: dict[str, Any]) -> dict[str, Any]:
    label = dod_label(item)
    row: dict[str, Any] = {"label": label, "auto": not isinstance(item, str), "ok": False}
    if isinstance(item, str):
        tick = (task.dod_ticks or {}).get(item)
        if tick and task.head_sha and tick.get("commit") == task.head_sha:
            row.update(ok=True, why=f"ticked by {tick.get('by')}")
        elif tick and _same_change(task, tick, state):
            row.update(
                ok=True,
                why=f"ticked by {tick.get('by')} on {str(tick.get('commit'))[:10]}, "
                "the same change before a rebase",
            )
        elif tick:
            row["why"] = f"ticked by {tick.get('by')} on an earlier commit; tick it again"
        else:
            row["why"] = "a person ticks it"
        return row
    branch = state.get("facts")
    if branch is None:
        row["why"] = state.get("branch_error", "no branch to check")
        return row
    changed = [f.path for f in branch.files]
    kind = item.get("auto") if isinstance(item, dict) else None
    if kind == "changelog":
        hits = [f.path for f in branch.files if _changelog(f.path) and (f.added or 0) > 0]
        row.update(ok=bool(hits), why=", ".join(hits) or "no line added to a CHANGELOG")
    elif kind == "task_key":
        key = re.compile(rf"(?<![A-Za-z0-9-]){re.escape(task.key)}(?![0-9])")
        ok = bool(key.search(state.get("head_message", "")))
        row.update(ok=ok, why="found" if ok else f"{task.key} is not in the commit message")
    elif kind == "docs":
        area = [p for p in changed if any(globs.matches(p, g) for g in item.get("when") or [])]
        docs = [p for p in changed if any(globs.matches(p, g) for g in item.get("docs") or [])]
        if not area:
            row.update(ok=True, why="no documented area changed")
        else:
            row.update(ok=bool(docs), why=", ".join(docs) or f"{area[0]} changed, no docs did")
    else:
        row["why"] = "Fleet does not know how to check this item"
    return row


def _dod(task: Task, state: dict[str, Any]) -> Gate:
    gate = Gate("dod", "Definition of done", False, "", "#dod")
    items = [_dod_item(task, item, state) for item in task.repository.dod_items or []]
    gate.items = items
    missing = [row["label"] for row in items if not row["ok"]]
    if missing:
        gate.reason = "not yet: " + "; ".join(missing)
    else:
        gate.ok = True
        gate.reason = f"{len(items)} item(s) done" if items else "the repository has no checklist"
    return gate


def spent(filter_: Q) -> Decimal:
    return SpendEvent.objects.filter(filter_).aggregate(s=Sum("cost_usd"))["s"] or Decimal(0)


def _budget(task: Task) -> Gate:
    """Within the task's own cap and its wave's, counted from the raw spend events."""
    gate = Gate("budget", "Budget", True, "", reverse("fleet-task", args=[task.key]) + "#spend")
    caps = Budget.objects.filter(Q(task=task) | Q(wave_id=task.wave_id)).exclude(limit_usd=None)
    task_spent = spent(Q(task=task))
    notes = []
    for budget in caps:
        used = task_spent if budget.scope == "task" else spent(Q(task__wave_id=task.wave_id))
        what = "the task" if budget.scope == "task" else f"wave {task.wave.number}"
        notes.append(f"{what} spent ${used:.2f} of ${budget.limit_usd:.2f}")
        if used >= budget.limit_usd:
            gate.ok = False
    gate.reason = "; ".join(notes) or f"${task_spent:.2f} spent; no cap set"
    return gate


def evaluate(task: Task, state: dict[str, Any] | None = None, *, fetch: bool = False) -> list[Gate]:
    """Every gate of the task, in the order the page shows them."""
    if state is None:
        state = branch_state(task, fetch=fetch)
    return [
        _isolation(task, state),
        _ownership(task, state),
        _stale_base(task, state),
        _review(task),
        _checks(task),
        _dod(task, state),
        _budget(task),
    ]


def red(gates: list[Gate]) -> list[Gate]:
    return [gate for gate in gates if not gate.ok]


# --- merge by exception -------------------------------------------------------


def queue_merge(task: Task, *, by: Any, gates: list[Gate] | None = None) -> MergeRequest:
    """Approve and queue a task whose gates are all green (a red gate refuses, with
    its reason). ``by`` is the lead, or None for the auto-merge of the worker."""
    from fleet import merging

    if task.status not in WAITING:
        raise TransitionError(f"{task.key} is {task.get_status_display()}", code="not_waiting")
    state = branch_state(task, fetch=True) if gates is None else None
    _refuse_red(gates if gates is not None else evaluate(task, state))
    with transaction.atomic():
        # Under the task's lock, what people and agents change (verdicts, re-reviews,
        # ticks, checks, spend) is read again: nothing slips in between.
        current = (
            Task.objects.select_for_update(no_key=True, of=("self",))
            .select_related("repository", "wave")
            .get(pk=task.pk)
        )
        if current.status not in WAITING or current.head_sha != task.head_sha:
            raise TransitionError(
                f"{task.key} changed meanwhile ({current.get_status_display()})",
                code="not_waiting",
            )
        _refuse_red([_review(current), _checks(current), _budget(current)])
        if current.dod_ticks != task.dod_ticks:
            raise TransitionError(f"{task.key}: its checklist changed meanwhile", code="gates_red")
        if current.status == Task.IN_REVIEW:
            current.approve(by=by)
        return merging.enqueue(current, by=by)


def _refuse_red(gates: list[Gate]) -> None:
    blocking = red(gates)
    if blocking:
        raise TransitionError(
            "; ".join(f"{g.name}: {g.reason}" for g in blocking), code="gates_red"
        )


def sweep(now=None) -> int:
    """Work out the gates of every task waiting to merge; keep them on the task (an
    event when they change, so its page and the problems panel follow), notify
    when a task comes to need a person, and auto-merge where that is on. The number
    of tasks queued by auto-merge."""
    queued = 0
    tasks = Task.objects.filter(status__in=WAITING).select_related("repository", "wave")
    pending = set(
        MergeRequest.objects.filter(result=MergeRequest.PENDING).values_list("task_id", flat=True)
    )
    for task in tasks:
        if task.pk in pending:
            continue
        try:
            queued += _sweep_one(task)
        except Exception:
            # One task's trouble (say, a repository gone from disk) must not hold up
            # the others' gates and auto-merges.
            log.exception("gates of %s", task.key)
    return queued


def _signature(snapshot: list[dict[str, Any]]) -> list[tuple]:
    """What makes a change worth an event: a gate turning, or a red gate's reason (a
    green budget's figures move with every spend report)."""
    return [
        (g["key"], g["ok"], g.get("needs_person", True), "" if g["ok"] else g["reason"])
        for g in snapshot
    ]


def _sweep_one(task: Task) -> int:
    gates = evaluate(task)
    snapshot = [gate.as_dict() for gate in gates]
    if _signature(snapshot) != _signature(task.gates or []):
        _record(task, gates, snapshot)
    if red(gates) or not (task.wave.auto_merge or task.repository.auto_merge):
        return 0
    try:
        queue_merge(task, by=None, gates=gates)
    except TransitionError as exc:
        log.info("auto-merge of %s: %s", task.key, exc.message)
        return 0
    Event.objects.record("task.auto_merge", task=task, payload={"gates": [g.key for g in gates]})
    return 1


def _record(task: Task, gates: list[Gate], snapshot: list[dict[str, Any]]) -> None:
    blocking = [g for g in red(gates) if g.needs_person]
    before = {g["key"] for g in task.gates or [] if not g["ok"] and g.get("needs_person", True)}
    newly = sorted({g.key for g in blocking} - before)  # red gates a person must see now
    with transaction.atomic():
        Task.objects.filter(pk=task.pk).update(gates=snapshot)
        task.gates = snapshot
        Event.objects.record(
            "task.gates",
            task=task,
            payload={
                "red": [g.key for g in red(gates)],
                "needs_person": bool(blocking),
                "newly": newly,
            },
        )
        if newly:
            webhooks.notify(
                task,
                "gate_red",
                [f"{g.name}: {g.reason}" for g in blocking],
            )


def rebase(task: Task, *, by: Any = None) -> tuple[bool, str]:
    """Rebase the task's worktree onto fresh main when it is clean and applies
    cleanly (a lead's answer to a red stale-base gate). (done, what happened)."""
    if not task.worktree_path or not Path(task.worktree_path).exists():
        return False, f"{task.key} has no worktree to rebase."
    try:
        main = planning.base_ref(task.repository)
        conflicts = worktrees.rebase(
            Path(task.worktree_path),
            onto=main,
            branch=task.branch,
            expect_head=task.head_sha or None,  # once submitted: only the submitted commit
        )
    except GitError as exc:
        return False, f"Not rebased: {exc}"
    if conflicts and conflicts[0].startswith("("):
        return False, f"Not rebased {conflicts[0]}; the branch is unchanged."
    if conflicts:
        return False, (
            f"Not rebased: it would conflict in {', '.join(conflicts)}; the branch is unchanged "
            "and the builder must resolve it."
        )
    new_head = head_sha(task.worktree_path)
    if task.head_sha:
        Task.objects.filter(pk=task.pk).update(head_sha=new_head)
        task.head_sha = new_head
    Event.objects.record(
        "task.rebased", by=by, **task._event_subjects(), payload={"onto": main, "head": new_head}
    )
    return True, f"Rebased {task.branch} onto {main[:10]}."
