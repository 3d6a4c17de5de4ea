"""What agents do to Fleet: boot, heartbeat, pull work, claim files, submit, review.

Cross-model orchestration behind the agent API (REST and MCP share it). Every
function takes the calling agent and keyword arguments, runs in one
transaction, and raises ``TransitionError`` (409) or ``Refused`` (403) without
changing anything when the call is not allowed.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from fleet import budgets, claimsql, heartbeats, planning, spawn, workspace
from fleet.git import paths as repo_paths
from fleet.git import repo as gitrepo
from fleet.git.errors import GitError
from fleet.heartbeats import Beat
from fleet.models import (
    Agent,
    AgentSession,
    Budget,
    Event,
    FileClaim,
    Finding,
    JournalEntry,
    Learning,
    Message,
    Review,
    ReviewComment,
    Task,
    TransitionError,
)


class Refused(Exception):
    """The agent's role or identity does not allow this call (the API's 403)."""

    def __init__(self, message: str, *, code: str = "forbidden") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def require_role(agent: Agent, *roles: str, action: str) -> None:
    if agent.role not in roles:
        raise Refused(f"a {agent.role} may not {action} (needs: {', '.join(roles)})", code="role")


def require_running(agent: Agent, *, action: str) -> None:
    """A stopped agent (budget, timeout, a person) does nothing more until a person
    resumes it: 409, whatever its client believes. Called inside the caller's
    transaction, it locks the agent first (the heartbeat batch's order: agents, then
    tasks), so a stop cannot land between the check and the write."""
    current = (
        Agent.objects.select_for_update(no_key=True)
        .filter(pk=agent.pk)
        .values_list("status", "stop_reason")
        .first()
    )
    if current:
        refuse_stopped(agent, *current, action=action)


def refuse_stopped(agent: Agent, status: str, reason: str, *, action: str) -> None:
    if status == Agent.STOPPED:
        raise TransitionError(
            f"{agent.name} is stopped ({reason}); it cannot {action} until a person resumes it",
            code="stopped",
        )


def require_own_task(agent: Agent, task: Task, *, action: str) -> None:
    """An agent acts only on its own task: 403, or a 409 naming the new holder when
    it held the task once and lost the lease (it went silent, say)."""
    if task.assignee_id == agent.pk:
        return
    if task.events.filter(kind="task.assign", payload__agent=agent.name).exists():
        holder = Agent.objects.filter(pk=task.assignee_id).values_list("name", flat=True).first()
        raise TransitionError(
            f"{agent.name} lost the lease on {task.key}"
            + (f"; it is now held by {holder} (lease epoch {task.lease_epoch})" if holder else "")
            + f"; cannot {action}",
            code="lease_lost",
        )
    raise not_held(agent, task.key, action=action)


def not_held(agent: Agent, key: str, *, action: str) -> Refused:
    """The refusal for a task key the agent does not hold. A key that names no task
    gets the very same answer, so an agent cannot learn which tasks exist."""
    return Refused(f"{key} is not assigned to {agent.name}; cannot {action}", code="owner")


def held_task(agent: Agent, key: str, *, action: str) -> Task:
    """The task ``key`` names, if this agent holds it (else 403, or the 409 of a lost
    lease for a task it held once)."""
    task = Task.objects.select_related("repository").filter(key=key).first()
    if task is None:
        raise not_held(agent, key, action=action)
    require_own_task(agent, task, action=action)
    return task


def open_session(agent: Agent) -> AgentSession:
    session = agent.sessions.filter(ended_at__isnull=True).first()
    return session or AgentSession.objects.create(agent=agent)


def budget_left(agent: Agent) -> float | None:
    """USD left under the tightest cap the agent's spend counts against (its own,
    the fleet's, and its task's, wave's, plan's and repository's); None: no cap."""
    task = Task.objects.select_related("wave").filter(pk=agent.current_task_id).first()
    return heartbeats.budget_left(list(Budget.objects.filter(budgets.applicable(agent, task))))


def leased_task(agent: Agent) -> Task | None:
    """The task the agent is on (a reviewer's is the task under review)."""
    if agent.current_task_id is None:
        return None
    return Task.objects.filter(pk=agent.current_task_id).select_related("repository").first()


# --- boot -----------------------------------------------------------------


