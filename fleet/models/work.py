"""Repositories, plans, waves and tasks: the work and its state machines."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from fleet.models.base import Event, StateMachine, TransitionError

if TYPE_CHECKING:
    from fleet.models.agents import Agent


# --- repositories, plans, waves -------------------------------------------

slug_validator = RegexValidator(r"^[a-z0-9][a-z0-9-]*$", "Use lowercase letters, digits and '-'.")


def drafted_by_field() -> models.ForeignKey:
    """Plans, waves and tasks an orchestrator agent drafted through the API say so."""
    return models.ForeignKey(
        "Agent",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="the orchestrator agent that drafted this through the API",
    )


MAX_MERGE_BATCH = 20


class Repository(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=60, unique=True, validators=[slug_validator])
    path = models.CharField(max_length=500, help_text="Fleet's own clone of the repository")
    remote_name = models.CharField(max_length=60, blank=True, default="origin")
    default_branch = models.CharField(max_length=100, default="main")
    check_command = models.CharField(max_length=500, blank=True)
    worktree_root = models.CharField(max_length=500, blank=True)
    dod_items = models.JSONField(
        default=list,
        blank=True,
        help_text=(
            "Definition-of-done checklist: a text item is ticked by a person; "
            '{"auto": "changelog"}, {"auto": "task_key"} and {"auto": "docs", "when": '
            '["src/**"], "docs": ["README.md", "docs/**"]} are checked on the diff'
        ),
    )
    required_checks = models.JSONField(
        default=list,
        blank=True,
        help_text="Names of the CI checks that must pass on a task's submitted commit",
    )
    auto_merge = models.BooleanField(
        default=False, help_text="Tasks whose gates are all green enter the merge queue"
    )
    agent_permissions = models.CharField(
        max_length=16,
        choices=[("worktree", "edit, test and commit in its own worktree"), ("full", "everything")],
        default="worktree",
        help_text="What an agent CLI started by a runner may do without asking",
    )
    rotate_at_pct = models.PositiveSmallIntegerField(
        default=60,
        validators=[MinValueValidator(10), MaxValueValidator(100)],
        help_text="Context use (percent) at which an agent's heartbeat answers 'rotate'",
    )
    webhook_url = models.URLField(
        blank=True, help_text="Tasks that need a person are POSTed here as JSON (with retries)"
    )
    merge_batch_size = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_MERGE_BATCH)],
        help_text="Queued tasks the merge queue tests together as one chain (1: one at a time)",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "repositories"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        errors = [dod_item_error(item) for item in self.dod_items or []]
        errors = [e for e in errors if e]
        if not isinstance(self.dod_items, list):
            errors = ["The checklist is a list of items."]
        if not isinstance(self.required_checks, list) or not all(
            isinstance(name, str) and name for name in self.required_checks
        ):
            errors.append("Required checks are a list of check names.")
        if errors:
            raise ValidationError({"dod_items": errors})


DOD_AUTO = ("changelog", "task_key", "docs")


def dod_item_error(item: Any) -> str:
    """Why a definition-of-done item is malformed ('' when it is fine)."""
    if isinstance(item, str):
        return "" if item.strip() else "An item needs some text."
    if not isinstance(item, dict) or item.get("auto") not in DOD_AUTO:
        return f"{item!r}: an item is text (ticked by a person) or {{'auto': one of {DOD_AUTO}}}."
    if item["auto"] == "docs":
        for name in ("when", "docs"):
            value = item.get(name)
            if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
                return f"{item!r}: a docs item needs '{name}', a list of globs."
    return ""


class Plan(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=60, unique=True, validators=[slug_validator])
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    drafted_by = drafted_by_field()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class WaveQuerySet(models.QuerySet):
    def for_plan(self, plan: Plan) -> WaveQuerySet:
        return self.filter(plan=plan).order_by("number")

    def active(self) -> WaveQuerySet:
        return self.filter(status__in=[Wave.APPROVED, Wave.RUNNING, Wave.BLOCKED])

    def with_progress(self) -> WaveQuerySet:
        return self.annotate(
            task_total=models.Count("tasks"),
            task_done=models.Count(
                "tasks", filter=Q(tasks__status__in=[Task.MERGED, Task.CANCELLED])
            ),
        )


class Wave(StateMachine):
    DRAFT, APPROVED, RUNNING, BLOCKED, MERGED, VERIFIED = (
        "draft",
        "approved",
        "running",
        "blocked",
        "merged",
        "verified",
    )
    STATUS_CHOICES = [(s, s) for s in (DRAFT, APPROVED, RUNNING, BLOCKED, MERGED, VERIFIED)]
    TRANSITIONS = {
        "approve": (frozenset({DRAFT}), APPROVED),
        "start": (frozenset({APPROVED}), RUNNING),
        "block": (frozenset({RUNNING}), BLOCKED),
        "unblock": (frozenset({BLOCKED}), RUNNING),
        "mark_merged": (frozenset({RUNNING}), MERGED),
        "verify": (frozenset({MERGED}), VERIFIED),
    }
    EVENT_PREFIX = "wave"
    DISPATCHING = (APPROVED, RUNNING)  # its ready tasks are handed out

    plan = models.ForeignKey(Plan, on_delete=models.CASCADE, related_name="waves")
    number = models.PositiveIntegerField()
    name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, default=DRAFT)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    approved_at = models.DateTimeField(null=True, blank=True)
    # What approval read out and accepted, kept with the wave (and in its Event).
    announcement = models.TextField(blank=True)
    override_reason = models.TextField(
        blank=True, help_text="why it was approved before the previous wave was verified"
    )
    crowd_reason = models.TextField(
        blank=True, help_text="why more than the rule-of-four agents run in this wave"
    )
    auto_merge = models.BooleanField(
        default=False, help_text="Tasks whose gates are all green enter the merge queue"
    )
    drafted_by = drafted_by_field()
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = WaveQuerySet.as_manager()

    class Meta:
        ordering = ["plan", "number"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "number"], name="wave_unique_number"),
            models.CheckConstraint(condition=Q(number__gte=1), name="wave_number_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.plan} · wave {self.number}" + (f" ({self.name})" if self.name else "")

    def _event_subjects(self) -> dict[str, Any]:
        return {"wave": self, "plan_id": self.plan_id}

    def previous(self) -> Wave | None:
        return (
            Wave.objects.filter(plan_id=self.plan_id, number__lt=self.number)
            .order_by("-number")
            .first()
        )

    def preflight(self) -> list[str]:
        """Reasons the wave cannot be approved yet; empty when it can."""
        problems = []
        if not self.tasks.exists():
            problems.append("The wave has no tasks.")
        unresolved = self.shared_files.filter(strategy="").values_list("path", flat=True)
        for path in unresolved:
            problems.append(f"Shared file {path} has no strategy yet.")
        return problems

    def approve(
        self,
        *,
        by: Any,
        announcement: str = "",
        override_reason: str = "",
        crowd_reason: str = "",
    ) -> Event:
        """The transition itself; ``fleet.planning.approve`` runs the whole preflight
        and makes the tasks ready in the same transaction."""

        def check(current: Wave) -> None:
            if by is not None and _is_agent(by):
                raise TransitionError("only a person (a lead) approves a wave", code="role")
            problems = current.preflight()
            if problems:
                raise TransitionError("Preflight failed: " + " ".join(problems), code="preflight")

        return self._transition(
            "approve",
            by=by,
            check=check,
            changes={
                "approved_by": by,
                "approved_at": timezone.now(),
                "announcement": announcement,
                "override_reason": override_reason,
                "crowd_reason": crowd_reason,
            },
            payload={
                "announcement": announcement,
                **({"override_reason": override_reason} if override_reason else {}),
                **({"crowd_reason": crowd_reason} if crowd_reason else {}),
            },
        )

    def start(self, *, by: Any = None) -> Event:
        """Running from the first assignment; the order of waves holds unless a lead
        overrode it (with a reason) at approval."""

        def check(current: Wave) -> None:
            previous = current.previous()
            if current.override_reason:
                return
            if previous is not None and previous.status != Wave.VERIFIED:
                raise TransitionError(
                    f"Wave {current.number} can start only after wave {previous.number}"
                    f" is verified (it is {previous.status}).",
                    code="previous_wave",
                )

        return self._transition("start", by=by, check=check)

    def block(self, *, by: Any = None, reason: str = "") -> Event:
        return self._transition("block", by=by, payload={"reason": reason})

    def unblock(self, *, by: Any) -> Event:
        return self._transition("unblock", by=by)

    def mark_merged(self, *, by: Any = None) -> Event:
        def check(current: Wave) -> None:
            open_tasks = current.tasks.exclude(status__in=[Task.MERGED, Task.CANCELLED])
            if open_tasks.exists():
                keys = ", ".join(open_tasks.values_list("key", flat=True)[:10])
                raise TransitionError(f"Tasks not merged yet: {keys}", code="tasks_open")

        return self._transition("mark_merged", by=by, check=check)

    def verify(self, *, by: Any, checks: list | None = None) -> Event:
        return self._transition("verify", by=by, payload={"checks": checks or []})


# --- tasks ----------------------------------------------------------------


class TaskQuerySet(models.QuerySet):
    def ready(self) -> TaskQuerySet:
        return self.filter(status=Task.READY, wave__status__in=Wave.DISPATCHING).order_by(
            "wave__number", "id"
        )

    def for_wave(self, wave: Wave) -> TaskQuerySet:
        return self.filter(wave=wave)

    def leased(self) -> TaskQuerySet:
        return self.filter(status__in=Task.LEASED_STATES)

    def lease_expired(self, now) -> TaskQuerySet:
        return self.leased().filter(lease_expires_at__lt=now)

    def open(self) -> TaskQuerySet:
        return self.exclude(status__in=Task.FINAL_STATES)


key_validator = RegexValidator(r"^[A-Z][A-Z0-9]*-\d+$", "A key looks like T-12.")


class Task(StateMachine):
    DRAFT = "draft"
    READY = "ready"
    ASSIGNED = "assigned"
    WORKING = "working"
    IN_REVIEW = "in_review"
    CHANGES_REQUESTED = "changes_requested"
    APPROVED = "approved"
    MERGING = "merging"
    MERGED = "merged"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STATUS_CHOICES = [
        (s, s.replace("_", " "))
        for s in (
            DRAFT,
            READY,
            ASSIGNED,
            WORKING,
            IN_REVIEW,
            CHANGES_REQUESTED,
            APPROVED,
            MERGING,
            MERGED,
            FAILED,
            CANCELLED,
        )
    ]
    LEASED_STATES = (ASSIGNED, WORKING)
    FINAL_STATES = (MERGED, FAILED, CANCELLED)
    OPEN_STATES = frozenset(s for s, _ in STATUS_CHOICES) - frozenset(FINAL_STATES)
    TRANSITIONS = {
        "make_ready": (frozenset({DRAFT}), READY),
        "assign": (frozenset({READY}), ASSIGNED),
        "start": (frozenset({ASSIGNED}), WORKING),
        "submit": (frozenset({WORKING}), IN_REVIEW),
        "request_changes": (frozenset({IN_REVIEW, APPROVED, MERGING}), CHANGES_REQUESTED),
        "resume": (frozenset({CHANGES_REQUESTED}), WORKING),
        "approve": (frozenset({IN_REVIEW}), APPROVED),
        "enqueue_merge": (frozenset({APPROVED}), MERGING),
        "mark_merged": (frozenset({MERGING}), MERGED),
        "expire_lease": (frozenset(LEASED_STATES), READY),
        "fail": (OPEN_STATES, FAILED),
        "retry": (frozenset({FAILED}), READY),
        "cancel": (OPEN_STATES | {FAILED}, CANCELLED),
    }
    EVENT_PREFIX = "task"
    KINDS = ["feat", "fix", "chore", "docs", "refactor", "test"]

    key = models.CharField(max_length=20, unique=True, validators=[key_validator])
    wave = models.ForeignKey(Wave, on_delete=models.CASCADE, related_name="tasks")
    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="tasks")
    kind = models.CharField(max_length=16, choices=[(k, k) for k in KINDS], default="feat")
    title = models.CharField(max_length=200)
    spec = models.TextField(blank=True, help_text="Requirements and acceptance criteria")
    spec_version = models.PositiveIntegerField(default=1)
    declared_paths = models.JSONField(default=list, blank=True, help_text="Globs this task edits")
    read_only = models.BooleanField(
        default=False, help_text="The task reads the repository but changes no file"
    )
    # The ownership gate, worked out at submit: changed files outside the declared and
    # claimed paths, and files a planning decision gave to another task.
    ownership = models.JSONField(default=dict, blank=True)
    # Definition-of-done items a person ticked: {item: {"by", "at", "commit"}}; a tick
    # counts for the commit it was given on.
    dod_ticks = models.JSONField(default=dict, blank=True)
    # The merge gates as the worker last worked them out (the problems panel reads
    # these; the task page works them out afresh).
    gates = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=20, choices=STATUS_CHOICES, default=DRAFT)
    base_sha = models.CharField(max_length=40, blank=True)
    head_sha = models.CharField(max_length=40, blank=True)
    worktree_path = models.CharField(max_length=500, blank=True)
    # PROTECT: an agent holding a task's lease cannot be deleted out from under it.
    assignee = models.ForeignKey(
        "Agent", null=True, blank=True, on_delete=models.PROTECT, related_name="assigned_tasks"
    )
    attempt = models.PositiveIntegerField(default=0)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    lease_epoch = models.PositiveIntegerField(default=0)
    drafted_by = drafted_by_field()
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = TaskQuerySet.as_manager()

    class Meta:
        ordering = ["wave__number", "id"]
        constraints = [
            # One live lease per task, held by exactly its assignee: a leased
            # state needs both, and no other state may carry either.
            models.CheckConstraint(
                condition=(
                    Q(status__in=["assigned", "working"])
                    & Q(assignee__isnull=False)
                    & Q(lease_expires_at__isnull=False)
                )
                | (~Q(status__in=["assigned", "working"]) & Q(lease_expires_at__isnull=True)),
                name="task_lease_matches_status",
            ),
            models.CheckConstraint(condition=Q(spec_version__gte=1), name="task_spec_version"),
        ]

    def __str__(self) -> str:
        return f"{self.key} {self.title}"

    @property
    def branch(self) -> str:
        return f"{self.kind}/{self.key}"

    def _event_subjects(self) -> dict[str, Any]:
        return {"task": self, "wave_id": self.wave_id, "repository_id": self.repository_id}

    def lease_is_live(self, now=None) -> bool:
        now = now or timezone.now()
        return self.lease_expires_at is not None and self.lease_expires_at > now

    def make_ready(self, *, by: Any) -> Event:
        return self._transition("make_ready", by=by)

    def _fence(self, current: Task, by: Any, epoch: int | None, *, action: str) -> None:
        """An agent may act on a leased task only as its assignee, with the current
        epoch, while the lease is live: a paused-then-resumed agent cannot
        overwrite its successor's work."""
        if not _is_agent(by):
            return
        if current.assignee_id != by.pk:
            holder = f" (it is held by {current.assignee.name})" if current.assignee_id else ""
            raise TransitionError(
                f"{current.key} is not assigned to {by.name}{holder}; it cannot {action} it",
                code="not_assignee",
            )
        if epoch is not None and epoch != current.lease_epoch:
            raise TransitionError(
                f"{current.key}: lease epoch {epoch} is stale (now {current.lease_epoch})",
                code="stale_lease",
            )
        if not current.lease_is_live():
            raise TransitionError(
                f"{current.key}: the lease of {by.name} lapsed", code="lease_lapsed"
            )

    def assign(self, *, agent: Agent, by: Any = None, ttl: int | None = None) -> Event:
        ttl = ttl or settings.FLEET_LEASE_TTL

        def check(current: Task) -> None:
            if agent.role != "builder":
                raise TransitionError(f"{agent} is a {agent.role}, not a builder", code="role")
            if agent.status in ("stopped", "stale"):
                raise TransitionError(f"{agent} is {agent.status}", code="agent_unavailable")
            wave_status = Wave.objects.values_list("status", flat=True).get(pk=current.wave_id)
            if wave_status not in Wave.DISPATCHING:
                raise TransitionError(
                    f"{current.key}: its wave is {wave_status}, not approved or running",
                    code="wave_not_running",
                )

        return self._transition(
            "assign",
            by=by or agent,
            check=check,
            changes={
                "assignee": agent,
                "lease_expires_at": timezone.now() + timedelta(seconds=ttl),
                "lease_epoch": models.F("lease_epoch") + 1,
                "attempt": models.F("attempt") + 1,
            },
            payload={"agent": agent.name},
        )

    def start(self, *, by: Any, epoch: int | None = None) -> Event:
        return self._transition(
            "start", by=by, check=lambda current: self._fence(current, by, epoch, action="start")
        )

    def renew_lease(self, *, agent: Agent, epoch: int, ttl: int | None = None) -> None:
        """Extend the lease; a stale epoch (the lease was lost meanwhile) is refused."""
        ttl = ttl or settings.FLEET_LEASE_TTL
        with transaction.atomic():
            current = Task.objects.select_for_update(no_key=True).get(pk=self.pk)
            if (
                current.status not in self.LEASED_STATES
                or current.assignee_id != agent.pk
                or current.lease_epoch != epoch
            ):
                raise TransitionError(
                    f"{self.key}: lease epoch {epoch} is no longer held by {agent.name}",
                    code="stale_lease",
                )
            current.lease_expires_at = timezone.now() + timedelta(seconds=ttl)
            current.save(update_fields=["lease_expires_at"])
        self.lease_expires_at = current.lease_expires_at

    def submit(
        self, *, commit: str, by: Any, epoch: int | None = None, ownership: dict | None = None
    ) -> Event:
        changes: dict[str, Any] = {"head_sha": commit, "lease_expires_at": None}
        payload: dict[str, Any] = {"commit": commit}
        if ownership is not None:
            changes["ownership"] = ownership
            payload["ownership_ok"] = ownership.get("ok")
        return self._transition(
            "submit",
            by=by,
            check=lambda current: self._fence(current, by, epoch, action="submit"),
            changes=changes,
            payload=payload,
        )

    def request_changes(self, *, by: Any, reason: str = "") -> Event:
        return self._transition("request_changes", by=by, payload={"reason": reason})

    def resume(self, *, by: Any, ttl: int | None = None) -> Event:
        ttl = ttl or settings.FLEET_LEASE_TTL

        def check(current: Task) -> None:
            if current.assignee_id is None:
                raise TransitionError(f"{self.key} has no builder to resume it", code="no_assignee")

        return self._transition(
            "resume",
            by=by,
            check=check,
            changes={
                "lease_expires_at": timezone.now() + timedelta(seconds=ttl),
                "lease_epoch": models.F("lease_epoch") + 1,
            },
        )

    def _let_go(self, action: str, *, prior: dict | None = None, **kwargs: Any) -> Event:
        """A transition that takes the task out of its holders' hands. The holders are
        locked before the task, the heartbeat batch's order (agents, then tasks), so
        the worker's lease expiry cannot deadlock with its holder's heartbeat."""
        from fleet.models.agents import Agent

        assignee = Task.objects.filter(pk=self.pk).order_by().values("assignee_id")[:1]
        holders = Agent.objects.filter(Q(current_task_id=self.pk) | Q(pk=models.Subquery(assignee)))
        with transaction.atomic():
            list(holders.select_for_update(no_key=True).order_by("pk").values_list("pk", flat=True))
            return self._transition(
                action,
                after=lambda current: {**(prior or {}), **_release_holders(current)},
                **kwargs,
            )

    def approve(self, *, by: Any) -> Event:
        return self._transition("approve", by=by)

    def enqueue_merge(self, *, by: Any) -> Event:
        return self._transition("enqueue_merge", by=by)

    def mark_merged(self, *, by: Any = None, commit: str = "") -> Event:
        return self._let_go("mark_merged", by=by, payload={"commit": commit})

    def expire_lease(self, *, by: Any = None, now=None) -> Event:
        """Return a task whose lease lapsed to ``ready`` (branch and worktree kept)."""
        now = now or timezone.now()

        prior: dict[str, Any] = {}

        def check(current: Task) -> None:
            if current.lease_is_live(now):
                raise TransitionError(f"{self.key}: the lease is still live", code="lease_live")
            prior["agent"] = current.assignee.name if current.assignee_id else None

        return self._let_go(
            "expire_lease",
            by=by,
            check=check,
            changes={"assignee": None, "lease_expires_at": None},
            prior=prior,
        )

    def fail(self, *, by: Any, reason: str) -> Event:
        return self._let_go(
            "fail", by=by, changes={"lease_expires_at": None}, payload={"reason": reason}
        )

    def retry(self, *, by: Any) -> Event:
        """A failed task goes back to ``ready`` for another attempt (branch kept)."""
        return self._transition("retry", by=by, changes={"assignee": None})

    def cancel(self, *, by: Any, reason: str = "") -> Event:
        return self._let_go(
            "cancel", by=by, changes={"lease_expires_at": None}, payload={"reason": reason}
        )


