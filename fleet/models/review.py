"""Reviews and findings, checks, and the merge queue's requests."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from fleet.models.agents import Agent, AgentSession
from fleet.models.work import Repository, Task

# --- review ---------------------------------------------------------------


class Review(models.Model):
    OPEN, CLOSED = "open", "closed"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="reviews")
    commit_sha = models.CharField(max_length=40)
    reviewer = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="reviews"
    )
    session = models.ForeignKey(AgentSession, null=True, blank=True, on_delete=models.SET_NULL)
    provenance = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=8, choices=[(OPEN, OPEN), (CLOSED, CLOSED)], default=OPEN)
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"review of {self.task.key} @ {self.commit_sha[:8]}"


class FindingQuerySet(models.QuerySet):
    def pending(self) -> FindingQuerySet:
        return self.filter(verdict=Finding.PENDING)


class Finding(models.Model):
    PENDING, ACCEPTED, OVERRULED = "pending", "accepted", "overruled"
    SEVERITIES = ["info", "minor", "major", "critical"]

    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="findings")
    path = models.CharField(max_length=500)
    line_start = models.PositiveIntegerField(null=True, blank=True)
    line_end = models.PositiveIntegerField(null=True, blank=True)
    severity = models.CharField(max_length=10, choices=[(s, s) for s in SEVERITIES])
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    suggested_fix = models.TextField(blank=True)
    verdict = models.CharField(
        max_length=10,
        choices=[(v, v) for v in (PENDING, ACCEPTED, OVERRULED)],
        default=PENDING,
    )
    reason = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    resolved_in_commit = models.CharField(max_length=40, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = FindingQuerySet.as_manager()

    class Meta:
        ordering = ["review", "path", "line_start"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(verdict="overruled") | ~Q(reason=""),
                name="finding_overrule_needs_reason",
            ),
            models.CheckConstraint(
                condition=Q(line_end__isnull=True)
                | Q(line_start__isnull=False, line_end__gte=models.F("line_start")),
                name="finding_line_range",
            ),
        ]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.title}"


class ReviewComment(models.Model):
    """A person's own comment on lines of a task's diff. Drafts collect (only their
    author sees them) until "Request changes" sends them all to the builder in one
    message; a sent comment blocks the review gate, as an accepted finding does, until
    a person resolves it after the builder resubmitted."""

    DRAFT, SENT, RESOLVED = "draft", "sent", "resolved"
    OLD, NEW = "old", "new"
    BODY_MAX = 4000

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    path = models.CharField(max_length=500)
    line_start = models.PositiveIntegerField()
    line_end = models.PositiveIntegerField()
    side = models.CharField(max_length=3, choices=[(OLD, OLD), (NEW, NEW)], default=NEW)
    body = models.TextField()
    state = models.CharField(
        max_length=8, choices=[(s, s) for s in (DRAFT, SENT, RESOLVED)], default=DRAFT
    )
    # The commit the comment was written on: after a resubmit it is shown against it.
    commit_sha = models.CharField(max_length=40)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["path", "line_start", "created_at", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(line_end__gte=models.F("line_start")) & Q(line_start__gte=1),
                name="comment_line_range",
            ),
        ]

    def __str__(self) -> str:
        return f"comment on {self.path}:{self.lines} ({self.state})"

    @property
    def lines(self) -> str:
        if self.line_start == self.line_end:
            return str(self.line_start)
        return f"{self.line_start}-{self.line_end}"


class FileViewed(models.Model):
    """A person marked a file of a task's diff viewed, as its patch was then: a
    resubmit that changes the file changes the hash and the mark no longer holds."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="+")
    path = models.CharField(max_length=500)
    patch_hash = models.CharField(max_length=40)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "task", "path"], name="viewed_once_per_file")
        ]


class ReviewPrefs(models.Model):
    """How a person likes to read diffs (unified or split), remembered across pages."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="review_prefs"
    )
    split = models.BooleanField(default=False)


class CheckRun(models.Model):
    STATUSES = ["pending", "running", "passed", "failed", "error"]

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="checks")
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.CASCADE, related_name="checks"
    )
    wave = models.ForeignKey(
        "Wave", null=True, blank=True, on_delete=models.CASCADE, related_name="checks"
    )
    name = models.CharField(max_length=100)
    commit_sha = models.CharField(max_length=40)
    status = models.CharField(max_length=10, choices=[(s, s) for s in STATUSES], default="pending")
    url = models.URLField(blank=True)
    log = models.TextField(blank=True)
    # The agent that reported the run through the API (none: Fleet's own merge check).
    # The checks gate does not count runs a task's own builder reported.
    reported_by = models.ForeignKey(
        Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} {self.status} @ {self.commit_sha[:8]}"


class MergeBatch(models.Model):
    """Several queued tasks tested together: their squashed commits chained on main's
    tip, one check on the chain's top, and on red a bisection that finds the task
    that broke it. ``trials`` is the bisection's record, one entry per check:
    ``{"size": tasks in the tested prefix, "top": sha, "passed": bool | None}``.
    Every step is written before it is taken: ``landing`` and ``target_sha`` name the
    prefix main is about to move to, so a restarted worker knows what landed."""

    STEPS = ["building", "testing", "bisecting", "updating", "done"]

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="batches")
    base_sha = models.CharField(max_length=40, help_text="main's tip the chain was built on")
    step = models.CharField(max_length=10, choices=[(s, s) for s in STEPS], default="building")
    trials = models.JSONField(default=list, blank=True)
    landed = models.PositiveSmallIntegerField(default=0, help_text="chain tasks on main")
    landing = models.PositiveSmallIntegerField(default=0, help_text="chain tasks main moves to")
    target_sha = models.CharField(max_length=40, blank=True)
    note = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["repository"], condition=~Q(step="done"), name="merge_one_open_batch"
            ),
        ]

    def __str__(self) -> str:
        return f"batch {self.pk} of {self.repository_id} ({self.step})"


class MergeRequest(models.Model):
    STEPS = ["queued", "candidate", "testing", "updating", "pushing", "cleanup", "done"]
    RESULTS = ["pending", "merged", "failed"]
    PENDING, MERGED, FAILED = RESULTS

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="merge_requests")
    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="merges")
    position = models.PositiveIntegerField()
    candidate_sha = models.CharField(max_length=40, blank=True)
    head_sha = models.CharField(max_length=40, blank=True, help_text="the branch commit merged")
    step = models.CharField(max_length=10, choices=[(s, s) for s in STEPS], default="queued")
    result = models.CharField(max_length=10, choices=[(r, r) for r in RESULTS], default="pending")
    log = models.TextField(blank=True)
    # In a batch, candidate_sha is this task's commit in the chain.
    batch = models.ForeignKey(
        MergeBatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="members"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["repository", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["task"], condition=Q(result="pending"), name="merge_one_pending_per_task"
            ),
            models.UniqueConstraint(
                fields=["repository", "position"], name="merge_unique_position"
            ),
        ]

    def __str__(self) -> str:
        return f"merge {self.task.key} ({self.step}, {self.result})"


class WebhookDelivery(models.Model):
    """A notification about a task that needs a person, on its way to the
    repository's webhook: written in the transaction that found the need, sent by
    the worker with retries (an outbox, so nothing is lost to a slow receiver)."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="webhooks")
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    url = models.URLField()
    kind = models.CharField(max_length=40)
    payload = models.JSONField(default=dict)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now, db_index=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    gave_up_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} to {self.url} ({self.attempts} attempts)"
