"""Budgets of every scope — fleet, plan, wave, repository, agent, task — and the
server's and the worker's layers of their enforcement.

A budget's scope decides which spend counts against it and which agents it stops:

- ``fleet``: all spend, every agent;
- ``agent``: that agent's spend;
- ``task`` / ``wave`` / ``plan`` / ``repository``: spend on the task(s) in it, and
  the agents whose current task is in it.

Three layers enforce a cap, each on its own: the agent client stops itself when the
server says ``budget_left`` is zero (``fleet.agent.ops``); the server checks caps in
the transaction that records spend (``fleet.heartbeats``) or hands out work
(``fleet.dispatch``), stopping the agents in scope; and the worker's ``budgets``
sweep re-counts every cap from the raw SpendEvents (correcting any drift of the
running totals) and stops agents past a cap or past the wall-clock limits. Under
all three, the database refuses a stored total above its cap.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Max, Q, Sum
from django.utils import timezone

from fleet.models import Agent, AgentSession, Budget, Event, SpendEvent, Task, TransitionError

log = logging.getLogger("fleet.budgets")

WARN_AT = 0.8  # budgets at 80% of a cap are a warning (problems panel, webhook)
CAPPED = Q(limit_usd__isnull=False) | Q(limit_tokens__isnull=False)

# Where a task-scoped budget's target sits, seen from a task.
TASK_PATH = {
    "task": "pk",
    "wave": "wave_id",
    "plan": "wave__plan_id",
    "repository": "repository_id",
}


def _scope_q(budget: Budget, task: str, agent: str) -> Q:
    """The rows a budget covers: through their task (``task`` is the path to it) for
    the task scopes, by ``agent`` for an agent's budget, all for the fleet's."""
    if budget.scope == "fleet":
        return Q()
    if budget.scope == "agent":
        return Q(**{agent: budget.agent_id})
    return Q(**{f"{task}__{TASK_PATH[budget.scope]}": getattr(budget, f"{budget.scope}_id")})


def spend_filter(budget: Budget) -> Q:
    """The SpendEvents that count against ``budget``."""
    return _scope_q(budget, "task", "agent_id")


def agents_filter(budget: Budget) -> Q:
    """The agents ``budget`` stops when it is spent."""
    return _scope_q(budget, "current_task", "pk")


def describe(budget: Budget) -> str:
    """The scope in words, for errors and pages: "wave 2 of Demo sprint"."""
    if budget.scope == "fleet":
        return "the fleet"
    if budget.scope == "wave":
        return f"wave {budget.wave.number} of {budget.wave.plan.name}"
    target = budget.plan or budget.repository or budget.agent or budget.task
    return f"{budget.scope} {getattr(target, 'key', None) or target}"


def set_cap(
    *,
    scope: str,
    target: Any = None,
    limit_usd: Decimal | None,
    limit_tokens: int | None,
    by: Any,
) -> Budget:
    """Set the caps of one scope's budget (made if it has none yet), audited. A cap
    below what was already spent is clamped to the spent amount ("stop now")."""
    subjects = {} if scope == "fleet" else {scope: target}
    # The row may exist already (its running total, made on first spend); made here
    # if not, the way the heartbeats make it (no duplicate either way).
    Budget.objects.bulk_create([Budget(scope=scope, **subjects)], ignore_conflicts=True)
    with transaction.atomic():
        budget = Budget.objects.select_for_update(no_key=True).get(scope=scope, **subjects)
        budget.limit_usd = None if limit_usd is None else max(limit_usd, budget.spent_usd)
        budget.limit_tokens = (
            None if limit_tokens is None else max(limit_tokens, budget.spent_tokens)
        )
        budget.updated_at = timezone.now()
        budget.save(update_fields=["limit_usd", "limit_tokens", "updated_at"])
        wave = target if scope == "wave" else None
        Event.objects.record(
            "budget.set",
            by=by,
            wave=wave,
            plan_id=wave.plan_id if wave is not None else None,
            agent=target if scope == "agent" else None,
            repository=target if scope == "repository" else None,
            payload={
                "budget": budget.pk,
                "scope": scope,
                "limit_usd": None if budget.limit_usd is None else str(budget.limit_usd),
                "limit_tokens": budget.limit_tokens,
            },
        )
    return budget


def is_spent(budget: Budget) -> bool:
    return budget.cap_reached


def applicable(agent: Agent, task: Task | None) -> Q:
    """The budgets an agent's spend (on ``task``) counts against."""
    scopes = Q(scope="fleet") | Q(agent_id=agent.pk)
    if task is not None:
        scopes |= (
            Q(task_id=task.pk)
            | Q(wave_id=task.wave_id)
            | Q(plan_id=task.wave.plan_id)
            | Q(repository_id=task.repository_id)
        )
    return scopes


