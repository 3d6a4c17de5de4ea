"""The runners' API: ``POST runner/sync`` with a runner token (not an agent's).

A runner reports the tmux sessions it holds and gets back the agents it should
run. Repeating a sync is always safe: the answer depends on the database only.
"""

from __future__ import annotations

from typing import Annotated, Literal

from django.http import HttpRequest
from ninja import Field, Router, Schema
from ninja.errors import AuthenticationError
from ninja.security import HttpBearer

from fleet import runtime
from fleet.api.auth import bearer_token
from fleet.api.schemas import ErrorOut, ObjectIn, Text
from fleet.models import Runner


class RunnerToken(HttpBearer):
    """``Authorization: Bearer <runner token>`` (a ``flr_`` token from the Runners page
    or ``manage.py fleet_runner --register``); never logged."""

    def __call__(self, request: HttpRequest) -> Runner | None:
        token = bearer_token(request.headers.get(self.header, ""))
        return None if token is None else self.authenticate(request, token)

    def authenticate(self, request: HttpRequest, token: str) -> Runner | None:
        runner = Runner.objects.by_token(token).first()
        if runner is None:
            return None
        if runner.token_revoked_at is not None:
            raise AuthenticationError(message=f"the token of runner {runner.name} was revoked")
        return runner


INT_MAX = 2**31 - 1  # the columns' range (PostgreSQL's integer)
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=60)]
Short = Annotated[Text, Field(max_length=200)]


class SessionIn(Schema):
    agent: Name
    generation: int = Field(ge=0, le=INT_MAX)
    state: Literal["starting", "booting", "ready", "busy", "exited", "failed"]
    exit_code: int | None = Field(None, ge=-INT_MAX - 1, le=INT_MAX)
    screen: Annotated[Text, Field(max_length=64_000)] | None = Field(
        None, description="the pane's last lines; null when unchanged since the last sync"
    )
    nudged_through: int = Field(0, ge=0, le=2**63 - 1)
    alive_seconds: float = Field(0, ge=0, le=10**9)
    error: Annotated[Text, Field(max_length=500)] = ""


class EndedIn(Schema):
    session: Short
    reason: Short


class SyncIn(ObjectIn):
    host: Short = ""
    pid: int = Field(0, ge=0, le=INT_MAX)
    version: Annotated[Text, Field(max_length=60)] = ""
    tmux: Short = Field("", description="tmux's version; empty with an error when it has none")
    error: Annotated[Text, Field(max_length=500)] = ""
    sessions: list[SessionIn] = Field(default_factory=list, max_length=1000)
    ended: list[EndedIn] = Field(default_factory=list, max_length=1000)


class NudgeOut(Schema):
    through: int
    text: str


class DesiredOut(Schema):
    name: str
    role: str
    harness: str
    model: str
    command: str
    directory: str
    permissions: str
    generation: int
    run: bool
    kill: bool
    patience: float
    prompt: str
    nudge: NudgeOut | None


class SyncOut(Schema):
    runner: str
    interval: float
    agents: list[DesiredOut]


router = Router(auth=RunnerToken(), tags=["runners"])
ERRORS = dict.fromkeys((400, 401, 409, 413, 422, 503), ErrorOut)


@router.post(
    "runner/sync",
    response={200: SyncOut, **ERRORS},
    summary="A runner reports its sessions and gets what should run",
)
def runner_sync(request: HttpRequest, payload: SyncIn):
    """Runners only. Each session is one agent's CLI in tmux; ``ended`` lists the
    sessions the runner ended because no agent wants them. The answer is every
    agent this runner should hold, with the session generation it should run."""
    sessions = [runtime.Report(**{**s.dict(), "state": s.state}) for s in payload.sessions]
    return runtime.sync(
        request.auth,
        host=payload.host,
        pid=payload.pid,
        version=payload.version,
        tmux=payload.tmux,
        error=payload.error,
        sessions=sessions,
        ended=[e.dict() for e in payload.ended],
    )
