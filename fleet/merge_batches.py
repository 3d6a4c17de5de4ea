"""The merge queue in batches: up to a repository's batch size of queued tasks tested
together, without weakening the queue's promise (main only ever moves to a commit
whose check passed, and no task merges on a check that did not include it).

The worker chains the tasks' squashed commits (``KEY: title``, one per task) on
main's tip, each checked for a stale base against main and for conflicts against
the chain below it (a task that fails those goes back to its builder and the chain
is built without it). One check runs on the chain's top. Green: main moves by
compare-and-swap to the top and every task is merged. Red: bisect. Test the first
half of the tasks still in doubt; green lands that half on main at once (it is a
tested prefix) and the failure is in the other half, red means the failure is in
this half. When one task is left it is the one that broke the check: it goes back
with the log, and the tasks chained above it (never tested without it) go back to
the queue to be rebuilt.

Crash safety: the batch's step, its trials and the prefix about to land are written
before each step is taken. A batch found open on the next run was left by a worker
that died (or lost its lock): what main says landed is merged, the rest is requeued.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from fleet import merging
from fleet.correlation import correlated
from fleet.git import merge
from fleet.git.errors import GitError
from fleet.git.repo import head_sha
from fleet.models import CheckRun, Event, MergeBatch, MergeRequest, Repository, Task

log = logging.getLogger("fleet.merge")


def open_batch(repository: Repository) -> MergeBatch | None:
    return MergeBatch.objects.filter(repository=repository).exclude(step="done").first()


def _save_batch(batch: MergeBatch, **fields) -> None:
    """Persist a step of the batch, with an Event so the merge queue page follows it."""
    for name, value in fields.items():
        setattr(batch, name, value)
    batch.updated_at = timezone.now()
    with transaction.atomic():
        batch.save(update_fields=[*fields, "updated_at"])
        Event.objects.record(
            f"merge.batch.{batch.step}",
            repository_id=batch.repository_id,
            payload={"batch": batch.pk, "landed": batch.landed, "trials": len(batch.trials)},
        )


def _remote(repository: Repository) -> str:
    return repository.remote_name if merge.has_remote(repository.path) else ""


def _chain(batch: MergeBatch) -> list[MergeRequest]:
    """The batch's tasks in chain order (those sent back while building never joined)."""
    return list(
        batch.members.exclude(candidate_sha="")
        .select_related("task", "repository")
        # queue order is chain order
        .order_by("position")
    )


def reconcile(repository: Repository) -> None:
    """Settle a batch a worker left open: if main reached the prefix it was moving to,
    that prefix is merged; every other task of the batch goes back to the queue."""
    batch = open_batch(repository)
    if batch is None:
        return
    with correlated(f"merge-batch-{batch.pk}"):
        remote = _remote(repository)
        tip = merge.tip(repository.path, remote=remote, branch=repository.default_branch)
        chain = _chain(batch)
        landed = batch.target_sha and (
            tip == batch.target_sha or merge.is_ancestor(repository.path, batch.target_sha, tip)
        )
        if batch.step == "updating" and landed:
            for mr in chain[batch.landed : batch.landing]:
                if mr.result == MergeRequest.PENDING:
                    merging._finish(mr, mr.candidate_sha, remote=bool(remote))
            _save_batch(batch, landed=batch.landing)
        _close(batch, f"the worker stopped while {batch.step}; restarted")


def _close(batch: MergeBatch, note: str) -> None:
    """End the batch: its tasks still pending go back to the queue (in their places)."""
    pending = list(batch.members.filter(result=MergeRequest.PENDING))
    CheckRun.objects.filter(
        task_id__in=[mr.task_id for mr in pending], name="merge check", status="running"
    ).update(status="error", log="the worker stopped during this check", finished_at=timezone.now())
    for mr in pending:
        merging._save(mr, step="queued", candidate_sha="", batch=None)
    if pending:
        keys = ", ".join(mr.task.key for mr in pending)
        note = f"{note}; back in the queue: {keys}"
    _save_batch(batch, step="done", note=f"{batch.note}\n{note}".strip())


