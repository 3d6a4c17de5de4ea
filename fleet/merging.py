"""The merge queue: one merge at a time per repository, in queue order, and main only
ever moves to a commit whose check passed.

For the head of a repository's queue the worker fetches main, checks the stale-base
gate (rebasing the agent's clean worktree for it when that applies cleanly), builds
one squashed commit ``KEY: title`` on main's tip without touching any worktree, runs
the repository's check command on it in a scratch worktree, and then moves main by
compare-and-swap (a lease-guarded push when there is a remote). Every step is
recorded on the MergeRequest first, so a worker killed anywhere reconciles on
restart: if main already is the candidate the task is merged, otherwise the attempt
starts over from a fresh tip.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Max
from django.utils import timezone

from fleet import logs, webhooks
from fleet.correlation import correlated
from fleet.git import facts, merge, worktrees
from fleet.git.errors import GitError
from fleet.git.repo import head_sha, repo_flock
from fleet.models import CheckRun, Event, MergeBatch, MergeRequest, Message, Repository, Task

log = logging.getLogger("fleet.merge")

# Fault injection for the crash-safety tests: the worker SIGKILLs itself at that step.
FAULT_ENV = "FLEET_FAULT_KILL_AT"
MAX_REBUILDS = 3


def _fault(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def enqueue(task: Task, *, by) -> MergeRequest:
    """An approved task joins the end of its repository's merge queue."""
    for _ in range(3):
        try:
            with transaction.atomic():
                Repository.objects.select_for_update(no_key=True).get(pk=task.repository_id)
                task.enqueue_merge(by=by)
                # A request left pending by an earlier round (the task failed while
                # merging, was retried and approved again) is superseded.
                MergeRequest.objects.filter(task=task, result=MergeRequest.PENDING).update(
                    result=MergeRequest.FAILED, step="done", log="superseded"
                )
                last = MergeRequest.objects.filter(repository_id=task.repository_id).aggregate(
                    n=Max("position")
                )["n"]
                return MergeRequest.objects.create(
                    task=task, repository_id=task.repository_id, position=(last or 0) + 1
                )
        except IntegrityError:
            task.refresh_from_db()
            continue
    raise RuntimeError(f"could not queue {task.key}")


# The first key of the merge queue's PostgreSQL advisory locks (the second is the
# repository's id): "Flet" in ASCII, so other users of advisory locks can keep clear.
ADVISORY_NAMESPACE = 0x466C6574


@contextlib.contextmanager
def advisory_lock(repository_id: int) -> Iterator[bool]:
    """At most one merging worker per repository across machines, on PostgreSQL: a
    session-level advisory lock (non-blocking; yields whether it was taken). When the
    worker holding it dies, its database session ends and the lock with it, so the
    next worker's tick takes the queue over. Other databases: always True."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [ADVISORY_NAMESPACE, repository_id])
        taken = cursor.fetchone()[0]
    try:
        yield taken
    finally:
        if taken:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_unlock(%s, %s)", [ADVISORY_NAMESPACE, repository_id]
                )


def still_holding(repository_id: int) -> bool:
    """Whether this session still holds the repository's advisory lock (a dropped
    connection takes the lock with it: then another worker may be merging)."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND pid = pg_backend_pid() AND classid = %s AND objid = %s AND objsubid = 2",
            [ADVISORY_NAMESPACE, repository_id],
        )
        return cursor.fetchone() is not None


@contextlib.contextmanager
def merge_lock(repository: Repository) -> Iterator[bool]:
    """At most one merging worker per repository: the advisory lock (across machines
    sharing PostgreSQL), then a flock on the clone (workers on this machine)."""
    with advisory_lock(repository.pk) as taken:
        if not taken:
            yield False
            return
        with repo_flock(repository.path, "fleet-merge.flock", wait=False) as acquired:
            yield acquired


def process_queues() -> int:
    """Advance the head of every repository's queue; the number of merges settled."""
    settled = 0
    repo_ids = set(
        MergeRequest.objects.filter(result=MergeRequest.PENDING)
        .values_list("repository_id", flat=True)
        .distinct()
    )
    # A batch a killed worker left open is settled even when nothing else waits.
    repo_ids |= set(MergeBatch.objects.exclude(step="done").values_list("repository_id", flat=True))
    for repository in Repository.objects.filter(pk__in=repo_ids):
        try:
            merge_request = process(repository)
        except GitError as exc:
            log.warning("merge queue of %s: %s", repository.slug, exc)
            continue
        except Exception:
            # One repository's trouble must not hold up the others' queues.
            log.exception("merge queue of %s failed", repository.slug)
            continue
        if merge_request is not None and merge_request.result != MergeRequest.PENDING:
            settled += 1
    return settled