def boot(agent: Agent) -> dict[str, Any]:
    """Start a new session and return everything it needs, in one call. Boots of one
    agent queue on its row: two at once (a runner restarting a CLI while its hook
    boots) end one session each, in turn, rather than both ending the same one and
    the second failing on the one-open-session constraint."""
    with transaction.atomic():
        Agent.objects.select_for_update(no_key=True).filter(pk=agent.pk).exists()
        agent.refresh_from_db()
        previous = agent.sessions.filter(ended_at__isnull=True).first()
        if previous is not None:
            reason = "rotated" if agent.status == Agent.ROTATING else "crashed"
            previous.ended_at = timezone.now()
            previous.end_reason = reason
            previous.save(update_fields=["ended_at", "end_reason"])
        session = AgentSession.objects.create(agent=agent)
        if agent.status == Agent.ROTATING:
            agent.complete_rotation()
        elif agent.status == Agent.STALE:
            agent.revive()
        Event.objects.record(
            "agent.boot",
            by=agent,
            agent=agent,
            payload={"session": session.pk, "number": session.number},
        )
    task = leased_task(agent)
    journal = list(
        agent.journal.order_by("-created_at")[: settings.FLEET_BOOT_JOURNAL].values(
            "kind", "body", "created_at", task_key=F("task__key")
        )
    )
    learnings = Learning.objects.all()
    if agent.repository_id:
        learnings = learnings.filter(
            Q(repository_id=agent.repository_id) | Q(repository__isnull=True)
        )
    return {
        "agent": agent,
        "session_id": session.pk,
        "session_number": session.number,
        "task": task,
        "digest": digest(agent, task),
        "journal": journal,
        "inbox": list(agent.inbox.filter(acked_at__isnull=True).order_by("created_at")),
        "learnings": list(
            learnings.select_related("agent", "repository").order_by("-created_at")[:20]
        ),
        "budget_left_usd": budget_left(agent),
    }


DIGEST_PER_KIND = 10


def digest(agent: Agent, task: Task | None) -> dict[str, list[str]]:
    """What was done, learned and is next, from the shadow journal of the task the
    agent holds (the entries of every agent that held it: a resuming agent learns
    from its predecessor), else the agent's own; newest first, a few of each.

    The digest goes into the model's context at session start, so only the task's
    holders write it: a reviewer's notes on the task it reviews (or anything another
    agent managed to file against it) never reach the builder."""
    entries = JournalEntry.objects.filter(kind__in=["done", "learned", "next"])
    if task is not None and task.assignee_id == agent.pk:
        entries = entries.filter(task=task, agent_id__in=holders(task))
    else:
        entries = entries.filter(agent=agent)
    found: dict[str, list[str]] = {"done": [], "learned": [], "next": []}
    for kind, body in entries.order_by("-created_at", "-pk").values_list("kind", "body")[:200]:
        if len(found[kind]) < DIGEST_PER_KIND:
            found[kind].append(body)
    # People's review comments sent to the builder and not resolved yet: a session
    # that starts after "Request changes" knows what to fix. After its submit the
    # builder holds no task, so a session that boots before work/next hands the
    # returned task back learns them from the tasks returned to it.
    if task is not None and task.assignee_id == agent.pk:
        review = workspace.open_comments(task)
    else:
        returned = Task.objects.filter(status=Task.CHANGES_REQUESTED, assignee=agent)
        review = [
            f"{t.key}: {line}"
            for t in returned.order_by("updated_at", "pk")
            for line in workspace.open_comments(t)
        ]
    if review:  # (no empty section: a digest without comments reads as before)
        found["review"] = review
    return found


def holders(task: Task) -> set[int]:
    """The ids of every agent that held the task (its assignments), the holder now
    included."""
    names = {
        payload.get("agent")
        for payload in task.events.filter(kind="task.assign").values_list("payload", flat=True)
        if isinstance(payload, dict)
    }
    ids = set(Agent.objects.filter(name__in=names).values_list("pk", flat=True))
    return ids | ({task.assignee_id} if task.assignee_id else set())


# --- heartbeat ------------------------------------------------------------