def advance(repository: Repository, heads: list[MergeRequest]) -> None:
    """Merge ``heads`` (the queue's first tasks, in order) as one batch; when main
    moves under it, rebuild on the new tip (a few times, then leave it queued)."""
    for _ in range(merging.MAX_REBUILDS):
        if _run(repository, heads):
            return
        heads = list(
            MergeRequest.objects.filter(repository=repository, result=MergeRequest.PENDING)
            .select_related("task", "repository")
            .order_by("position")[: repository.merge_batch_size]
        )
        if not heads:
            return
    log.info("main kept moving under a batch of %s; it stays queued", repository.slug)


def _run(repository: Repository, heads: list[MergeRequest]) -> bool:
    """One batch; False when main moved under it (its tasks were requeued)."""
    remote = _remote(repository)
    tip = merge.tip(repository.path, remote=remote, branch=repository.default_branch)
    batch = MergeBatch.objects.create(repository=repository, base_sha=tip)
    with correlated(f"merge-batch-{batch.pk}"):
        chain = _build(batch, heads, tip=tip)
        if not chain:
            _close(batch, "nothing to test")
            return True
        merging._fault("candidate")
        return _bisect(batch, chain, remote=remote)


def _build(batch: MergeBatch, heads: list[MergeRequest], *, tip: str) -> list[MergeRequest]:
    """Chain each task's squashed commit on the one below; the tasks that chained."""
    path = batch.repository.path
    chain: list[MergeRequest] = []
    top = tip
    for mr in heads:
        task = mr.task
        task.refresh_from_db()
        if task.status != Task.MERGING:
            merging._save(
                mr, step="done", result=MergeRequest.FAILED, log=f"{task.key} is {task.status}"
            )
            continue
        merging._save(mr, step="queued", candidate_sha="")
        try:
            head = head_sha(path, f"{task.head_sha or f'refs/heads/{task.branch}'}^{{commit}}")
            # The stale-base gate asks whether merging the branch's tree deletes work
            # main gained after the fork: asked of main's tip. Against the chain below
            # every branch would look stale (its tree lacks the tasks below by
            # construction); the three-way build keeps their lines, and any overlap
            # with them is a conflict, sent back below.
            head = merging._stale_base_gate(mr, task, tip=tip, head=head)
            if head is None:
                _note(batch, f"{task.key} sent back: stale base")
                continue
            candidate = merge.build_candidate(
                path, main=top, head=head, message=f"{task.key}: {task.title}"
            )
        except GitError as exc:
            merging._send_back(mr, f"{task.key} cannot be merged: {exc}")
            _note(batch, f"{task.key} sent back: cannot be merged")
            continue
        if candidate.sha is None:
            below = [m.task.key for m in chain]
            merging._send_back(
                mr,
                f"{task.key} conflicts with main"
                f"{' and ' + ', '.join(below) + ' (queued before it)' if below else ''} in: "
                f"{', '.join(candidate.conflicts)}; rebase onto fresh main and resubmit",
            )
            _note(batch, f"{task.key} sent back: conflicts")
            continue
        merging._save(mr, step="candidate", candidate_sha=candidate.sha, head_sha=head, batch=batch)
        chain.append(mr)
        top = candidate.sha
    return chain


def _note(batch: MergeBatch, line: str) -> None:
    _save_batch(batch, note=f"{batch.note}\n{line}".strip())


def _bisect(batch: MergeBatch, chain: list[MergeRequest], *, remote: str) -> bool:
    """Test the chain's top; on red, find the task that broke it (see the module)."""
    low, high = 0, len(chain)  # chain[:low] is on main; chain[:high] is red once tested
    _save_batch(batch, step="testing")
    passed, red_log = _trial(batch, chain, high, fault="testing")
    if passed:
        return _land(batch, chain, high, remote=remote) is not False
    while high - low > 1:
        middle = low + (high - low + 1) // 2  # the first half of the tasks in doubt
        _save_batch(batch, step="bisecting")
        passed, trial_log = _trial(batch, chain, middle, fault="bisect")
        if passed:
            landed = _land(batch, chain, middle, remote=remote)
            if landed is not True:
                return landed is None
            low = middle
        else:
            high, red_log = middle, trial_log
    culprit = chain[high - 1]
    key = culprit.task.key
    below = f" on top of {', '.join(m.task.key for m in chain[:low])}" if low else ""
    merging._send_back(
        culprit,
        f"the merge check failed on {culprit.candidate_sha[:10]}: bisecting the batch "
        f"found {key} breaks it{below}",
        log_text=red_log,
    )
    _close(batch, f"{key} sent back: the check failed")
    return True


