"""The manager's budget page: spend over time stacked by agent, wave and
repository; burn-down against each cap with a projection of when it is hit; the top
spenders and the cost of each merged task; a CSV export. Live (``budget`` page)."""

from __future__ import annotations

import csv
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib import messages
from django.db.models import Count, F, Sum
from django.db.models.functions import TruncDay, TruncHour
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from fleet import budgets, charts
from fleet.forms import CAP_SCOPES, CapForm
from fleet.models import Budget, SpendEvent, Task
from fleet.roles import LEAD, MANAGER, ROLES, role_required, user_roles
from fleet.views.live import live_snapshot

# The charts' windows: 24 hourly buckets, or 30 daily ones (``?by=day``).
WINDOWS = {"": (24, timedelta(hours=1), TruncHour), "day": (30, timedelta(days=1), TruncDay)}
# Each chart's grouping: the fields it groups by (the first one names the group; a
# wave is named with its plan, as waves are numbered per plan) and its title.
GROUPS = {
    "agent": (("agent__name",), "By agent"),
    "wave": (("task__wave_id", "task__wave__number", "task__wave__plan__name"), "By wave"),
    "repository": (("task__repository__slug",), "By repository"),
}
FAR = timedelta(days=365)  # a projection further out than this says so, without a date


def _label(row: dict, fields: tuple[str, ...]) -> str:
    if row[fields[0]] is None:
        return "no task"
    if len(fields) == 3:
        return f"{row[fields[2]]} · wave {row[fields[1]]}"
    return str(row[fields[0]])


def _buckets(now, by: str) -> list:
    count, step, _ = WINDOWS[by]
    start = now.replace(minute=0, second=0, microsecond=0)
    if by == "day":
        start = start.replace(hour=0)
    start -= step * (count - 1)
    return [start + step * i for i in range(count)]


def _bucket(value, by: str = "") -> Any:
    """A truncated value as an aware datetime on the hour or day (SQLite gives
    naive ones, and TruncDay a date)."""
    if not hasattr(value, "hour"):
        value = timezone.datetime(value.year, value.month, value.day)
    if timezone.is_naive(value):
        value = timezone.make_aware(value, timezone.UTC)
    value = value.replace(minute=0, second=0, microsecond=0)
    return value.replace(hour=0) if by == "day" else value


def _series(hours: list, fields: tuple[str, ...], by: str) -> dict[str, list[float]]:
    """Spend per bucket in the window, per group (one query)."""
    index = {hour: i for i, hour in enumerate(hours)}
    series: dict[str, list[float]] = {}
    rows = (
        SpendEvent.objects.filter(created_at__gte=hours[0])
        .annotate(hour=WINDOWS[by][2]("created_at"))
        .values("hour", *fields)
        .annotate(cost=Sum("cost_usd"))
    )
    for row in rows:
        i = index.get(_bucket(row["hour"], by))
        if i is None:
            continue
        label = _label(row, fields)
        series.setdefault(label, [0.0] * len(hours))[i] += float(row["cost"] or 0)
    return series


def _burndowns(hours: list, now, by: str) -> list[dict[str, Any]]:
    """Each capped budget: its spend so far, hour by hour in the window, the burn
    rate of the last hour, and when the cap is hit at that rate."""
    rows = []
    capped = Budget.objects.filter(budgets.CAPPED).select_related(
        "wave__plan", "plan", "repository", "agent", "task"
    )
    for budget in capped.order_by("scope", "pk"):
        # A cap in USD is drawn in USD; a budget capped only in tokens, in tokens.
        usd = budget.limit_usd is not None
        measure = Sum("cost_usd") if usd else Sum(F("tokens_in") + F("tokens_out"))
        fmt = charts.money if usd else charts.tokens
        scope = SpendEvent.objects.filter(budgets.spend_filter(budget))
        before = scope.filter(created_at__lt=hours[0]).aggregate(s=measure)["s"] or 0
        per_hour = [0.0] * len(hours)
        index = {hour: i for i, hour in enumerate(hours)}
        for row in (
            scope.filter(created_at__gte=hours[0])
            .annotate(hour=WINDOWS[by][2]("created_at"))
            .values("hour")
            .annotate(used=measure)
        ):
            i = index.get(_bucket(row["hour"], by))
            if i is not None:
                per_hour[i] += float(row["used"] or 0)
        cumulative, total = [], float(before)
        for value in per_hour:
            total += value
            cumulative.append(total)
        cap = float(budget.limit_usd if usd else budget.limit_tokens)
        rate = float(
            scope.filter(created_at__gte=now - timedelta(hours=1)).aggregate(s=measure)["s"] or 0
        )  # per hour
        left = max(cap - total, 0.0)
        hours_left = left / rate if rate and left else None
        far = hours_left is not None and hours_left > FAR / timedelta(hours=1)
        until = timedelta(hours=hours_left) if hours_left is not None and not far else None
        steps_left = until / WINDOWS[by][1] if until is not None else None
        rows.append(
            {
                "budget": budget,
                "scope": budgets.describe(budget),
                "spent": fmt(total),
                "cap": fmt(cap),
                "fraction": total / cap if cap else 1.0,
                "rate": fmt(rate) if rate else "",
                "hits_at": now + until if until is not None else None,
                "far": far,
                "spent_out": budgets.is_spent(budget) or left <= 0,
                "chart": charts.burndown(
                    hours,
                    cumulative,
                    cap,
                    steps_left,
                    title=f"Spend of {budgets.describe(budget)} against its {fmt(cap)} cap",
                    fmt=fmt,
                ),
            }
        )
    return rows


