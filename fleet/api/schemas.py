"""Request and response shapes of the agent API (pydantic through django-ninja)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Field, Path, Schema
from pydantic import AfterValidator, field_validator, model_validator

from fleet.converters import MAX_ID

SHA = r"^[0-9a-f]{7,40}$"

# An id in a path: what the ``id`` converter matches (a larger number is a 404).
Id = Annotated[int, Path(ge=0, le=MAX_ID)]


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


NO_NUL = r"^[^\x00]*$"
# Some non-blank character, and no NUL (Django's forms strip and require a value).
NOT_BLANK = r"^[^\x00]*[^\s\x00][^\x00]*$"


class _SaysNoNul:
    """States the rule in the OpenAPI schema too (where the field has no pattern of
    its own), so a client generated from the schema never sends a NUL."""

    def __get_pydantic_json_schema__(self, core_schema, handler):
        schema = handler(core_schema)
        if schema.get("type") == "string":
            schema.setdefault("pattern", NO_NUL)
        return schema


# Text from agents: no NUL characters (PostgreSQL cannot store them in text columns).
Text = Annotated[str, AfterValidator(_no_nul), _SaysNoNul()]


class ErrorOut(Schema):
    error: str
    detail: str | list | dict


class AgentOut(Schema):
    name: str
    role: str
    status: str
    capabilities: list[str]
    repository: str | None = Field(None, alias="repository.slug")
    context_pct: int


class TaskOut(Schema):
    key: str
    kind: str
    title: str
    status: str
    spec: str
    spec_version: int
    repository: str = Field(..., alias="repository.slug")
    branch: str
    base_sha: str
    head_sha: str
    worktree_path: str
    declared_paths: list[str]
    attempt: int
    lease_epoch: int
    lease_expires_at: datetime | None


class JournalOut(Schema):
    kind: str
    body: str
    task_key: str | None
    created_at: datetime


class MessageOut(Schema):
    id: int
    subject: str
    body: str
    task: str | None = Field(None, alias="task.key")
    created_at: datetime
    acked_at: datetime | None


class LearningOut(Schema):
    id: int
    title: str
    body: str
    tags: str
    repository: str | None = Field(None, alias="repository.slug")


class BootOut(Schema):
    agent: AgentOut
    session_id: int
    task: TaskOut | None
    journal: list[JournalOut]
    inbox: list[MessageOut]
    learnings: list[LearningOut]
    budget_left_usd: float | None
    digest: dict[str, list[str]] = Field(
        default_factory=dict,
        description="the shadow journal of the task held (else of the agent), newest first:"
        " what was done, learned and is next — a rotated session resumes from it",
    )


class ObjectIn(Schema):
    """A body whose fields are all optional: anything but a JSON object (a list, a
    string, a number, null) would otherwise pass as ``{}``."""

    @model_validator(mode="wrap")
    @classmethod
    def an_object(cls, data: Any, handler: Any) -> Any:
        raw = getattr(data, "_obj", data)
        if not isinstance(raw, dict | cls):
            raise ValueError("the body must be a JSON object")
        return handler(data)


class HeartbeatIn(ObjectIn):
    context_pct: int | None = Field(
        None,
        ge=0,
        le=100,
        description="share of the context window used; without it, Fleet estimates it from"
        " tool_calls, files_read and the session's age",
    )
    tool_calls: int | None = Field(None, ge=0, le=1_000_000, description="this session so far")
    files_read: int | None = Field(None, ge=0, le=1_000_000, description="this session so far")

    status_line: Text = Field("", max_length=200)
    tokens_in: int = Field(0, ge=0, le=1_000_000_000)
    tokens_out: int = Field(0, ge=0, le=1_000_000_000)
    cost_usd: float = Field(0, ge=0, le=100_000, allow_inf_nan=False)
    model: Text = Field("", max_length=100)
    epoch: int | None = Field(
        None, ge=0, le=2**31, description="the lease epoch the agent believes it holds"
    )


class HeartbeatOut(Schema):
    status: str
    rotate: bool = Field(..., description="context past the rotation line: journal and restart")
    stop: bool = Field(..., description="stop now (stopped by a person or out of budget)")
    inbox: int = Field(..., description="unread messages")
    lease_expires_at: datetime | None
    epoch: int | None
    budget_left_usd: float | None
    context_pct: int = Field(..., description="context use as Fleet has it (reported or estimated)")
    rotate_at_pct: int = Field(..., description="the rotation line of the agent's repository")


class SpendIn(ObjectIn):
    tokens_in: int = Field(0, ge=0, le=1_000_000_000)
    tokens_out: int = Field(0, ge=0, le=1_000_000_000)
    cost_usd: float = Field(
        0, ge=0, le=100_000, allow_inf_nan=False, description="0: priced from the model"
    )
    model: Text = Field("", max_length=100)


class WorkOut(Schema):
    kind: Literal["task", "review", "none"]
    task: TaskOut | None = None
    review_id: int | None = None


class SubmitIn(Schema):
    commit: Text = Field(..., pattern=SHA)
    epoch: int = Field(..., ge=0, le=2**31)


class SubmitOut(Schema):
    task: str
    status: str
    review_id: int


def relative_path(path: str) -> str:
    """A path inside the repository, as git names it: never absolute, never climbing
    out with "..", no NUL or backslash (no API input reaches outside a worktree)."""
    parts = path.split("/")
    if (
        not path
        or len(path) > 500
        or path.startswith("/")
        or ".." in parts
        or "\x00" in path
        or "\\" in path
    ):
        raise ValueError(f"not a relative repository path: {path!r}")
    return path


class ClaimIn(Schema):
    task: Text = Field(..., max_length=20)
    paths: list[str] = Field(..., min_length=1, max_length=100)
    mode: Literal["write", "read"] = "write"

    @field_validator("paths")
    @classmethod
    def relative_paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            relative_path(path)
            if path.endswith("/") or any(c in path for c in "*?["):
                # A claim is one file: a glob or a directory would slip past the
                # conflict check (exact paths) and the ownership gate.
                raise ValueError(f"claim files one by one, not a glob or directory: {path!r}")
        return paths


class ClaimOut(Schema):
    id: int
    path: str
    mode: str
    task: str = Field(..., alias="task.key")
    expires_at: datetime
    released_at: datetime | None


class JournalIn(Schema):
    kind: Literal["done", "learned", "next", "note"]
    body: Text = Field(..., min_length=1, max_length=20_000)
    task: Text | None = Field(None, max_length=20)


class CreatedOut(Schema):
    id: int


class LearningIn(Schema):
    title: Text = Field(..., min_length=1, max_length=200)
    body: Text = Field(..., min_length=1, max_length=20_000)
    tags: Text = Field("", max_length=200)


class CheckIn(Schema):
    name: Text = Field(..., min_length=1, max_length=100)
    commit: Text = Field(..., pattern=SHA)
    status: Literal["pending", "running", "passed", "failed", "error"]
    task: Text | None = Field(None, max_length=20)
    url: Text = Field("", max_length=200, pattern=r"^(https?://[^\s\x00]+)?$")
    log: Text = Field("", max_length=100_000)


class FindingIn(Schema):
    path: Text = Field(..., min_length=1, max_length=500)
    line_start: int | None = Field(None, ge=1, le=10_000_000)
    line_end: int | None = Field(
        None,
        ge=1,
        le=10_000_000,
        description="the range's last line; alone, the one line; before line_start, the"
        " range is read the other way round",
    )
    severity: Literal["info", "minor", "major", "critical"]
    title: Text = Field(..., min_length=1, max_length=200)
    body: Text = Field("", max_length=20_000)
    suggested_fix: Text = Field("", max_length=20_000)

    @field_validator("path")
    @classmethod
    def in_the_repository(cls, path: str) -> str:
        return relative_path(path)

    @model_validator(mode="after")
    def line_range(self) -> FindingIn:
        # Every pair of lines is a range (the schema cannot say "end after start", so
        # the server refuses none): an end alone is that line, a reversed one turned.
        if self.line_end is not None:
            if self.line_start is None:
                self.line_start = self.line_end
            elif self.line_end < self.line_start:
                self.line_start, self.line_end = self.line_end, self.line_start
        return self


class FindingsIn(Schema):
    findings: list[FindingIn] = Field(..., max_length=200)


class AcceptedFindingOut(Schema):
    id: int
    path: str
    line_start: int | None
    line_end: int | None
    severity: str
    title: str
    body: str
    suggested_fix: str
    commit_sha: str = Field(..., description="the commit it was raised on")


class ReviewOut(Schema):
    id: int
    status: str
    commit_sha: str
    task: TaskOut
    diff: str
    changed_files: list[str]
    accepted_findings: list[AcceptedFindingOut] = Field(
        default_factory=list,
        description="a re-review's: findings people accepted earlier and not yet resolved; "
        "closing the re-review resolves them, so raise again any that is not fixed",
    )
