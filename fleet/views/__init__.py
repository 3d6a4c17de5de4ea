"""HTML views for people, by area."""

from __future__ import annotations

from fleet.views.agents import agent_list, agent_revoke, agent_spawn
from fleet.views.fleet import activity, healthz, navigation, overview
from fleet.views.tasks import repository_list, task_detail, task_queue_merge, task_rebase

__all__ = [
    "activity",
    "agent_list",
    "agent_revoke",
    "agent_spawn",
    "healthz",
    "navigation",
    "overview",
    "repository_list",
    "task_detail",
    "task_queue_merge",
    "task_rebase",
]
