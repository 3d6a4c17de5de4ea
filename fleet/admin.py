"""Django admin for every model: filters, search, and audit fields read-only."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from fleet import models as m


@admin.register(m.Repository)
class RepositoryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "default_branch", "remote_name", "auto_merge", "path"]
    search_fields = ["name", "slug", "path"]
    readonly_fields = ["created_at"]


class WaveInline(admin.TabularInline):
    model = m.Wave
    extra = 0
    fields = ["number", "name", "status"]
    readonly_fields = ["status"]


@admin.register(m.Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "created_by", "created_at"]
    search_fields = ["name", "slug"]
    readonly_fields = ["created_at"]
    inlines = [WaveInline]


@admin.register(m.Wave)
class WaveAdmin(admin.ModelAdmin):
    list_display = ["__str__", "plan", "number", "status", "approved_by", "approved_at"]
    list_filter = ["status", "plan"]
    search_fields = ["name", "plan__name"]
    # Status moves only through the state machine, so it is never edited here.
    readonly_fields = ["status", "approved_by", "approved_at", "created_at", "updated_at"]

    def get_readonly_fields(self, request, obj=None):
        # A wave stays in its plan (spend and budgets are counted by plan).
        return [*self.readonly_fields, "plan"] if obj is not None else self.readonly_fields


@admin.register(m.Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["key", "title", "kind", "status", "repository", "wave", "assignee", "attempt"]
    list_filter = ["status", "kind", "repository", "wave__plan"]
    search_fields = ["key", "title", "spec"]
    list_select_related = ["repository", "wave__plan", "assignee"]
    readonly_fields = [
        "status",
        "assignee",
        "attempt",
        "lease_expires_at",
        "lease_epoch",
        "base_sha",
        "head_sha",
        "created_at",
        "updated_at",
    ]


@admin.register(m.Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "role", "status", "repository", "last_heartbeat_at", "context_pct"]
    list_filter = ["role", "status", "repository"]
    search_fields = ["name", "status_line"]
    readonly_fields = [
        "status",
        "stop_reason",
        "token_hash",
        "token_revoked_at",
        "last_heartbeat_at",
        "spent_usd",
        "tokens_used",
        "created_at",
        "updated_at",
    ]
    actions = ["revoke_tokens"]

    @admin.action(description="Revoke the selected agents' tokens")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet) -> None:
        for agent in queryset.filter(token_revoked_at__isnull=True):
            agent.revoke_token(by=request.user)
        self.message_user(request, "Tokens revoked.", messages.SUCCESS)


@admin.register(m.AgentSession)
class AgentSessionAdmin(admin.ModelAdmin):
    list_display = ["agent", "started_at", "ended_at", "end_reason", "model_name"]
    list_filter = ["end_reason"]
    search_fields = ["agent__name"]
    readonly_fields = ["started_at"]


@admin.register(m.JournalEntry)
class JournalEntryAdmin(admin.ModelAdmin):
    list_display = ["agent", "kind", "task", "created_at"]
    list_filter = ["kind"]
    search_fields = ["body", "agent__name"]
    readonly_fields = ["created_at"]


@admin.register(m.Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["recipient", "subject", "created_at", "acked_at"]
    list_filter = ["acked_at"]
    search_fields = ["subject", "body", "recipient__name"]
    readonly_fields = ["created_at", "acked_at"]


@admin.register(m.Learning)
class LearningAdmin(admin.ModelAdmin):
    list_display = ["title", "repository", "agent", "created_at"]
    list_filter = ["repository"]
    search_fields = ["title", "body", "tags"]
    readonly_fields = ["created_at"]


@admin.register(m.FileClaim)
class FileClaimAdmin(admin.ModelAdmin):
    list_display = ["path", "mode", "task", "agent", "expires_at", "released_at"]
    list_filter = ["mode", "repository"]
    search_fields = ["path", "task__key", "agent__name"]
    readonly_fields = ["created_at"]


@admin.register(m.SharedFile)
class SharedFileAdmin(admin.ModelAdmin):
    list_display = ["path", "wave", "strategy", "owner_task", "decided_by"]
    list_filter = ["strategy"]
    search_fields = ["path"]
    readonly_fields = ["decided_by", "decided_at"]


class FindingInline(admin.TabularInline):
    model = m.Finding
    extra = 0
    fields = ["severity", "path", "line_start", "title", "verdict", "reason"]
    readonly_fields = ["verdict", "reason"]


@admin.register(m.Review)
class ReviewAdmin(admin.ModelAdmin):
    list_display = ["task", "commit_sha", "reviewer", "status", "created_at"]
    list_filter = ["status"]
    search_fields = ["task__key", "commit_sha"]
    readonly_fields = ["provenance", "created_at", "closed_at"]
    inlines = [FindingInline]


@admin.register(m.Finding)
class FindingAdmin(admin.ModelAdmin):
    list_display = ["title", "severity", "path", "verdict", "decided_by", "decided_at"]
    list_filter = ["verdict", "severity"]
    search_fields = ["title", "body", "path"]
    readonly_fields = ["decided_by", "decided_at", "created_at"]


@admin.register(m.CheckRun)
class CheckRunAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "commit_sha", "task", "created_at"]
    list_filter = ["status", "repository"]
    search_fields = ["name", "commit_sha", "task__key"]
    readonly_fields = ["created_at", "finished_at"]


@admin.register(m.MergeRequest)
class MergeRequestAdmin(admin.ModelAdmin):
    list_display = ["task", "repository", "position", "step", "result", "updated_at"]
    list_filter = ["step", "result", "repository"]
    search_fields = ["task__key", "candidate_sha"]
    readonly_fields = [
        "candidate_sha",
        "step",
        "result",
        "log",
        "batch",
        "created_at",
        "updated_at",
    ]


@admin.register(m.MergeBatch)
class MergeBatchAdmin(admin.ModelAdmin):
    list_display = ["pk", "repository", "step", "landed", "updated_at"]
    list_filter = ["step", "repository"]
    readonly_fields = [
        "base_sha",
        "step",
        "trials",
        "landed",
        "landing",
        "target_sha",
        "note",
        "created_at",
        "updated_at",
    ]


@admin.register(m.WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["kind", "task", "url", "attempts", "delivered_at", "gave_up_at", "last_error"]
    list_filter = ["kind", "repository"]
    readonly_fields = ["payload", "attempts", "delivered_at", "gave_up_at", "last_error"]


@admin.register(m.ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin):
    list_display = ["model_name", "usd_per_mtok_in", "usd_per_mtok_out", "updated_at"]
    search_fields = ["model_name"]


@admin.register(m.Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ["ref", "task", "agent", "reason", "sha", "created_at"]
    list_filter = ["reason"]
    readonly_fields = ["task", "agent", "session", "event", "reason", "ref", "sha", "created_at"]


@admin.register(m.SpendEvent)
class SpendEventAdmin(admin.ModelAdmin):
    list_display = [
        "agent",
        "task",
        "model_name",
        "tokens_in",
        "tokens_out",
        "cost_usd",
        "created_at",
    ]
    list_filter = ["model_name"]
    search_fields = ["agent__name", "task__key"]
    readonly_fields = ["created_at"]


@admin.register(m.Budget)
class BudgetAdmin(admin.ModelAdmin):
    list_display = ["__str__", "scope", "limit_usd", "spent_usd", "limit_tokens", "spent_tokens"]
    list_filter = ["scope"]
    readonly_fields = ["spent_usd", "spent_tokens", "updated_at"]

    def save_model(self, request, obj, form, change):
        """A cap set here is audited like one set on a wave's page, and clamped to
        what was already spent ("stop now"); the running totals are never written
        back from the form (spend recorded meanwhile is kept)."""
        from django.db import transaction
        from django.utils import timezone

        with transaction.atomic():
            if change:
                current = m.Budget.objects.select_for_update(no_key=True).get(pk=obj.pk)
                obj.spent_usd, obj.spent_tokens = current.spent_usd, current.spent_tokens
            if obj.limit_usd is not None:
                obj.limit_usd = max(obj.limit_usd, obj.spent_usd)
            if obj.limit_tokens is not None:
                obj.limit_tokens = max(obj.limit_tokens, obj.spent_tokens)
            obj.updated_at = timezone.now()
            if change:
                fields = [f for f in form.changed_data if f not in self.readonly_fields]
                obj.save(update_fields=[*fields, "limit_usd", "limit_tokens", "updated_at"])
            else:
                obj.save()
            m.Event.objects.record(
                "budget.set",
                by=request.user,
                payload={
                    "budget": obj.pk,
                    "scope": obj.scope,
                    "limit_usd": None if obj.limit_usd is None else str(obj.limit_usd),
                    "limit_tokens": obj.limit_tokens,
                    "where": "admin",
                },
            )


@admin.register(m.Event)
class EventAdmin(admin.ModelAdmin):
    """The audit log is append-only: viewable, never edited or deleted here."""

    list_display = ["id", "created_at", "kind", "actor", "task", "wave", "agent"]
    list_filter = ["kind"]
    search_fields = ["kind", "actor", "correlation_id"]
    list_select_related = ["task", "wave", "agent"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