def _is_agent(obj: Any) -> bool:
    from fleet.models.agents import Agent

    return isinstance(obj, Agent)


def _release_holders(task: Task) -> dict[str, Any]:
    """Agents whose current task this was let go of it (and of its file claims) in
    the same transaction: a task that left an agent's hands never stays on that
    agent's card."""
    from fleet.models.agents import Agent

    FileClaim.objects.filter(task_id=task.pk, released_at__isnull=True).update(
        released_at=timezone.now()
    )
    holders = Agent.objects.filter(current_task_id=task.pk)
    names = list(holders.values_list("name", flat=True))
    if not names:
        return {}
    holders.update(
        current_task=None,
        status=models.Case(
            models.When(status__in=[Agent.WORKING, Agent.REVIEWING], then=models.Value(Agent.IDLE)),
            default=models.F("status"),
        ),
        updated_at=timezone.now(),
    )
    return {"released": names}


# --- files ----------------------------------------------------------------


class FileClaimQuerySet(models.QuerySet):
    def live(self, now) -> FileClaimQuerySet:
        return self.filter(released_at__isnull=True, expires_at__gt=now)


class FileClaim(models.Model):
    WRITE, READ = "write", "read"

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="claims")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="claims")
    agent = models.ForeignKey("Agent", on_delete=models.CASCADE, related_name="claims")
    path = models.CharField(max_length=500)
    mode = models.CharField(max_length=8, choices=[(WRITE, WRITE), (READ, READ)], default=WRITE)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    released_at = models.DateTimeField(null=True, blank=True)

    objects = FileClaimQuerySet.as_manager()

    class Meta:
        ordering = ["path"]
        constraints = [
            # At most one unreleased write claim per path; an expired one is
            # released by whoever takes the path over, in the same transaction.
            models.UniqueConstraint(
                fields=["repository", "path"],
                condition=Q(released_at__isnull=True, mode="write"),
                name="claim_one_writer_per_path",
            ),
            models.CheckConstraint(
                condition=Q(expires_at__gt=models.F("created_at")), name="claim_expires_after"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.path} ({self.mode}) by {self.agent}"


class SharedFile(models.Model):
    OWNER, SEQUENCE, CONTRACT = "owner", "sequence", "contract"
    STRATEGY_CHOICES = [
        ("", "unresolved"),
        (OWNER, OWNER),
        (SEQUENCE, SEQUENCE),
        (CONTRACT, CONTRACT),
    ]

    wave = models.ForeignKey(Wave, on_delete=models.CASCADE, related_name="shared_files")
    # Paths are per repository: README.md in two repositories is not one file.
    repository = models.ForeignKey(
        Repository, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    path = models.CharField(max_length=500)
    tasks = models.ManyToManyField(Task, related_name="shared_files")
    strategy = models.CharField(max_length=16, choices=STRATEGY_CHOICES, blank=True)
    owner_task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="owned_shared_files"
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["path"]
        constraints = [
            models.UniqueConstraint(
                fields=["wave", "repository", "path"], name="shared_file_unique_path"
            ),
            models.CheckConstraint(
                condition=~Q(strategy__in=["owner", "contract"]) | Q(owner_task__isnull=False),
                name="shared_file_owner_needed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.path} in {self.wave}"
