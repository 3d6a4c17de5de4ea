"""Runners and the agent CLIs they keep running.

A ``Runner`` is a supervisor process on a host (``python -m fleet.runner``) with its own
token. A ``Runtime`` is what Fleet wants of one agent's CLI (harness, model, which
runner, the session generation) and what that runner last saw of it (state, exit
code, the screen's last lines). Desired state lives here; the runner reconciles.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from fleet.models.agents import Agent, hash_token
from fleet.models.base import Event
from fleet.models.work import slug_validator
from fleet.runner.harnesses import CHOICES as HARNESS_CHOICES


class RunnerQuerySet(models.QuerySet):
    def by_token(self, token: str) -> RunnerQuerySet:
        return self.filter(token_hash=hash_token(token))

    def online(self, now=None) -> RunnerQuerySet:
        cutoff = (now or timezone.now()) - timedelta(seconds=settings.FLEET_RUNNER_SILENT)
        return self.filter(token_revoked_at__isnull=True, last_seen_at__gte=cutoff)


class Runner(models.Model):
    name = models.CharField(max_length=60, unique=True, validators=[slug_validator])
    token_hash = models.CharField(max_length=64, unique=True, null=True, blank=True)
    token_revoked_at = models.DateTimeField(null=True, blank=True)
    host = models.CharField(max_length=200, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    version = models.CharField(max_length=60, blank=True)
    tmux = models.CharField(max_length=200, blank=True, help_text="tmux version, or why none")
    error = models.CharField(max_length=500, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = RunnerQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def issue_token(self, *, by: Any = None) -> str:
        """A new token; only its hash is kept. Shown once."""
        token = "flr_" + secrets.token_urlsafe(32)
        with transaction.atomic():
            self.token_hash, self.token_revoked_at = hash_token(token), None
            self.save(update_fields=["token_hash", "token_revoked_at"])
            Event.objects.record("runner.token_issued", by=by, payload={"runner": self.name})
        return token

    def revoke_token(self, *, by: Any) -> None:
        with transaction.atomic():
            self.token_revoked_at = timezone.now()
            self.save(update_fields=["token_revoked_at"])
            Event.objects.record("runner.token_revoked", by=by, payload={"runner": self.name})

    def state(self, now=None) -> str:
        """online, silent (it reported, then stopped), revoked, or never (seen)."""
        if self.token_revoked_at is not None:
            return "revoked"
        if self.last_seen_at is None:
            return "never"
        age = ((now or timezone.now()) - self.last_seen_at).total_seconds()
        return "online" if age <= settings.FLEET_RUNNER_SILENT else "silent"

    def attach_prefix(self) -> str:
        socket = settings.FLEET_TMUX_SOCKET
        return f"tmux -L {socket}" if socket else "tmux"


class Runtime(models.Model):
    """One agent's CLI under a runner: what Fleet wants and what the runner saw."""

    # Observed states, as the runner reports them ("pending": no runner has it yet).
    PENDING, STARTING, BOOTING, READY, BUSY = "pending", "starting", "booting", "ready", "busy"
    EXITED, ENDED, FAILED = "exited", "ended", "failed"
    STATES = [PENDING, STARTING, BOOTING, READY, BUSY, EXITED, ENDED, FAILED]
    ALIVE = frozenset({STARTING, BOOTING, READY, BUSY})

    agent = models.OneToOneField(Agent, on_delete=models.CASCADE, related_name="runtime")
    harness = models.CharField(max_length=16, choices=HARNESS_CHOICES)
    model = models.CharField(max_length=100, blank=True)
    command = models.CharField(max_length=500, blank=True, help_text="the command harness's")
    directory = models.CharField(max_length=500)
    runner = models.ForeignKey(
        Runner, null=True, blank=True, on_delete=models.SET_NULL, related_name="runtimes"
    )
    # Desired: a new generation means a fresh CLI session (restart, rotation, review).
    generation = models.PositiveIntegerField(default=1)
    kill = models.BooleanField(default=False, help_text="end at once, without the grace")
    # Observed
    state = models.CharField(max_length=16, default=PENDING, choices=[(s, s) for s in STATES])
    observed_generation = models.PositiveIntegerField(default=0)
    exit_code = models.IntegerField(null=True, blank=True)
    restarts = models.PositiveSmallIntegerField(default=0, help_text="crashes restarted in a row")
    error = models.CharField(max_length=500, blank=True)
    screen = models.TextField(blank=True)
    screen_at = models.DateTimeField(null=True, blank=True)
    reported_at = models.DateTimeField(null=True, blank=True)
    nudged_through = models.BigIntegerField(default=0, help_text="last message id nudged about")
    nudged_at = models.DateTimeField(null=True, blank=True)
    rotated_session = models.BigIntegerField(null=True, blank=True, help_text="session rotated")
    review_task_id = models.BigIntegerField(null=True, blank=True, help_text="task in review")
    reviewed_through = models.BigIntegerField(
        default=0, help_text="the last closed review a fresh session followed"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["agent__name"]

    def __str__(self) -> str:
        return f"{self.agent} ({self.harness})"

    @property
    def session_name(self) -> str:
        return f"fleet-{self.agent.name}"

    def wants_running(self) -> bool:
        return self.agent.status != Agent.STOPPED

    def shown_state(self, now=None) -> str:
        """What a person should read: ``unknown`` while its runner is silent (the
        process may still run: it is never reassigned for that)."""
        if self.runner is not None and self.runner.state(now) in ("silent", "revoked"):
            return "unknown"
        return self.state
