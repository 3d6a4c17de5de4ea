"""HTML views for people, by area."""

from __future__ import annotations

from fleet.views.agents import (
    agent_detail,
    agent_kill,
    agent_list,
    agent_message,
    agent_restart,
    agent_resume,
    agent_revoke,
    agent_spawn,
    agent_stop,
)
from fleet.views.budget import budget_cap, budget_page, spend_csv
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
from fleet.views.runners import runner_list, runner_register, runner_revoke
from fleet.views.tasks import (
    merge_queue,
    repository_agent_permissions,
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
    "runner_revoke",
    "runner_register",
    "runner_list",
    "repository_agent_permissions",
    "agent_stop",
    "agent_restart",
    "agent_message",
    "agent_kill",
    "activity",
    "agent_detail",
    "agent_list",
    "agent_resume",
    "agent_revoke",
    "agent_spawn",
    "budget_cap",
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