def process(repository: Repository) -> MergeRequest | None:
    """Advance the head of the repository's queue (read under the lock, so a second
    worker never acts on a head the first one already settled): one task, or with a
    batch size above 1 up to that many as one batch (``fleet.merge_batches``), after
    reconciling a batch a killed worker left open."""
    from fleet import merge_batches as batches

    with merge_lock(repository) as acquired:
        if not acquired:
            return None
        head = (
            MergeRequest.objects.filter(repository=repository, result=MergeRequest.PENDING)
            .select_related("task", "repository")
            .order_by("position")
            .first()
        )
        if head is None and not batches.open_batch(repository):
            return None
        try:
            with correlated(f"merge-{head.pk if head else 'batch'}"):
                batches.reconcile(repository)
                heads = list(
                    MergeRequest.objects.filter(repository=repository, result=MergeRequest.PENDING)
                    .select_related("task", "repository")
                    .order_by("position")[: max(1, repository.merge_batch_size)]
                )
                if any(_stranded(mr) for mr in heads):
                    _recover_stranded(repository, heads)
                    heads = list(
                        MergeRequest.objects.filter(
                            repository=repository, result=MergeRequest.PENDING
                        )
                        .select_related("task", "repository")
                        .order_by("position")[: max(1, repository.merge_batch_size)]
                    )
                if not heads:
                    return None
                head = heads[0]
                if len(heads) > 1:
                    batches.advance(repository, heads)
                else:
                    _advance(head)
        except GitError as exc:
            # Fetching main failed (remote down, missing): say so where people look.
            if head is not None:
                _save(head, log=f"waiting: {exc}")
            raise
    head.refresh_from_db()
    return head


def _stranded(mr: MergeRequest) -> bool:
    """A merge whose worker died while it moved main (or just after)."""
    return bool(mr.candidate_sha) and mr.step in ("updating", "cleanup")


def _recover_stranded(repository: Repository, heads: list[MergeRequest]) -> None:
    """Finish the heads a killed serial worker left at ``updating`` whose candidate main
    already has. Done before a batch is built: the batch would rebuild such a task on a
    main that has it and land its commit a second time (empty)."""
    remote = repository.remote_name if merge.has_remote(repository.path) else ""
    tip = merge.tip(repository.path, remote=remote, branch=repository.default_branch)
    for mr in heads:
        if _stranded(mr) and on_main(repository.path, mr.candidate_sha, tip=tip):
            log.info("%s was merged before its worker stopped", mr.task.key)
            _finish(mr, mr.candidate_sha, remote=bool(remote))


def _took_anyway(repository: Repository, target: str, *, remote: str) -> bool:
    """After a failed push: whether the remote moved main to ``target`` all the same (a
    connection dropped after the update reports an error too). A failing fetch here
    propagates and leaves the merge at ``updating`` for the next run to settle."""
    if not remote:
        return False
    tip = merge.tip(repository.path, remote=remote, branch=repository.default_branch)
    if on_main(repository.path, target, tip=tip):
        log.warning("pushing %s reported an error but main has it", target[:10])
        return True
    return False


def on_main(path: str, sha: str, *, tip: str) -> bool:
    """Whether main (at ``tip``) has ``sha``: it is the tip or an ancestor of it."""
    return tip == sha or merge.is_ancestor(path, sha, tip)


def _save(mr: MergeRequest, **fields) -> None:
    """Persist a step of the merge; a new step or result is also an Event, so the
    merge queue's pages follow it live and the activity log shows every step."""
    moved = any(name in fields and fields[name] != getattr(mr, name) for name in ("step", "result"))
    for name, value in fields.items():
        setattr(mr, name, value)
    mr.updated_at = timezone.now()
    with transaction.atomic():
        mr.save(update_fields=[*fields, "updated_at"])
        if moved:
            Event.objects.record(
                f"merge.{mr.step}",
                repository_id=mr.repository_id,
                task_id=mr.task_id,
                payload={"merge": mr.pk, "result": mr.result},
            )


