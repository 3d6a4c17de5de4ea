"""The optional outgoing webhook: tasks that need a person, POSTed as JSON to the
repository's URL.

``notify`` writes a WebhookDelivery in the caller's transaction (an outbox: a
notification exists exactly when what it reports was committed); the worker's
``deliver`` sweep sends what is due, retrying with a growing delay, and gives up
after ``FLEET_WEBHOOK_ATTEMPTS`` tries, saying why on the delivery (admin).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from fleet.models import Budget, Event, Repository, Task, WebhookDelivery

log = logging.getLogger("fleet.webhooks")

BATCH = 50  # deliveries looked at per sweep
BUDGET = 15  # seconds of sending per sweep


# What a task's notification says happened, after "T-12 “title”".
TASK_SENTENCES = {
    "findings_waiting": "has review findings waiting for a verdict",
    "gate_red": "has a red merge gate",
    "merge_failed": "failed to merge and went back to its builder",
}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _chat(text: str) -> str:
    """Text a chat channel shows as written: Slack reads &, < and > as markup (a
    ``<!channel>`` pings everyone), and Discord pings on @everyone and @here; a
    zero-width space after each @ keeps the words, not the pings."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("@", "@\u200b")


def task_text(kind: str, task: Task, reasons: list[str], url: str) -> str:
    """The payload's ``text``: one sentence a chat channel shows as it is (Slack's
    incoming webhooks and Discord's Slack-compatible ones read ``text``; both link a
    bare URL)."""
    what = TASK_SENTENCES.get(kind, "needs a person")
    why = _chat(_clip("; ".join(reasons), 300))
    return f"{task.key} “{_chat(_clip(task.title, 80))}” {what}{': ' + why if why else ''} — {url}"


def budget_text(kind: str, payload: dict[str, Any]) -> str:
    """The same for a budget: what is spent of what, and where to look."""
    spent = f"${Decimal(payload['spent_usd']):.2f}"
    if payload["limit_usd"] is not None:
        spent += f" of ${Decimal(payload['limit_usd']):.2f}"
    what = (
        "has spent its budget; its agents are stopped"
        if kind == "budget_spent"
        else "is at 80% or more of its budget"
    )
    scope = _chat(payload["scope"])
    return f"{scope[:1].upper()}{scope[1:]} {what} ({spent}) — {payload['url']}"


def notify(task: Task, kind: str, reasons: list[str]) -> WebhookDelivery | None:
    """Queue a notification that ``task`` needs a person (no webhook set: nothing)."""
    url = task.repository.webhook_url
    if not url:
        return None
    payload: dict[str, Any] = {
        "event": kind,
        "task": task.key,
        "title": task.title,
        "status": task.status,
        "repository": task.repository.slug,
        "reasons": reasons,
        "url": settings.FLEET_PUBLIC_URL + reverse("fleet-task", args=[task.key]),
        "at": timezone.now().isoformat(),
    }
    payload["text"] = task_text(kind, task, reasons, payload["url"])
    return WebhookDelivery.objects.create(
        repository_id=task.repository_id, task=task, url=url, kind=kind, payload=payload
    )


def notify_budget(budget_id: int, kind: str) -> list[WebhookDelivery]:
    """Queue ``budget_warning`` (80% of a cap) or ``budget_spent`` for every
    repository in the budget's scope that has a webhook (the fleet's: all of them)."""
    from fleet import budgets

    budget = (
        Budget.objects.select_related("wave__plan", "plan", "repository", "agent", "task")
        .filter(pk=budget_id)
        .first()
    )
    if budget is None:
        return []
    repositories = Repository.objects.exclude(webhook_url="")
    if budget.scope == "repository":
        repositories = repositories.filter(pk=budget.repository_id)
    elif budget.scope == "agent":
        repositories = repositories.filter(pk=budget.agent.repository_id)
    elif budget.scope != "fleet":
        tasks = {
            "task": Task.objects.filter(pk=budget.task_id),
            "wave": Task.objects.filter(wave_id=budget.wave_id),
            "plan": Task.objects.filter(wave__plan_id=budget.plan_id),
        }[budget.scope]
        repositories = repositories.filter(pk__in=tasks.values("repository_id"))
    payload: dict[str, Any] = {
        "event": kind,
        "scope": budgets.describe(budget),
        "spent_usd": str(budget.spent_usd),
        "limit_usd": None if budget.limit_usd is None else str(budget.limit_usd),
        "spent_tokens": budget.spent_tokens,
        "limit_tokens": budget.limit_tokens,
        "url": settings.FLEET_PUBLIC_URL + reverse("fleet-budget"),
        "at": timezone.now().isoformat(),
    }
    payload["text"] = budget_text(kind, payload)
    # The activity log (and the live pages) say it too, webhook or not.
    Event.objects.record(
        kind.replace("_", "."),
        payload={k: payload[k] for k in ("scope", "spent_usd", "limit_usd", "spent_tokens")},
        wave_id=budget.wave_id,
    )
    return [
        WebhookDelivery.objects.create(
            repository=repository, url=repository.webhook_url, kind=kind, payload=payload
        )
        for repository in repositories
    ]


def backoff(attempts: int) -> timedelta:
    """10 s, 20 s, 40 s … after each failed try, at most an hour."""
    return timedelta(seconds=min(settings.FLEET_WEBHOOK_RETRY * 2 ** (attempts - 1), 3600))


def _post(url: str, payload: dict[str, Any]) -> str:
    """'' when the receiver took it (2xx), else why not."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "Fleet webhook"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.FLEET_WEBHOOK_TIMEOUT) as response:
            return "" if 200 <= response.status < 300 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))[:500]


def _claim(delivery: WebhookDelivery, now) -> bool:
    """Take a delivery for this worker (another worker running the sweep at the same
    time skips it): move its next attempt past the time one try may take."""
    lease = now + timedelta(seconds=settings.FLEET_WEBHOOK_TIMEOUT * 2 + 5)
    taken = WebhookDelivery.objects.filter(
        pk=delivery.pk, next_attempt_at=delivery.next_attempt_at, delivered_at=None
    ).update(next_attempt_at=lease)
    return bool(taken)


def deliver(now=None) -> int:
    """Send the deliveries that are due; the number delivered. A receiver that fails
    is not tried again in the same sweep, and a sweep stops after ``BUDGET`` seconds,
    so a dead receiver cannot hold up the worker's other sweeps."""
    now = now or timezone.now()
    due = WebhookDelivery.objects.filter(
        delivered_at=None, gave_up_at=None, next_attempt_at__lte=now
    ).order_by("next_attempt_at", "pk")[:BATCH]
    delivered = 0
    failing: set[str] = set()
    started = time.monotonic()
    for delivery in due:
        if delivery.url in failing or time.monotonic() - started > BUDGET:
            continue
        if not _claim(delivery, now):
            continue
        error = _post(delivery.url, delivery.payload)
        if error:
            failing.add(delivery.url)
        delivery.attempts += 1
        delivery.last_error = error
        fields = ["attempts", "last_error"]
        if not error:
            delivery.delivered_at = timezone.now()
            fields.append("delivered_at")
            delivered += 1
        elif delivery.attempts >= settings.FLEET_WEBHOOK_ATTEMPTS:
            delivery.gave_up_at = timezone.now()
            fields.append("gave_up_at")
            log.warning(
                "webhook %s: gave up after %d tries: %s", delivery.url, delivery.attempts, error
            )
        else:
            delivery.next_attempt_at = timezone.now() + backoff(delivery.attempts)
            fields.append("next_attempt_at")
        delivery.save(update_fields=fields)
    return delivered