def _trial(
    batch: MergeBatch, chain: list[MergeRequest], size: int, *, fault: str
) -> tuple[bool, str]:
    """Run the check on the top of ``chain[:size]``, recorded on the batch first and as
    a CheckRun of every task it decides."""
    top = chain[size - 1].candidate_sha
    repo = batch.repository
    deciding = chain[batch.landed : size]
    keys = [mr.task.key for mr in chain[:size]]
    # A check a killed serial run left running never finishes: say so, as the serial
    # queue does before its own check.
    CheckRun.objects.filter(
        task_id__in=[mr.task_id for mr in deciding], name="merge check", status="running"
    ).update(status="error", log="the worker stopped during this check", finished_at=timezone.now())
    _save_batch(batch, trials=[*batch.trials, {"tasks": keys, "top": top, "passed": None}])
    runs = [
        CheckRun.objects.create(
            repository=repo, task=mr.task, name="merge check", commit_sha=top, status="running"
        )
        for mr in deciding
    ]
    for mr in deciding:
        merging._save(mr, step="testing")
    if os.environ.get(merging.FAULT_ENV) == fault:
        threading.Timer(0.5, merging._fault, [fault]).start()
    result = merge.run_check(
        repo.path,
        commit=top,
        command=repo.check_command,
        workdir=Path(settings.FLEET_DATA_DIR) / "scratch" / repo.slug / "check",
        timeout=settings.FLEET_CHECK_TIMEOUT,
    )
    CheckRun.objects.filter(pk__in=[run.pk for run in runs]).update(
        status="passed" if result.passed else "failed",
        log=result.log,
        finished_at=timezone.now(),
    )
    trials = [*batch.trials]
    trials[-1] = {**trials[-1], "passed": result.passed}
    _save_batch(batch, trials=trials)
    return result.passed, result.log


def _land(batch: MergeBatch, chain: list[MergeRequest], size: int, *, remote: str) -> bool | None:
    """Move main by compare-and-swap to the tested top of ``chain[:size]`` and merge
    its tasks. False: main moved meanwhile, or a task left the queue during the check
    (the batch is closed, its other tasks requeued); None: the merge lock was lost."""
    repo = batch.repository
    landing = chain[batch.landed : size]
    for mr in landing:
        mr.task.refresh_from_db()
        if mr.task.status != Task.MERGING:  # cancelled or sent back during the check
            merging._save(
                mr,
                step="done",
                result=MergeRequest.FAILED,
                log=f"{mr.task.key} is {mr.task.status}",
            )
            _close(batch, f"{mr.task.key} left the queue during the check")
            return False
    if not merging.still_holding(repo.pk):
        # Another worker may own this queue now; it reconciles the open batch.
        log.warning("lost the merge lock of %s during a batch's check", repo.slug)
        return None
    old = chain[batch.landed - 1].candidate_sha if batch.landed else batch.base_sha
    new = chain[size - 1].candidate_sha
    _save_batch(batch, step="updating", landing=size, target_sha=new)
    merging._fault("before-update")
    try:
        if remote:
            moved = merge.push(
                repo.path, remote=remote, branch=repo.default_branch, new=new, old=old
            )
        else:
            moved = merge.update_ref(repo.path, branch=repo.default_branch, new=new, old=old)
    except GitError as exc:
        if not merging._took_anyway(repo, new, remote=remote):
            for mr in landing:
                merging._send_back(mr, f"main could not be moved to the tested commit: {exc}")
            _close(batch, "main could not be moved")
            return False
        moved = True
    if not moved:
        log.info("main moved while merging a batch of %s; rebuilding", repo.slug)
        _close(batch, "main moved during the check; rebuilding on the new tip")
        return False
    merging._fault("after-update")
    for mr in landing:
        # Fleet's local main follows the remote's once, to the top, not once per task.
        merging._finish(mr, mr.candidate_sha, remote=bool(remote) and mr is landing[-1])
    _save_batch(batch, step="bisecting" if size < len(chain) else "done", landed=size)
    return True
