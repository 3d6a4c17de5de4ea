from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path

from fleet import (
    converters,  # noqa: F401 - registers the <id:…> path converter
    views,
)
from fleet.api import api
from fleet.api.errors import api_not_found, json_method_errors
from fleet.api.idempotency import replayable
from fleet.views.login import LoginView, throttled

# The admin's sign-in is throttled like Fleet's own.
admin.site.login = throttled(admin.site.login)

urlpatterns = [
    path("", views.overview, name="fleet-overview"),
    path("activity/", views.activity, name="fleet-activity"),
    # agents/
    path(
        "agents/",
        include(
            [
                path("", views.agent_list, name="fleet-agents"),
                path("spawn/", views.agent_spawn, name="fleet-agent-spawn"),
                path("<slug:name>/", views.agent_detail, name="fleet-agent"),
                path("<slug:name>/revoke/", views.agent_revoke, name="fleet-agent-revoke"),
                path("<slug:name>/resume/", views.agent_resume, name="fleet-agent-resume"),
                path("<slug:name>/stop/", views.agent_stop, name="fleet-agent-stop"),
                path("<slug:name>/kill/", views.agent_kill, name="fleet-agent-kill"),
                path("<slug:name>/restart/", views.agent_restart, name="fleet-agent-restart"),
                path("<slug:name>/message/", views.agent_message, name="fleet-agent-message"),
            ]
        ),
    ),
    # plans/
    path(
        "plans/",
        include(
            [
                path("", views.plan_list, name="fleet-plans"),
                path("<slug:slug>/", views.plan_detail, name="fleet-plan"),
                path(
                    "<slug:slug>/waves/<id:number>/",
                    include(
                        [
                            path("", views.wave_detail, name="fleet-wave"),
                            path("tasks/", views.wave_add_task, name="fleet-wave-add-task"),
                            path(
                                "shared/<id:shared_id>/",
                                views.wave_decide,
                                name="fleet-wave-decide",
                            ),
                            path("budget/", views.wave_budget, name="fleet-wave-budget"),
                            path("approve/", views.wave_approve, name="fleet-wave-approve"),
                            path(
                                "auto-merge/", views.wave_auto_merge, name="fleet-wave-auto-merge"
                            ),
                        ]
                    ),
                ),
            ]
        ),
    ),
    # tasks/
    path(
        "tasks/<str:key>/",
        include(
            [
                path("", views.task_detail, name="fleet-task"),
                path("edit/", views.task_edit, name="fleet-task-edit"),
                path("move/", views.task_move, name="fleet-task-move"),
                path("rebase/", views.task_rebase, name="fleet-task-rebase"),
                path("merge/", views.task_queue_merge, name="fleet-task-merge"),
                path("rereview/", views.task_rereview, name="fleet-task-rereview"),
                path("dod/", views.task_dod_tick, name="fleet-task-dod"),
                # the review workspace
                path("file/", views.task_file, name="fleet-task-file"),
                path("viewed/", views.task_viewed, name="fleet-task-viewed"),
                path("diff-view/", views.task_diff_view, name="fleet-task-diff-view"),
                path("comments/", views.task_comment, name="fleet-task-comment"),
                path(
                    "comments/<id:comment_id>/delete/",
                    views.task_comment_delete,
                    name="fleet-task-comment-delete",
                ),
                path(
                    "comments/<id:comment_id>/resolve/",
                    views.task_comment_resolve,
                    name="fleet-task-comment-resolve",
                ),
                path(
                    "request-changes/",
                    views.task_request_changes,
                    name="fleet-task-request-changes",
                ),
            ]
        ),
    ),
    # runners/
    path(
        "runners/",
        include(
            [
                path("", views.runner_list, name="fleet-runners"),
                path("register/", views.runner_register, name="fleet-runner-register"),
                path("<slug:name>/revoke/", views.runner_revoke, name="fleet-runner-revoke"),
            ]
        ),
    ),
    path("repositories/", views.repository_list, name="fleet-repositories"),
    path("repositories/<slug:slug>/", views.repository_detail, name="fleet-repository"),
    path(
        "repositories/<slug:slug>/agent-permissions/",
        views.repository_agent_permissions,
        name="fleet-repository-agent-permissions",
    ),
    path(
        "repositories/<slug:slug>/auto-merge/",
        views.repository_auto_merge,
        name="fleet-repository-auto-merge",
    ),
    path(
        "repositories/<slug:slug>/merge-batch/",
        views.repository_merge_batch,
        name="fleet-repository-merge-batch",
    ),
    path("merges/", views.merge_queue, name="fleet-merges"),
    path("budget/", views.budget_page, name="fleet-budget"),
    path("budget/spend.csv", views.spend_csv, name="fleet-spend-csv"),
    path("budget/caps/", views.budget_cap, name="fleet-budget-cap"),
    path("reviews/", views.review_queue, name="fleet-reviews"),
    path("findings/<id:finding_id>/verdict/", views.finding_verdict, name="fleet-finding-verdict"),
    path("findings/<id:finding_id>/resolve/", views.finding_resolve, name="fleet-finding-resolve"),
    path("healthz", views.healthz, name="fleet-healthz"),
    # accounts/
    path(
        "accounts/",
        include(
            [
                path("login/", LoginView.as_view(), name="fleet-login"),
                path("logout/", auth_views.LogoutView.as_view(), name="fleet-logout"),
            ]
        ),
    ),
    path("api/v1/", replayable(json_method_errors(api.urls))),
    # Anything else under the API (an unknown route, an id that is not a number) is
    # the API's JSON 404, not a page.
    re_path(r"^api/", api_not_found),
    path("admin/", admin.site.urls),
]

if settings.FLEET_BENCH:
    from fleet.bench.views import ping

    urlpatterns.append(path("_bench/ping", ping, name="fleet-bench-ping"))
