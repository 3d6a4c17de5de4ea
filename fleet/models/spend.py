"""Spend events and budgets."""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q
from django.utils import timezone

from fleet.models.agents import Agent, AgentSession
from fleet.models.work import Plan, Repository, Task, Wave

# --- spend ----------------------------------------------------------------


class SpendEvent(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="spend")
    session = models.ForeignKey(AgentSession, null=True, blank=True, on_delete=models.SET_NULL)
    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="spend"
    )
    model_name = models.CharField(max_length=100, blank=True)
    tokens_in = models.BigIntegerField(default=0)
    tokens_out = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("0"))
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(tokens_in__gte=0) & Q(tokens_out__gte=0) & Q(cost_usd__gte=0),
                name="spend_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.agent} ${self.cost_usd}"


TARGETS = ["plan", "wave", "repository", "agent", "task"]


def _one_target() -> Q:
    """A budget's scope names exactly its one target (none for the fleet)."""
    condition = Q(scope="fleet", **dict.fromkeys(TARGETS))
    for target in TARGETS:
        others = {t: None for t in TARGETS if t != target}
        condition |= Q(scope=target, **{f"{target}__isnull": False}, **others)
    return condition


class Checkpoint(models.Model):
    """The worktree of a task as it was when its agent rotated or went silent,
    uncommitted work included, kept as a git ref (never pruned while the task is
    open), so no work is lost between sessions."""

    task = models.ForeignKey(
        Task, null=True, on_delete=models.CASCADE, related_name="checkpoints"
    )  # none: the event was handled and there was no worktree to keep
    agent = models.ForeignKey(Agent, null=True, on_delete=models.SET_NULL, related_name="+")
    session = models.ForeignKey(
        AgentSession, null=True, on_delete=models.SET_NULL, related_name="checkpoints"
    )
    event = models.OneToOneField(
        "Event", null=True, on_delete=models.SET_NULL, related_name="+", help_text="its cause"
    )
    reason = models.CharField(max_length=16)  # rotated | stale
    ref = models.CharField(max_length=200)
    sha = models.CharField(max_length=40)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.ref} ({self.reason})"


class ModelPrice(models.Model):
    """What a model costs, for agents that report tokens but no cost."""

    model_name = models.CharField(max_length=100, unique=True)
    usd_per_mtok_in = models.DecimalField(
        max_digits=10, decimal_places=4, help_text="USD per million input tokens"
    )
    usd_per_mtok_out = models.DecimalField(
        max_digits=10, decimal_places=4, help_text="USD per million output tokens"
    )
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["model_name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(usd_per_mtok_in__gte=0) & Q(usd_per_mtok_out__gte=0),
                name="price_not_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_name}: ${self.usd_per_mtok_in}/${self.usd_per_mtok_out} per Mtok"


class Caps:
    """What a budget's caps say, for the model and for the heartbeat path's plain
    rows alike (both carry ``limit_usd``, ``spent_usd``, ``limit_tokens`` and
    ``spent_tokens``)."""

    __slots__ = ()

    @property
    def cap_reached(self) -> bool:
        return (self.limit_usd is not None and self.spent_usd >= self.limit_usd) or (
            self.limit_tokens is not None and self.spent_tokens >= self.limit_tokens
        )

    @property
    def fraction_used(self) -> float | None:
        """The larger share of its caps used (None: no cap)."""
        shares = []
        if self.limit_usd:
            shares.append(float(self.spent_usd / self.limit_usd))
        if self.limit_tokens:
            shares.append(self.spent_tokens / self.limit_tokens)
        return max(shares) if shares else None


class Budget(Caps, models.Model):
    SCOPES = ["fleet", "plan", "wave", "repository", "agent", "task"]

    scope = models.CharField(max_length=12, choices=[(s, s) for s in SCOPES])
    plan = models.ForeignKey(Plan, null=True, blank=True, on_delete=models.CASCADE)
    wave = models.ForeignKey(Wave, null=True, blank=True, on_delete=models.CASCADE)
    repository = models.ForeignKey(Repository, null=True, blank=True, on_delete=models.CASCADE)
    agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.CASCADE)
    task = models.ForeignKey(Task, null=True, blank=True, on_delete=models.CASCADE)
    limit_usd = models.DecimalField(max_digits=12, decimal_places=4, null=True, blank=True)
    limit_tokens = models.BigIntegerField(null=True, blank=True)
    spent_usd = models.DecimalField(max_digits=12, decimal_places=4, default=Decimal("0"))
    spent_tokens = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # The last line of defence: a stored total above its cap is impossible.
            models.CheckConstraint(
                condition=Q(spent_usd__gte=0)
                & Q(spent_tokens__gte=0)
                & (Q(limit_usd__isnull=True) | Q(limit_usd__gte=0))
                & (Q(limit_tokens__isnull=True) | Q(limit_tokens__gte=0)),
                name="budget_not_negative",
            ),
            # A cap lowered below what was already spent is clamped to the spent
            # amount by the code that sets it ("stop now"); the database still
            # refuses any stored total above its cap.
            models.CheckConstraint(
                condition=Q(limit_usd__isnull=True) | Q(spent_usd__lte=models.F("limit_usd")),
                name="budget_usd_within_cap",
            ),
            models.CheckConstraint(
                condition=Q(limit_tokens__isnull=True)
                | Q(spent_tokens__lte=models.F("limit_tokens")),
                name="budget_tokens_within_cap",
            ),
            models.CheckConstraint(
                condition=_one_target(),
                name="budget_scope_matches_target",
            ),
            models.UniqueConstraint(
                fields=["scope"], condition=Q(scope="fleet"), name="budget_one_fleet"
            ),
            models.UniqueConstraint(fields=["plan"], name="budget_one_per_plan"),
            models.UniqueConstraint(fields=["wave"], name="budget_one_per_wave"),
            models.UniqueConstraint(fields=["repository"], name="budget_one_per_repository"),
            models.UniqueConstraint(fields=["agent"], name="budget_one_per_agent"),
            models.UniqueConstraint(fields=["task"], name="budget_one_per_task"),
        ]

    def __str__(self) -> str:
        target = self.plan or self.wave or self.repository or self.agent or self.task or "fleet"
        return f"budget {self.scope}: {target}"