def _advance(mr: MergeRequest) -> None:
    repo, task = mr.repository, mr.task
    path = repo.path
    remote = repo.remote_name if merge.has_remote(path) else ""
    for _ in range(MAX_REBUILDS):
        tip = merge.tip(path, remote=remote, branch=repo.default_branch)
        if _stranded(mr) and on_main(path, mr.candidate_sha, tip=tip):
            # Restarted after main moved to the tested candidate (and maybe on since):
            # it is merged.
            return _finish(mr, mr.candidate_sha, remote=bool(remote))
        task.refresh_from_db()
        if task.status != Task.MERGING:
            _save(mr, step="done", result=MergeRequest.FAILED, log=f"{task.key} is {task.status}")
            return
        _save(mr, step="queued", candidate_sha="")
        try:
            # The full sha of the approved commit (the API accepts abbreviations).
            head = head_sha(path, f"{task.head_sha or f'refs/heads/{task.branch}'}^{{commit}}")
            head = _stale_base_gate(mr, task, tip=tip, head=head)
            if head is None:
                return
            candidate = merge.build_candidate(
                path, main=tip, head=head, message=f"{task.key}: {task.title}"
            )
        except GitError as exc:
            # Main was fetched fine, so this is about the task's commit: send it back.
            return _send_back(mr, f"{task.key} cannot be merged: {exc}")
        if candidate.sha is None:
            return _send_back(
                mr,
                f"{task.key} conflicts with main in: {', '.join(candidate.conflicts)}; "
                "rebase onto fresh main and resubmit",
            )
        _save(mr, step="candidate", candidate_sha=candidate.sha, head_sha=head)
        _fault("candidate")
        if not _check(mr, candidate.sha):
            return
        task.refresh_from_db()
        if task.status != Task.MERGING:  # cancelled or sent back during the check
            _save(mr, step="done", result=MergeRequest.FAILED, log=f"{task.key} is {task.status}")
            return
        if not still_holding(repo.pk):
            # Our database session was lost (and the lock with it) during the check:
            # another worker may own this queue now. Leave main alone; the head stays
            # pending and whoever holds the lock next takes it from here.
            log.warning("lost the merge lock of %s during %s's check", repo.slug, task.key)
            return
        _save(mr, step="updating")
        _fault("before-update")
        try:
            if remote:
                moved = merge.push(
                    path, remote=remote, branch=repo.default_branch, new=candidate.sha, old=tip
                )
            else:
                moved = merge.update_ref(
                    path, branch=repo.default_branch, new=candidate.sha, old=tip
                )
        except GitError as exc:
            if not _took_anyway(repo, candidate.sha, remote=remote):
                return _send_back(mr, f"main could not be moved to the tested commit: {exc}")
            moved = True
        if not moved:
            log.info("main moved while merging %s; rebuilding", task.key)
            continue
        _fault("after-update")
        return _finish(mr, candidate.sha, remote=bool(remote))
    log.info("main kept moving under %s; it stays at the head of the queue", task.key)


def _stale_base_gate(mr: MergeRequest, task: Task, *, tip: str, head: str) -> str | None:
    """The head to merge once the stale-base report is empty, or None (sent back)."""
    path = mr.repository.path
    stale = facts.stale_base(path, main=tip, head=head)
    if not stale.red:
        return head
    worktree = Path(task.worktree_path) if task.worktree_path else None
    why_not = "the task has no worktree"
    if worktree and worktree.exists():
        try:
            conflicts = worktrees.rebase(worktree, onto=tip, branch=task.branch, expect_head=head)
        except GitError as exc:
            conflicts = [str(exc)]
        if not conflicts:
            rebased = head_sha(worktree)
            if not facts.stale_base(path, main=tip, head=rebased).red:
                Task.objects.filter(pk=task.pk).update(head_sha=rebased)
                task.head_sha = rebased
                log.info("rebased %s onto %s for its merge", task.key, tip[:10])
                return rebased
            why_not = "the rebased branch still undoes main's work"
        else:
            why_not = ", ".join(conflicts).strip("()")
    parts = []
    if stale.lost:
        where = ", ".join(f"{h.path}:{h.start}-{h.end}" for h in stale.lost[:10])
        keys = stale.lost_keys
        parts.append(
            f"would delete lines main gained ({where}{'; from ' + ', '.join(keys) if keys else ''})"
        )
    if stale.resurrected:
        where = ", ".join(f"{h.path}:{h.start}-{h.end}" for h in stale.resurrected[:10])
        keys = stale.resurrected_keys
        parts.append(
            f"would bring back lines main removed ({where}"
            f"{'; removed in ' + ', '.join(keys) if keys else ''})"
        )
    _send_back(
        mr,
        f"stale base: merging {task.branch} as it is {' and '.join(parts)}; rebase onto "
        f"fresh main (the queue did not: {why_not})",
    )
    return None