def heartbeat(agent: Agent, beat: Beat) -> dict[str, Any]:
    """Record liveness and spend; renew the task lease; answer with directives.

    A batch of one through the same rules the lean heartbeat route batches with."""
    (result,) = heartbeats.record([heartbeats.Pending(beat=beat, agent_id=agent.pk)])
    if isinstance(result, Exception):
        raise result
    return result


# --- work -----------------------------------------------------------------


def next_work(agent: Agent) -> tuple[str, Task | Review | None]:
    """Hand the agent its next task (builder) or review (reviewer), atomically.

    Each ready task goes to exactly one agent: on PostgreSQL the candidate row is
    locked with SKIP LOCKED so concurrent callers take different tasks; on
    SQLite the IMMEDIATE transaction serializes the callers.
    """
    require_role(agent, Agent.BUILDER, Agent.REVIEWER, action="pull work")
    if agent.status == Agent.STOPPED:
        raise TransitionError(f"{agent.name} is stopped ({agent.stop_reason})", code="stopped")
    budgets.guard(agent)
    if agent.role == Agent.BUILDER:
        return "task", _next_task(agent)
    return "review", _next_review(agent)


def _locked(queryset):
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(no_key=True, skip_locked=True, of=("self",))
    return queryset


def _next_task(agent: Agent) -> Task | None:
    _prepare_next(agent)
    with transaction.atomic():
        agent = Agent.objects.select_for_update(no_key=True).get(pk=agent.pk)
        current = leased_task(agent)
        if current is not None and current.status in Task.LEASED_STATES:
            return current  # idempotent: a retried call gets the same task back
        task = _returned_task(agent)
        if task is None:
            task = _assign_ready(agent)
        if task is None:
            return None
    _ensure_worktree(task, agent)  # kept when it has one
    return Task.objects.select_related("repository").get(pk=task.pk)


def _assign_ready(agent: Agent) -> Task | None:
    """Lease the next ready task to the (locked) agent."""
    candidates = Task.objects.ready()
    if agent.repository_id:
        candidates = candidates.filter(repository_id=agent.repository_id)
    affordable = budgets.affordable(candidates)
    task = _locked(affordable).first()
    if task is None:
        waiting = candidates.select_related("wave").first()
        if waiting is not None and not affordable.exists():
            # Ready work, all of it in spent scopes (not merely taken by a concurrent
            # pull): say which.
            budgets.refuse_if_spent(agent, waiting)
        return None
    budgets.refuse_if_spent(agent, task)  # its task's, wave's, plan's, repository's too
    task.assign(agent=agent)
    planning.dispatched(task, by=agent)
    task.start(by=agent, epoch=task.lease_epoch)
    _hold(agent, task)
    return task


def _hold(agent: Agent, task: Task) -> None:
    if agent.status == Agent.IDLE:
        agent.start_work(task=task)
    else:
        agent.current_task = task
        agent.save(update_fields=["current_task"])


def _returned_task(agent: Agent) -> Task | None:
    """A task sent back to this builder (accepted findings, a failed merge) comes
    before new work: it resumes on the same branch and worktree, with a new lease."""
    returned = Task.objects.filter(status=Task.CHANGES_REQUESTED, assignee=agent)
    task = _locked(budgets.affordable(returned)).order_by("updated_at", "pk").first()
    if task is None:
        return None  # (one in a spent scope waits for its cap to be raised)
    budgets.refuse_if_spent(agent, task)
    task.resume(by=agent)
    task.refresh_from_db()
    _hold(agent, task)
    return task


def _prepare_next(agent: Agent) -> None:
    """Make the worktree of the task this agent is about to get, before handing it
    out: a dispatch whose worktree cannot be made is refused (409) with nothing
    changed. (A concurrent caller may take that task first; the worktree is the
    task's either way, and the winner's is made after assignment.)"""
    if (
        leased_task(agent) is not None
        or Task.objects.filter(status=Task.CHANGES_REQUESTED, assignee=agent).exists()
    ):
        return  # it resumes what it holds, or what came back to it
    candidates = Task.objects.ready().select_related("repository")
    if agent.repository_id:
        candidates = candidates.filter(repository_id=agent.repository_id)
    task = budgets.affordable(candidates).first()
    if task is None or not Path(task.repository.path, ".git").exists():
        return  # no clone to make worktrees in: recorded at dispatch (the preflight says so)
    try:
        _make_worktree(task)
    except (GitError, OSError) as exc:
        raise TransitionError(
            f"cannot make {task.key}'s worktree off fresh main: {exc}", code="worktree_failed"
        ) from exc