def budget_key(by: str) -> str:
    return by if by in WINDOWS else ""


def budget_context(key: str = "") -> dict[str, Any]:
    by = budget_key(key)
    now = timezone.now()
    hours = _buckets(now, by)
    totals = SpendEvent.objects.aggregate(
        cost=Sum("cost_usd"), tin=Sum("tokens_in"), tout=Sum("tokens_out"), n=Count("id")
    )
    return {
        "now": now,
        "by": by,
        "totals": totals,
        "charts": [
            {
                "key": key_,
                "title": title,
                "svg": charts.stacked_bars(
                    hours,
                    _series(hours, fields, by),
                    title=f"Spend per {'day' if by else 'hour'}, {title.lower()}",
                    label="%d %b" if by else "%H:00",
                ),
            }
            for key_, (fields, title) in GROUPS.items()
        ],
        "burndowns": _burndowns(hours, now, by),
        "top": list(
            SpendEvent.objects.values("agent__name", "agent__role")
            .annotate(cost=Sum("cost_usd"), tokens=Sum("tokens_in") + Sum("tokens_out"))
            .order_by("-cost", "agent__name")[:10]
        ),
        "merged": list(
            Task.objects.filter(status=Task.MERGED)
            .annotate(cost=Sum("spend__cost_usd"))
            .select_related("repository")
            .order_by("-updated_at")[:30]
        ),
    }


def cap_scopes(user) -> tuple[str, ...]:
    """The scopes this person may cap here: a manager any, a lead the waves."""
    roles = user_roles(user)
    if MANAGER in roles:
        return CAP_SCOPES
    return ("wave",) if LEAD in roles else ()


def _page(request: HttpRequest, cap_form: CapForm | None = None, status: int = 200):
    by = budget_key(request.GET.get("by", ""))
    scopes = cap_scopes(request.user)
    if cap_form is None and scopes:
        cap_form = CapForm(scopes=scopes, initial={"target": request.GET.get("cap", "")})
    return render(
        request,
        "fleet/budget.html",
        {**budget_context(by), "cap_form": cap_form, "live_view": "budget", "live_key": by},
        status=status,
    )


@require_GET
@role_required(*ROLES)
def budget_page(request: HttpRequest) -> HttpResponse:
    if request.GET.get("live"):
        return live_snapshot("budget", budget_key(request.GET.get("by", "")))
    return _page(request)


@require_POST
@role_required(LEAD, MANAGER)
def budget_cap(request: HttpRequest) -> HttpResponse:
    """Set one scope's cap (the fleet, a repository, a wave, an agent): what "Resume"
    asks for when an agent stopped at a cap. Bad input is said on the form (400)."""
    form = CapForm(request.POST, scopes=cap_scopes(request.user))
    if not form.is_valid():
        return _page(request, form, status=400)
    budget = form.save(by=request.user)
    messages.success(
        request,
        f"The cap of {budgets.describe(budget)} is set: {_caps(budget)}."
        + (" Agents stopped at it can be resumed now." if not budget.cap_reached else ""),
    )
    return redirect(reverse("fleet-budget") + f"#budget-{budget.pk}")


def _caps(budget: Budget) -> str:
    parts = []
    if budget.limit_usd is not None:
        parts.append(charts.money(float(budget.limit_usd)))
    if budget.limit_tokens is not None:
        parts.append(f"{budget.limit_tokens} tokens")
    return " and ".join(parts)


class _Echo:
    def write(self, value: str) -> str:
        return value


@require_GET
@role_required(*ROLES)
def spend_csv(request: HttpRequest) -> StreamingHttpResponse:
    """Spend per day, agent and task (one row each; the columns add up to the page's
    totals), streamed."""
    rows = (
        SpendEvent.objects.annotate(day=TruncDay("created_at"))
        .values("day", "agent__name", "task__key", "task__wave__number", "task__repository__slug")
        .annotate(tokens_in=Sum("tokens_in"), tokens_out=Sum("tokens_out"), cost=Sum("cost_usd"))
        .order_by("day", "agent__name", "task__key")
    )
    writer = csv.writer(_Echo())

    def lines():
        yield writer.writerow(
            ["day", "agent", "task", "wave", "repository", "tokens_in", "tokens_out", "cost_usd"]
        )
        for row in rows.iterator():
            yield writer.writerow(
                [
                    _bucket(row["day"]).date().isoformat(),
                    row["agent__name"],
                    row["task__key"] or "",
                    row["task__wave__number"] or "",
                    row["task__repository__slug"] or "",
                    row["tokens_in"],
                    row["tokens_out"],
                    f"{Decimal(str(row['cost'] or 0)):.4f}",
                ]
            )

    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="fleet-spend.csv"'
    return response
