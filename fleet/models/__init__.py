"""Fleet's domain model.

Behaviour on one row lives on the model (state transitions are methods);
behaviour on many rows lives on QuerySets exposed with ``as_manager()``.
Every transition checks, changes, saves with ``update_fields`` and appends an
``Event`` inside one transaction; an illegal one raises ``TransitionError`` and
changes nothing.
"""

from fleet.models.agents import (
    Agent,
    AgentSession,
    JournalEntry,
    Learning,
    Message,
    Replay,
    hash_token,
)
from fleet.models.base import Event, StateMachine, TransitionError
from fleet.models.review import (
    CheckRun,
    FileViewed,
    Finding,
    MergeBatch,
    MergeRequest,
    Review,
    ReviewComment,
    ReviewPrefs,
    WebhookDelivery,
)
from fleet.models.runtime import Runner, Runtime
from fleet.models.spend import Budget, Caps, Checkpoint, ModelPrice, SpendEvent
from fleet.models.work import FileClaim, Plan, Repository, SharedFile, Task, Wave, slug_validator

__all__ = [
    "Agent",
    "AgentSession",
    "Budget",
    "Caps",
    "CheckRun",
    "Checkpoint",
    "Event",
    "FileClaim",
    "FileViewed",
    "Finding",
    "JournalEntry",
    "Learning",
    "Message",
    "MergeBatch",
    "MergeRequest",
    "ModelPrice",
    "Replay",
    "Runner",
    "Runtime",
    "Plan",
    "Repository",
    "Review",
    "ReviewComment",
    "ReviewPrefs",
    "SharedFile",
    "SpendEvent",
    "StateMachine",
    "Task",
    "TransitionError",
    "Wave",
    "WebhookDelivery",
    "hash_token",
    "slug_validator",
]