def _check(mr: MergeRequest, candidate: str) -> bool:
    repo, task = mr.repository, mr.task
    CheckRun.objects.filter(task=task, name="merge check", status="running").update(
        status="error", log="the worker stopped during this check", finished_at=timezone.now()
    )
    run = CheckRun.objects.create(
        repository=repo, task=task, name="merge check", commit_sha=candidate, status="running"
    )
    _save(mr, step="testing")
    if os.environ.get(FAULT_ENV) == "testing":
        threading.Timer(0.5, _fault, ["testing"]).start()
    workdir = Path(settings.FLEET_DATA_DIR) / "scratch" / repo.slug / "check"
    result = merge.run_check(
        repo.path,
        commit=candidate,
        command=repo.check_command,
        workdir=workdir,
        timeout=settings.FLEET_CHECK_TIMEOUT,
    )
    run.status = "passed" if result.passed else "failed"
    run.log, run.finished_at = result.log, timezone.now()
    run.save(update_fields=["status", "log", "finished_at"])
    if not result.passed:
        _send_back(mr, f"the merge check failed on {candidate[:10]}", log_text=result.log)
    return result.passed


def _send_back(mr: MergeRequest, reason: str, log_text: str = "") -> None:
    task = mr.task
    with transaction.atomic():
        _save(mr, step="done", result=MergeRequest.FAILED, log=f"{reason}\n\n{log_text}".strip())
        task.refresh_from_db()
        if task.status == Task.MERGING:
            task.request_changes(by=None, reason=reason)
        if task.assignee_id:
            Message.objects.create(
                recipient_id=task.assignee_id,
                task=task,
                subject=f"{task.key} came back from the merge queue",
                body=f"{reason}\n\n{logs.folded_text(log_text)[-4000:]}".strip(),
            )
        webhooks.notify(task, "merge_failed", [reason])


def _finish(mr: MergeRequest, merged: str, *, remote: bool) -> None:
    """Main is the tested candidate: the task is merged. Its worktree and branch are
    removed later by ``collect_merged`` (removing thousands of files does not hold up
    the queue)."""
    repo, task = mr.repository, mr.task
    with transaction.atomic():
        task.refresh_from_db()
        if task.status == Task.MERGING:
            task.mark_merged(commit=merged)
        _save(mr, step="cleanup", result=MergeRequest.MERGED, candidate_sha=merged)
    if remote:
        # Fleet's local default branch follows the remote's when it only lags behind.
        local = head_sha(repo.path, f"refs/heads/{repo.default_branch}")
        if local != merged and merge.is_ancestor(repo.path, local, merged):
            merge.update_ref(repo.path, branch=repo.default_branch, new=merged, old=local)


def collect_merged() -> int:
    """Remove merged tasks' worktrees and branches where nothing would be lost; what
    must stay is noted on the MergeRequest for the lead (the Repositories page)."""
    done = 0
    for mr in MergeRequest.objects.filter(
        result=MergeRequest.MERGED, step="cleanup"
    ).select_related("task", "repository"):
        task, notes = mr.task, ""
        if task.worktree_path:
            try:
                removal = worktrees.remove(
                    mr.repository.path,
                    worktree=Path(task.worktree_path),
                    branch=task.branch,
                    merged_head=mr.head_sha or None,
                )
            except GitError as exc:
                log.warning("cleaning up after %s: %s", task.key, exc)
                continue
            if removal.reason:
                notes = f"kept for the lead to look at: {removal.reason}"
        with correlated(f"merge-{mr.pk}"):
            _save(mr, step="done", log=notes)
        done += 1
    return done