SPENT = Q(limit_usd__isnull=False, spent_usd__gte=F("limit_usd")) | Q(
    limit_tokens__isnull=False, spent_tokens__gte=F("limit_tokens")
)


def spent_budgets(agent: Agent, task: Task | None = None, *, lock: bool = False) -> list[Budget]:
    """The spent budgets the agent's spend (on ``task``) counts against; ``lock``
    holds their rows to the end of the caller's transaction, so spend recorded
    meanwhile cannot slip past the check."""
    # Only capped budgets can be spent. Those are locked, in id order, as the heartbeat
    # batch locks them (no deadlock between them); the batch adds to uncapped running
    # totals at its end, so locking those here first could deadlock with it.
    found = Budget.objects.filter(applicable(agent, task)).filter(CAPPED).order_by("pk")
    if lock:
        found = found.select_for_update(no_key=True, of=("self",))
    return [
        budget
        for budget in found.select_related("wave__plan", "plan", "repository", "agent", "task")
        if is_spent(budget)
    ]


def affordable(tasks, prefix: str = ""):
    """``tasks`` (or reviews, with ``prefix="task__"``) without those whose task,
    wave, plan or repository budget is spent: a spent scope waits, the rest of the
    fleet works on."""
    spent = Budget.objects.filter(SPENT).exclude(scope__in=["fleet", "agent"])
    for scope, path in TASK_PATH.items():
        tasks = tasks.exclude(
            **{f"{prefix}{path}__in": spent.filter(scope=scope).values(f"{scope}_id")}
        )
    return tasks


def refusal(budget: Budget) -> TransitionError:
    return TransitionError(
        f"the budget of {describe(budget)} is spent ({figures(budget)}); "
        "a person can raise the cap",
        code="budget_spent",
    )


def refuse_if_spent(agent: Agent, task: Task | None = None) -> None:
    """Work is not handed out past a cap: a 409 naming the scope (the caller holds
    the transaction in which the work would be handed out; the budgets stay locked
    until it ends)."""
    spent = spent_budgets(agent, task, lock=True)
    if spent:
        raise refusal(spent[0])


def guard(agent: Agent) -> None:
    """Before handing out work: an agent past its own or the fleet's cap is stopped
    (budget; committed) and refused with the scope named."""
    with transaction.atomic():
        spent = spent_budgets(agent)
        if spent and agent.status != Agent.STOPPED:
            Agent.objects.select_for_update(no_key=True).get(pk=agent.pk).stop(reason="budget")
    if spent:
        raise refusal(spent[0])


def figures(budget: Budget) -> str:
    parts = []
    if budget.limit_usd is not None:
        parts.append(f"${budget.spent_usd:.2f} of ${budget.limit_usd:.2f}")
    if budget.limit_tokens is not None:
        parts.append(f"{budget.spent_tokens} of {budget.limit_tokens} tokens")
    return ", ".join(parts)


