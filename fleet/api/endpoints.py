"""The agent API's endpoints: thin wrappers over ``fleet.dispatch``."""

from __future__ import annotations

from django.forms.models import model_to_dict
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Router, Status

from fleet import dispatch, workspace
from fleet.api.schemas import (
    BootOut,
    CheckIn,
    ClaimIn,
    ClaimOut,
    CreatedOut,
    ErrorOut,
    FindingsIn,
    HeartbeatIn,
    HeartbeatOut,
    Id,
    JournalIn,
    Key,
    LearningIn,
    MessageOut,
    ReviewOut,
    SpendIn,
    SubmitIn,
    SubmitOut,
    WorkOut,
)
from fleet.git import facts
from fleet.git.errors import GitError
from fleet.models import Agent, CheckRun, Event, Finding, Learning, Review, Task, TransitionError

router = Router()
ERRORS = dict.fromkeys((400, 401, 403, 404, 409, 413, 422, 429, 503), ErrorOut)


@router.get("boot", response={200: BootOut, **ERRORS}, summary="Everything a new session needs")
def boot(request: HttpRequest):
    """Identity, capabilities, current task, journal digest, unread inbox, learnings, budget.

    Starts a new AgentSession (ending the previous one) and completes a rotation."""
    return dispatch.boot(request.auth)


@router.post("heartbeat", response={200: HeartbeatOut, **ERRORS}, summary="Liveness and spend")
def heartbeat(request: HttpRequest, payload: HeartbeatIn):
    """Report context use, status and spend; renews the task lease; answers directives."""
    return dispatch.heartbeat(request.auth, dispatch.Beat(**payload.dict()))


@router.post(
    "spend", response={200: HeartbeatOut, **ERRORS}, summary="Report spend without a heartbeat"
)
def spend(request: HttpRequest, payload: SpendIn):
    """Tokens and cost (or tokens and the model, priced from Fleet's price table),
    counted against every budget in scope, as a heartbeat's would be."""
    return dispatch.heartbeat(
        request.auth, dispatch.Beat(context_pct=None, liveness=False, **payload.dict())
    )


@router.post("work/next", response={200: WorkOut, **ERRORS}, summary="Pull the next work item")
def work_next(request: HttpRequest):
    """Builders get a ready task (leased to them), reviewers an open review."""
    kind, item = dispatch.next_work(request.auth)
    if item is None:
        return {"kind": "none"}
    if kind == "task":
        return {"kind": "task", "task": item, "review_comments": workspace.open_comments(item)}
    return {"kind": "review", "review_id": item.pk, "task": item.task}


@router.post("claims", response={201: list[ClaimOut], **ERRORS}, summary="Claim file paths")
def claim(request: HttpRequest, payload: ClaimIn):
    """Claim paths of the agent's task under a lease renewed by its heartbeats (it
    lapses about three heartbeat intervals after the last one). 409 names the holder
    of a held path, or the task a planning decision gave the path to."""
    dispatch.require_role(request.auth, Agent.BUILDER, action="claim files")
    task = dispatch.held_task(request.auth, payload.task, action="claim files for it")
    claims = dispatch.claim(request.auth, task=task, paths=payload.paths, mode=payload.mode)
    return Status(201, claims)


@router.delete("claims/{id:claim_id}", response={200: ClaimOut, **ERRORS}, summary="Release")
def release(request: HttpRequest, claim_id: Id):
    return dispatch.release(request.auth, claim_id=claim_id)


@router.post("tasks/{key}/submit", response={200: SubmitOut, **ERRORS}, summary="Hand in work")
def submit(request: HttpRequest, key: Key, payload: SubmitIn):
    """The builder hands in a commit of its task; the task goes to review."""
    dispatch.require_role(request.auth, Agent.BUILDER, action="submit code")
    task = dispatch.held_task(request.auth, key, action="submit it")
    review = dispatch.submit(request.auth, task=task, commit=payload.commit, epoch=payload.epoch)
    return {"task": task.key, "status": task.status, "review_id": review.pk}


def _review_for(agent: Agent, review_id: int) -> Review:
    """The review, if it is this reviewer's; an id that names no review gets the same
    403 as another reviewer's (which reviews exist is not the caller's to learn)."""
    dispatch.require_role(agent, Agent.REVIEWER, action="read reviews")
    review = (
        Review.objects.select_related("task__repository")
        .filter(pk=review_id, reviewer=agent)
        .first()
    )
    if review is None:
        raise dispatch.Refused(f"review {review_id} is not assigned to {agent.name}", code="owner")
    return review