def _ensure_worktree(task: Task, agent: Agent) -> None:
    """Every dispatch runs in the task's own worktree on its own branch off fresh
    main: made now when the task has none (kept when it has one)."""
    try:
        _make_worktree(task)
    except (GitError, OSError) as exc:
        Event.objects.record(
            "task.worktree_failed",
            by=agent,
            task=task,
            repository_id=task.repository_id,
            payload={"error": str(exc)},
        )


def _make_worktree(task: Task) -> None:
    if task.worktree_path and Path(task.worktree_path).exists():
        return
    worktree, base = spawn.prepare_worktree(task)
    Task.objects.filter(pk=task.pk).update(base_sha=base, worktree_path=str(worktree))


def _next_review(agent: Agent) -> Review | None:
    with transaction.atomic():
        agent = Agent.objects.select_for_update(no_key=True).get(pk=agent.pk)
        mine = Review.objects.filter(reviewer=agent, status=Review.OPEN).first()
        if mine is not None:
            return mine
        session = open_session(agent)
        review = _locked(budgets.affordable(fresh_reviews(agent, session), "task__")).first()
        if review is None:
            return None
        budgets.refuse_if_spent(agent, review.task)
        review.reviewer = agent
        review.session = session
        review.provenance = {
            "reviewer": agent.name,
            "session": session.pk,
            "model": session.model_name,
            "never_held_task": True,
            "fresh_session": True,  # never saw the builder's context
            **{k: v for k, v in review.provenance.items() if k == "requested_by"},
        }
        review.save(update_fields=["reviewer", "session", "provenance"])
        if agent.status == Agent.IDLE:
            agent.start_review(task=review.task)
        Event.objects.record("review.assigned", by=agent, task=review.task, agent=agent)
    return review


def fresh_reviews(agent: Agent, session: AgentSession):
    """The open reviews this reviewer may take. A fresh reviewer never reviews a task
    it ever held, claimed files for or journalled about in this session, and a
    re-review a lead asked for goes to a reviewer who never reviewed the task."""
    held = Event.objects.filter(kind="task.assign", payload__agent=agent.name).values("task_id")
    claimed = FileClaim.objects.filter(agent=agent).values("task_id")
    journalled = JournalEntry.objects.filter(session=session, task__isnull=False).values("task_id")
    reviewed = Review.objects.filter(reviewer=agent).values("task_id")
    candidates = (
        Review.objects.filter(status=Review.OPEN, reviewer__isnull=True)
        .filter(task__status__in=[Task.IN_REVIEW, Task.APPROVED])
        .exclude(task__assignee=agent)
        .exclude(task_id__in=held)
        .exclude(task_id__in=claimed)
        .exclude(task_id__in=journalled)
        .exclude(Q(task_id__in=reviewed) & Q(provenance__has_key="requested_by"))
        .order_by("created_at")
    )
    if agent.repository_id:
        candidates = candidates.filter(task__repository_id=agent.repository_id)
    return candidates


def _full_sha(task: Task, commit: str) -> str:
    """The full sha of a submitted commit (the API takes abbreviations); a commit the
    repository does not have is refused. Without a clone to look in (a repository not
    set up yet), the commit is kept as given."""
    path = Path(task.repository.path)
    if not (path / ".git").exists() and not (path / "HEAD").exists():
        return commit
    try:
        return gitrepo.head_sha(path, f"{commit}^{{commit}}")
    except GitError as exc:
        raise TransitionError(
            f"{task.key}: commit {commit} is not in {task.repository.slug} (commit in the "
            "task's worktree, then submit)",
            code="unknown_commit",
        ) from exc


