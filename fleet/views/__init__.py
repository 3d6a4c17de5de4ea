"""HTML views for people, by area."""

from __future__ import annotations

from fleet.views.agents import agent_detail, agent_list, agent_resume, agent_revoke, agent_spawn
from fleet.views.budget import budget_page, spend_csv
from fleet.views.fleet import activity, healthz, navigation, overview
from fleet.views.plans import (
    plan_detail,
    plan_list,
    task_edit,
    task_move,
    wave_add_task,
    wave_approve,
    wave_budget,
    wave_decide,
    wave_detail,
)
from fleet.views.reviews import finding_resolve, finding_verdict, review_queue
from fleet.views.tasks import (
    merge_queue,
    repository_auto_merge,
    repository_detail,
    repository_list,
    task_detail,
    task_dod_tick,
    task_queue_merge,
    task_rebase,
    task_rereview,
    wave_auto_merge,
)

__all__ = [
    "activity",
    "agent_detail",
    "agent_list",
    "agent_resume",
    "agent_revoke",
    "agent_spawn",
    "budget_page",
    "finding_resolve",
    "finding_verdict",
    "healthz",
    "merge_queue",
    "navigation",
    "overview",
    "plan_detail",
    "plan_list",
    "repository_auto_merge",
    "repository_detail",
    "repository_list",
    "review_queue",
    "spend_csv",
    "task_detail",
    "task_edit",
    "task_move",
    "task_dod_tick",
    "task_queue_merge",
    "task_rereview",
    "task_rebase",
    "wave_add_task",
    "wave_approve",
    "wave_auto_merge",
    "wave_budget",
    "wave_decide",
    "wave_detail",
]