def stop_in_scope_later(budget_id: int) -> int:
    """Stop the agents a spent budget covers, one transaction each (after the
    transaction that found it spent has committed). Failures are left to the
    worker's sweep, which stops them too."""
    try:
        budget = Budget.objects.filter(pk=budget_id).first()
        if budget is None or not is_spent(budget):
            return 0  # gone, or a person raised the cap meanwhile
        ids = list(
            Agent.objects.filter(agents_filter(budget))
            .exclude(status=Agent.STOPPED)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
    except Exception:
        log.exception("reading the agents of spent budget %s", budget_id)
        return 0
    stopped = 0
    for pk in ids:
        try:
            with transaction.atomic():
                agent = Agent.objects.select_for_update(no_key=True).get(pk=pk)
                if agent.status != Agent.STOPPED:
                    agent.stop(reason="budget")
                    stopped += 1
        except Exception:
            log.exception("stopping agent %s for a spent budget", pk)
    return stopped


@dataclass
class Recount:
    budget: Budget
    spent_usd: Decimal
    spent_tokens: int


def recount(budget: Budget) -> Recount:
    """The budget's spend counted from the raw SpendEvents."""
    totals = SpendEvent.objects.filter(spend_filter(budget)).aggregate(
        usd=Sum("cost_usd"), tin=Sum("tokens_in"), tout=Sum("tokens_out")
    )
    return Recount(
        budget,
        Decimal(str(totals["usd"] or 0)).quantize(Decimal("0.0001")),
        int(totals["tin"] or 0) + int(totals["tout"] or 0),
    )


def sweep(now=None) -> int:
    """The worker's layer: re-count every capped budget from the raw spend, correct
    the running total (kept within its cap), and stop the agents in scope of a spent
    one; stop agents past the wall-clock limits. The number of agents stopped."""
    now = now or timezone.now()
    stopped = 0
    to_stop: list[int] = []
    capped = Budget.objects.filter(CAPPED)
    for budget_id in capped.values_list("pk", flat=True):
        with transaction.atomic():
            budget = (
                Budget.objects.select_for_update(no_key=True, of=("self",))
                .select_related("wave__plan", "plan", "repository", "agent", "task")
                .filter(pk=budget_id)
                .first()
            )
            if budget is None:
                continue
            raw = recount(budget)
            was_spent = is_spent(budget)
            over = (budget.limit_usd is not None and raw.spent_usd >= budget.limit_usd) or (
                budget.limit_tokens is not None and raw.spent_tokens >= budget.limit_tokens
            )
            usd = (
                raw.spent_usd if budget.limit_usd is None else min(raw.spent_usd, budget.limit_usd)
            )
            tokens = (
                raw.spent_tokens
                if budget.limit_tokens is None
                else min(raw.spent_tokens, budget.limit_tokens)
            )
            if (usd, tokens) != (budget.spent_usd, budget.spent_tokens):
                Event.objects.record(
                    "budget.recount",
                    payload={
                        "budget": budget.pk,
                        "scope": describe(budget),
                        "stored_usd": str(budget.spent_usd),
                        "counted_usd": str(raw.spent_usd),
                        "stored_tokens": budget.spent_tokens,
                        "counted_tokens": raw.spent_tokens,
                    },
                )
                budget.spent_usd, budget.spent_tokens, budget.updated_at = usd, tokens, now
                budget.save(update_fields=["spent_usd", "spent_tokens", "updated_at"])
            if over:
                to_stop.append(budget.pk)
                if not was_spent:
                    from fleet import webhooks

                    webhooks.notify_budget(budget.pk, "budget_spent")
    # Agents are stopped after each budget's transaction, never while holding a budget
    # row (the heartbeat batch locks agents before budgets).
    for budget_id in to_stop:
        stopped += stop_in_scope_later(budget_id)
    stopped += _wall_clock(now)
    return stopped


# What starts a task's clock for its holder: being assigned it, getting it back
# (resumed after changes were requested), or being resumed by a person.
CLOCK_EVENTS = ("task.assign", "task.resume")


def _wall_clock(now) -> int:
    """Stop agents whose session, or whose hold on a task, outlasted its limit; the
    session ends with them (a person who resumes the agent starts a new clock)."""
    session_cutoff = now - timedelta(seconds=settings.FLEET_SESSION_MAX_SECONDS)
    # A person who resumed the agent since restarted its session's clock too.
    resumed_lately = Event.objects.filter(kind="agent.resume", created_at__gte=session_cutoff)
    culprits = set(
        AgentSession.objects.filter(ended_at__isnull=True, started_at__lt=session_cutoff)
        .exclude(agent__status=Agent.STOPPED)
        .exclude(agent_id__in=resumed_lately.values("agent_id"))
        .values_list("agent_id", flat=True)
    )
    task_cutoff = now - timedelta(seconds=settings.FLEET_TASK_MAX_SECONDS)
    holders = dict(
        Task.objects.filter(status__in=Task.LEASED_STATES, assignee__isnull=False)
        .exclude(assignee__status=Agent.STOPPED)
        .values_list("pk", "assignee_id")
    )
    if holders:
        started: dict[int, Any] = {}
        for task_id, at in Event.objects.filter(
            kind__in=CLOCK_EVENTS, task_id__in=list(holders)
        ).values_list("task_id", "created_at"):
            started[task_id] = max(at, started.get(task_id, at))
        resumed = dict(
            Event.objects.filter(kind="agent.resume", agent_id__in=set(holders.values()))
            .values("agent_id")
            .annotate(at=Max("created_at"))
            .values_list("agent_id", "at")
        )
        for task_id, agent_id in holders.items():
            since = max(filter(None, [started.get(task_id), resumed.get(agent_id)]), default=None)
            if since is not None and since < task_cutoff:
                culprits.add(agent_id)
    stopped = 0
    for agent_id in sorted(culprits):
        with transaction.atomic():
            agent = Agent.objects.select_for_update(no_key=True).get(pk=agent_id)
            try:
                agent.stop(reason="timeout")
            except TransitionError:
                continue
            AgentSession.objects.filter(agent=agent, ended_at__isnull=True).update(
                ended_at=now, end_reason="timeout"
            )
        stopped += 1
    return stopped


def warnings(budgets: list[Budget]) -> list[tuple[Budget, Decimal]]:
    """Budgets at 80% or more of a cap, with the fraction used."""
    found = []
    for budget in budgets:
        fraction = budget.fraction_used
        if fraction is not None and fraction >= WARN_AT:
            found.append((budget, Decimal(str(fraction))))
    return found