def submit(agent: Agent, *, task: Task, commit: str, epoch: int) -> Review:
    """A builder hands in a commit: the task goes to review. A submit opens a Review
    (a review nobody took yet moves to the new commit), except a resubmit after
    accepted findings: those a person checks against the new diff (or a re-review,
    when a lead asks for one). The ownership gate (changed files within the declared
    and claimed paths, none that planning gave another task) is worked out here and
    kept on the task."""
    require_role(agent, Agent.BUILDER, action="submit code")
    require_own_task(agent, task, action="submit it")
    commit = _full_sha(task, commit)
    report = planning.ownership(task, commit)  # git, before the transaction
    with transaction.atomic():
        require_running(agent, action="submit")
        task.submit(commit=commit, by=agent, epoch=epoch, ownership=report)
        review = (
            Review.objects.select_for_update(no_key=True)
            .filter(task=task, status=Review.OPEN, reviewer__isnull=True)
            .first()
        )
        # What people sent back (accepted findings, their own comments) people check
        # against the new diff: no new AI review unless a lead asks for one.
        fixing = (
            Finding.objects.filter(
                review__task=task, verdict=Finding.ACCEPTED, resolved_in_commit=""
            ).exists()
            or task.comments.filter(state=ReviewComment.SENT).exists()
        )
        if review is not None:
            review.commit_sha = commit
            review.save(update_fields=["commit_sha"])
        elif fixing:
            review = task.reviews.order_by("-created_at").first()
        else:
            review = Review.objects.create(task=task, commit_sha=commit)
        if agent.status == Agent.WORKING:
            agent.finish()
        FileClaim.objects.filter(task=task, agent=agent, released_at__isnull=True).update(
            released_at=timezone.now()
        )
    return review


# --- claims ---------------------------------------------------------------


def claim(agent: Agent, *, task: Task, paths: list[str], mode: str) -> list[FileClaim]:
    """Claim file paths for a task under a lease the agent's heartbeats renew; 409
    names the current holder, or the task a planning decision gave the path to.
    Each path is taken in its one spelling (``./a//b.py`` is ``a/b.py``), so another
    spelling of a held path is that path; ``PathRefused`` for one that names no file
    (the API refuses those with a 422 before they get here)."""
    paths = [repo_paths.canonical(path) for path in paths]
    require_role(agent, Agent.BUILDER, action="claim files")
    require_own_task(agent, task, action="claim files for it")
    if task.status not in Task.LEASED_STATES:
        raise TransitionError(f"{task.key} is {task.status}; claim while working on it")
    if task.read_only and mode == FileClaim.WRITE:
        raise TransitionError(
            f"{task.key} is read-only: it may claim files to read, not to write",
            code="read_only",
        )
    now = timezone.now()
    expires = now + timedelta(seconds=settings.FLEET_CLAIM_TTL)
    claims = []
    with transaction.atomic():
        # The agent locked first (the heartbeat batch's order: agents, then tasks), so a
        # stop or a lease expiry cannot land meanwhile; under that lock, look at the
        # task again, in case its lease lapsed (and it went back to ready) after the
        # checks above.
        status, reason, task_status, assignee = claimsql.state(agent.pk, task.pk)
        refuse_stopped(agent, status, reason, action="claim files")
        if task_status not in Task.LEASED_STATES or assignee != agent.pk:
            raise TransitionError(
                f"{agent.name} lost the lease on {task.key}; cannot claim files for it",
                code="lease_lost",
            )
        refusals = planning.claim_refusals(task, list(paths), mode)
        if refusals:
            raise TransitionError("; ".join(refusals), code="claim_owned")
        # Paths in one order for every caller, so two multi-path claims lock their
        # rows in the same order (no deadlock); the answer keeps the caller's order.
        order = {path: i for i, path in enumerate(dict.fromkeys(paths))}
        for path in sorted(order):
            held = claimsql.writer(task.repository_id, path)
            if held is not None and held.claim.task_id == task.pk:
                claimsql.extend(held.claim, expires)
                held.claim.task = task
                claims.append(held.claim)
                continue
            if held is not None and held.claim.expires_at > now and mode == FileClaim.WRITE:
                raise TransitionError(
                    f"{path} is claimed by {held.agent} for {held.task}"
                    f" until {held.claim.expires_at:%H:%M:%S}",
                    code="claim_held",
                )
            if held is not None and mode == FileClaim.WRITE:
                claimsql.end(held.claim, now)  # expired: taken over in this transaction
            made = claimsql.insert(
                task=task, agent=agent, path=path, mode=mode, now=now, expires=expires
            )
            if made is None:
                # Another agent's first claim of this path committed meanwhile (no row
                # existed to lock): the unique constraint decided, and it is a 409.
                raise TransitionError(
                    f"{path} was just claimed by another agent", code="claim_held"
                )
            claims.append(made)
        claimsql.record(
            "claims.claim", by=agent, task=task, payload={"paths": list(paths), "mode": mode}
        )
    return sorted(claims, key=lambda claim: order[claim.path])


