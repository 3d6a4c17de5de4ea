"""Request and response shapes of the agent API (pydantic through django-ninja)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from ninja import Field, Schema
from pydantic import AfterValidator, WithJsonSchema, model_validator

from fleet.git import paths as repo_paths

SHA = r"^[0-9a-f]{7,40}$"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Text from agents: no NUL characters (PostgreSQL cannot store them in text columns).
Text = Annotated[str, AfterValidator(_no_nul)]


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


class HeartbeatIn(Schema):
    context_pct: int | None = Field(
        None,
        ge=0,
        le=100,
        description="share of the context window used; without it, Fleet estimates it from"
        " tool_calls, files_read and the session's age",
    )
    tool_calls: int | None = Field(None, ge=0, le=1_000_000, description="this session so far")
    files_read: int | None = Field(None, ge=0, le=1_000_000, description="this session so far")

    @model_validator(mode="wrap")
    @classmethod
    def an_object(cls, data: Any, handler: Any) -> Any:
        # Every field is optional, so anything but a JSON object would pass as "{}".
        raw = getattr(data, "_obj", data)
        if not isinstance(raw, dict | cls):
            raise ValueError("a heartbeat is a JSON object")
        return handler(data)

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


class SpendIn(Schema):
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


def path_type(validate: Callable[[str], str] | None, *, pattern: str, description: str) -> Any:
    """A string field that ``validate`` canonicalizes (None: someone else does, as the
    planner's form does declared paths), published with ``pattern``."""
    # The schema states the canonicalizer's rules (a generated client is never refused
    # for a shape the schema allows); the canonicalizer, not the pattern, is what runs.
    schema = {
        "type": "string",
        "minLength": 1,
        "maxLength": repo_paths.MAX_LENGTH,
        "pattern": pattern,
        "description": description,
    }
    if validate is None:
        return Annotated[str, WithJsonSchema(schema)]
    return Annotated[str, AfterValidator(validate), WithJsonSchema(schema)]


def _one_file(path: str) -> str:
    return repo_paths.canonical(path)


def _file_or_glob(path: str) -> str:
    return repo_paths.canonical(path, glob=True)


# Repository paths as git names them, in their one spelling (``./a//b`` is stored and
# compared as ``a/b``): relative, no ``..``, nothing in ``.git``, no control
# characters or backslashes. What the pattern matches comes back unchanged, and
# nothing else does.
FilePath = path_type(
    _one_file,
    pattern=repo_paths.FILE_PATTERN,
    description="one file, relative to the repository root, as git names it (no glob,"
    " no directory), in its one spelling: a/b.py (the server also takes ./a//b.py for it)",
)
FileOrGlobPath = path_type(
    _file_or_glob,
    pattern=repo_paths.GLOB_PATTERN,
    description="a file, a directory (ending in /) or a glob, relative to the repository"
    " root, in its one spelling: a/b.py (the server also takes ./a//b.py for it)",
)


class ClaimIn(Schema):
    task: Text = Field(..., max_length=20)
    # One file each: a glob or a directory would slip past the conflict check (exact
    # paths) and the ownership gate.
    paths: list[FilePath] = Field(..., min_length=1, max_length=100)
    mode: Literal["write", "read"] = "write"


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
    url: Text = Field("", max_length=200, pattern=r"^(https?://\S+)?$")
    log: Text = Field("", max_length=100_000)


class FindingIn(Schema):
    path: FileOrGlobPath
    line_start: int | None = Field(None, ge=1, le=10_000_000)
    line_end: int | None = Field(None, ge=1, le=10_000_000)
    severity: Literal["info", "minor", "major", "critical"]
    title: Text = Field(..., min_length=1, max_length=200)
    body: Text = Field("", max_length=20_000)
    suggested_fix: Text = Field("", max_length=20_000)

    @model_validator(mode="after")
    def line_range(self) -> FindingIn:
        if self.line_end is not None and (
            self.line_start is None or self.line_end < self.line_start
        ):
            raise ValueError("line_end needs a line_start at or before it")
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