@router.get("reviews/{id:review_id}", response={200: ReviewOut, **ERRORS}, summary="Review")
def review(request: HttpRequest, review_id: Id):
    """The spec (with version), the diff against the merge base, and the changed files."""
    review = _review_for(request.auth, review_id)
    task = review.task
    try:
        branch = facts.branch_facts(
            task.repository.path,
            main=task.base_sha or task.repository.default_branch,
            head=review.commit_sha,
        )
    except GitError as exc:
        raise TransitionError(f"cannot diff {review.commit_sha}: {exc}", code="no_diff") from exc
    return {
        "id": review.pk,
        "status": review.status,
        "commit_sha": review.commit_sha,
        "task": task,
        "diff": branch.diff,
        "changed_files": [change.path for change in branch.files],
        "accepted_findings": (
            [
                {
                    **model_to_dict(f, fields=FINDING_FIELDS),
                    "id": f.pk,
                    "commit_sha": f.review.commit_sha,
                }
                for f in Finding.objects.filter(
                    review__task=task,
                    verdict=Finding.ACCEPTED,
                    resolved_in_commit="",
                    decided_at__lt=review.created_at,
                )
                .exclude(review=review)
                .select_related("review")
            ]
            if review.provenance.get("requested_by")
            else []
        ),
    }


FINDING_FIELDS = ["path", "line_start", "line_end", "severity", "title", "body", "suggested_fix"]


@router.post(
    "reviews/{id:review_id}/findings",
    response={200: CreatedOut, **ERRORS},
    summary="Post findings and close the review",
)
def findings(request: HttpRequest, review_id: Id, payload: FindingsIn):
    review = _review_for(request.auth, review_id)
    dispatch.post_findings(
        request.auth, review=review, findings=[f.dict() for f in payload.findings]
    )
    return {"id": review.pk}


@router.post("journal", response={201: CreatedOut, **ERRORS}, summary="Write the shadow journal")
def journal(request: HttpRequest, payload: JournalIn):
    # Only the task's holder journals on it: the task's entries become its holder's
    # boot digest, which goes into the model's context.
    task = (
        dispatch.held_task(request.auth, payload.task, action="journal on it")
        if payload.task
        else None
    )
    entry = dispatch.journal(request.auth, kind=payload.kind, body=payload.body, task=task)
    return Status(201, {"id": entry.pk})


@router.get("inbox", response={200: list[MessageOut], **ERRORS}, summary="Unread messages")
def inbox(request: HttpRequest, all: bool = False):
    messages = request.auth.inbox.select_related("task").order_by("created_at")
    if not all:
        messages = messages.filter(acked_at__isnull=True)
    return list(messages[:200])


@router.post("inbox/{id:message_id}/ack", response={200: MessageOut, **ERRORS}, summary="Ack")
def ack(request: HttpRequest, message_id: Id):
    return dispatch.ack(request.auth, message_id=message_id)


@router.post("learnings", response={201: CreatedOut, **ERRORS}, summary="Share a learning")
def learning(request: HttpRequest, payload: LearningIn):
    agent = request.auth
    item = Learning.objects.create(agent=agent, repository=agent.repository, **payload.dict())
    return Status(201, {"id": item.pk})


@router.post("checks", response={201: CreatedOut, **ERRORS}, summary="Report a check run")
def check(request: HttpRequest, payload: CheckIn):
    agent = request.auth
    dispatch.require_role(agent, Agent.BUILDER, Agent.ORCHESTRATOR, action="report checks")
    # A check moves a task's gates: a builder reports one on the task it holds (and
    # the gate does not count those); orchestrators are the fleet's CI, for any task.
    task = None
    if payload.task and agent.role == Agent.BUILDER:
        task = dispatch.held_task(agent, payload.task, action="report checks on it")
    elif payload.task:
        task = get_object_or_404(Task.objects.select_related("repository"), key=payload.task)
    repository = task.repository if task else agent.repository
    if repository is None:
        raise dispatch.Refused("name a task: this agent has no repository", code="no_repository")
    run = CheckRun.objects.create(
        repository=repository,
        task=task,
        name=payload.name,
        commit_sha=payload.commit,
        status=payload.status,
        url=payload.url,
        log=payload.log,
        reported_by=agent,
    )
    # An event, so the task's gates (and its page) follow the check live.
    Event.objects.record(
        f"check.{run.status}",
        by=agent,
        task=task,
        repository_id=repository.pk,
        payload={"check": run.pk, "name": run.name, "commit": run.commit_sha},
    )
    return Status(201, {"id": run.pk})