def release(agent: Agent, *, claim_id: int) -> FileClaim:
    with transaction.atomic():
        found = claimsql.release(agent, claim_id, timezone.now())
        if found is None:
            raise FileClaim.DoesNotExist(f"claim {claim_id} not found for {agent.name}")
        claim, released = found
        if released:
            claimsql.record(
                "claims.release", by=agent, task_id=claim.task_id, payload={"path": claim.path}
            )
    return claim


# --- review ---------------------------------------------------------------


def post_findings(agent: Agent, *, review: Review, findings: list[dict]) -> Review:
    require_role(agent, Agent.REVIEWER, action="post findings")
    if review.reviewer_id != agent.pk:
        raise Refused(f"review {review.pk} is not assigned to {agent.name}", code="owner")
    with transaction.atomic():
        require_running(agent, action="post findings")
        current = Review.objects.select_for_update(no_key=True).get(pk=review.pk)
        if current.status != Review.OPEN:
            raise TransitionError(f"review {review.pk} is already closed", code="review_closed")
        Finding.objects.bulk_create(Finding(review=current, **f) for f in findings)
        current.status = Review.CLOSED
        current.closed_at = timezone.now()
        current.save(update_fields=["status", "closed_at"])
        if agent.status == Agent.REVIEWING:
            agent.finish()
        Event.objects.record(
            "review.findings",
            by=agent,
            task_id=current.task_id,
            payload={"review": current.pk, "findings": len(findings)},
        )
        _resolved_by_rereview(agent, current)
        if findings:
            from fleet import webhooks

            task = Task.objects.select_related("repository").get(pk=current.task_id)
            webhooks.notify(
                task,
                "findings_waiting",
                [f"{len(findings)} finding(s) from {agent.name} wait for a verdict"],
            )
    return current


def _resolved_by_rereview(agent: Agent, review: Review) -> None:
    """A re-review of a later commit (asked for by a lead, done by a new fresh
    reviewer who was shown the accepted findings) settles the findings accepted
    before it: what it still finds wrong it raises again, as new findings. The task
    is locked first (as verdicts lock it), so a verdict given meanwhile is not
    overwritten."""
    if not review.provenance.get("requested_by"):
        return
    Task.objects.select_for_update(no_key=True, of=("self",)).get(pk=review.task_id)
    earlier = Finding.objects.filter(
        review__task_id=review.task_id,
        verdict=Finding.ACCEPTED,
        resolved_in_commit="",
        decided_at__lt=review.created_at,
    ).exclude(review=review)
    for finding in earlier:
        if not Finding.objects.filter(
            pk=finding.pk,
            verdict=Finding.ACCEPTED,
            resolved_in_commit="",
            decided_at__lt=review.created_at,
        ).update(resolved_in_commit=review.commit_sha):
            continue
        Event.objects.record(
            "finding.resolve",
            by=agent,
            task_id=review.task_id,
            payload={"finding": finding.pk, "commit": review.commit_sha, "by_review": review.pk},
        )


# --- journal and inbox ----------------------------------------------------


def journal(agent: Agent, *, kind: str, body: str, task: Task | None) -> JournalEntry:
    with transaction.atomic():
        entry = JournalEntry.objects.create(
            agent=agent, session=open_session(agent), task=task, kind=kind, body=body
        )
        # An event too, so the agent's page and the activity log show it live.
        Event.objects.record(
            "agent.journal", by=agent, agent=agent, task=task, payload={"kind": kind}
        )
    return entry


def ack(agent: Agent, *, message_id: int) -> Message:
    message = Message.objects.get(pk=message_id, recipient=agent)
    if message.acked_at is None:
        with transaction.atomic():
            message.acked_at = timezone.now()
            message.save(update_fields=["acked_at"])
            Event.objects.record(
                "agent.ack", by=agent, agent=agent, payload={"message": message.pk}
            )
    return message
