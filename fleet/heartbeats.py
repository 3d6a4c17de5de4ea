"""Heartbeats, recorded many at a time.

One call records a batch of agents' beats in a single transaction: liveness and
context, spend (SpendEvents, running totals, the agent's capped budget), lease
renewal with epoch fencing, and the directives each agent gets back. The normal
API route records a batch of one; the lean ASGI route (``fleet.api.fastpath``)
records whatever arrived while the previous batch was being written, so the
database sees one short transaction per tick instead of one per request. Both
share this one set of rules.

This is the fleet's hottest path, so it reads plain rows (``values_list``) rather
than model instances and writes with one parameterized statement per table.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db import connection, connections, transaction
from django.utils import timezone

from fleet import ratelimit
from fleet.budgets import WARN_AT
from fleet.models import (
    Agent,
    AgentSession,
    Budget,
    Caps,
    FileClaim,
    Message,
    ModelPrice,
    Repository,
    SpendEvent,
    Task,
    TransitionError,
    Wave,
)
from fleet.rawsql import aware as _aware
from fleet.rawsql import col as _col
from fleet.rawsql import cols as _cols
from fleet.rawsql import execute as _execute
from fleet.rawsql import for_update as _for_update
from fleet.rawsql import insert_rows as _insert_rows
from fleet.rawsql import marks as _marks
from fleet.rawsql import rows as _rows
from fleet.rawsql import table as _table
from fleet.rawsql import update_rows as _update_rows
from fleet.rawsql import when as _when

log = logging.getLogger("fleet.api")

CENT = Decimal("0.0001")
MAX_USD = Decimal("99999999")  # the totals' columns hold 12 digits, 4 after the point
MAX_TOKENS = 2**62
UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="fleet"'}


@dataclass(frozen=True)
class Beat:
    context_pct: int | None  # None: estimated from the proxies, else left as it was
    status_line: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    model: str = ""
    epoch: int | None = None
    tool_calls: int | None = None  # proxies for context use, this session so far
    files_read: int | None = None
    liveness: bool = True  # False: a spend report (POST spend), not a heartbeat


class Refusal(Exception):
    """A beat turned away before it touched anything (unknown token, rate limit)."""

    def __init__(self, status: int, code: str, detail: str, headers: dict | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.headers = headers or {}


@dataclass
class Pending:
    """One beat to record: from an agent already authenticated (``agent_id``) or
    from a bearer token's hash that this batch resolves (and rate-limits)."""

    beat: Beat
    agent_id: int | None = None
    token_hash: str = ""


@dataclass(slots=True)
class AgentRow:
    pk: int
    name: str
    token_hash: str | None
    token_revoked_at: datetime | None
    status: str
    current_task_id: int | None
    spent_usd: Decimal
    tokens_used: int
    unread: int
    session_id: int | None
    session_started_at: datetime | None
    repository_id: int | None
    last_heartbeat_at: datetime | None = None
    context_pct: int = 0
    status_line: str = ""


@dataclass(slots=True)
class TaskRow:
    pk: int
    status: str
    assignee_id: int | None
    lease_epoch: int
    lease_expires_at: datetime | None
    wave_id: int | None = None
    repository_id: int | None = None
    plan_id: int | None = None


BUDGET_COLUMNS = ("id", "scope", "agent", "task", "wave", "plan", "repository")
BUDGET_COLUMNS += ("limit_usd", "spent_usd", "limit_tokens", "spent_tokens")
_LIMIT_USD, _LIMIT_TOKENS = BUDGET_COLUMNS.index("limit_usd"), BUDGET_COLUMNS.index("limit_tokens")


@dataclass(slots=True)
class BudgetRow(Caps):
    pk: int
    scope: str
    agent_id: int | None
    task_id: int | None
    wave_id: int | None
    plan_id: int | None
    repository_id: int | None
    limit_usd: Decimal | None
    spent_usd: Decimal
    limit_tokens: int | None
    spent_tokens: int
    updated_at: datetime | None = None
    # False: a running total without a cap, read without a lock; the batch adds its
    # spend to the stored total at the end (``_add_to_totals``).
    locked: bool = True
    loaded_usd: Decimal = Decimal(0)
    loaded_tokens: int = 0

    def covers(self, agent_id: int, task: TaskRow | None) -> bool:
        """Whether spend by this agent (on this task) counts against the budget."""
        if self.scope == "fleet" or self.agent_id == agent_id:
            return True
        if task is None:
            return False
        return (
            self.task_id == task.pk
            or (self.wave_id is not None and self.wave_id == task.wave_id)
            or (self.plan_id is not None and self.plan_id == task.plan_id)
            or (self.repository_id is not None and self.repository_id == task.repository_id)
        )


@dataclass
class _Batch:
    now: datetime
    agents: dict[int, AgentRow]
    by_hash: dict[str, AgentRow]
    tasks: dict[int, TaskRow]
    budgets: list[BudgetRow]
    prices: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    thresholds: dict[int, int] = field(default_factory=dict)
    sessions: dict[int, list] = field(default_factory=dict)  # id → [usd, tokens, pct, peak]
    crossings: list[tuple[int, str]] = field(default_factory=list)  # budgets at 80% or spent
    dirty_agents: dict[int, AgentRow] = field(default_factory=dict)
    dirty_tasks: dict[int, TaskRow] = field(default_factory=dict)
    dirty_budgets: dict[int, BudgetRow] = field(default_factory=dict)
    spend: list[SpendEvent] = field(default_factory=list)
    claimants: set[int] = field(default_factory=set)  # agents whose claims live on


def holds_lease(agent: Any, task: Any) -> bool:
    return task is not None and task.status in Task.LEASED_STATES and task.assignee_id == agent.pk


def lost_to(name: str) -> str:
    """Who holds the task an agent lost its lease on, in words (the refusal only)."""
    from fleet.models import Event

    last = (
        Event.objects.filter(kind="task.assign", payload__agent=name)
        .select_related("task__assignee")
        .order_by("-id")
        .first()
    )
    if last is None or last.task is None:
        return ""
    task = last.task
    holder = task.assignee.name if task.assignee and task.assignee.name != name else None
    if holder:
        return f"; {task.key} is now held by {holder} (lease epoch {task.lease_epoch})"
    return f"; {task.key} is {task.get_status_display()}"


def budget_left(budgets: list) -> float | None:
    """USD left under the tightest of these caps (None: no cap in USD; 0 when any of
    them is spent, tokens included)."""
    if any(b.spent_usd >= b.limit_usd for b in budgets if b.limit_usd is not None) or any(
        b.spent_tokens >= b.limit_tokens for b in budgets if b.limit_tokens is not None
    ):
        return 0.0
    capped = [b.limit_usd - b.spent_usd for b in budgets if b.limit_usd is not None]
    return float(max(Decimal("0"), min(capped))) if capped else None


def record(pending: list[Pending]) -> list[dict[str, Any] | Exception]:
    """Record the beats; per beat, the directives (a dict) or why it was refused
    (a ``Refusal`` or ``TransitionError``; a refused beat changes nothing)."""
    # The limiter's cache calls happen before the transaction, never under its locks.
    counted = iter(ratelimit.hit_many([f"t:{p.token_hash}" for p in pending if not p.agent_id]))
    waits = [None if p.agent_id else next(counted) for p in pending]
    results: list[dict[str, Any] | Exception] = []
    with transaction.atomic():
        batch = _load(pending)
        for item, wait in zip(pending, waits, strict=True):
            try:
                results.append(_apply(batch, item, wait))
            except (Refusal, TransitionError) as exc:
                results.append(exc)
        _write(batch)
        if batch.crossings:
            from fleet import webhooks

            for budget_id, kind in batch.crossings:
                webhooks.notify_budget(budget_id, kind)
        # This process's live pump renders the new pulses now, not at its next poll.
        transaction.on_commit(functools.partial(_poke_live_pages, list(batch.agents)))
    return results


def _poke_live_pages(agents: list[int]) -> None:
    from fleet.live import PUMP

    PUMP.poke(agents)


UNAVAILABLE = Refusal(503, "unavailable", "heartbeat not recorded; retry", {"Retry-After": "1"})


def record_isolated(pending: list[Pending]) -> list[dict[str, Any] | Exception]:
    """``record``, but a batch that fails as a whole (a database error, a deadlock, a
    lost connection) is retried one beat at a time, so only the beat that really
    fails gets a 503 (and the agent retries it)."""
    try:
        return record(pending)
    except Exception:
        log.warning("a batch of %d heartbeats failed; recording one by one", len(pending))
        drop_broken_connections()
    results: list[dict[str, Any] | Exception] = []
    for item in pending:
        try:
            results.extend(record([item]))
        except Exception:
            log.exception("recording a heartbeat failed")
            drop_broken_connections()
            results.append(UNAVAILABLE)
    return results


def drop_broken_connections() -> None:
    for conn in connections.all(initialized_only=True):
        if conn.in_atomic_block:
            continue  # inside a caller's transaction (tests): not ours to close
        conn.close_if_unusable_or_obsolete()


def _usd(value) -> Decimal:
    """A stored money value as Decimal (SQLite hands back floats or ints)."""
    return value if isinstance(value, Decimal) else Decimal(str(value)).quantize(CENT)


@functools.lru_cache(maxsize=256)
def _agents_sql(where: str, vendor: str) -> str:
    """The batch's agent read (built once per shape; ``where`` differs only in how
    many placeholders it has, ``vendor`` in quoting and locking)."""
    a = {name: _col(Agent, name) for name in ("id", "token_hash")}
    unread = (
        f"SELECT COUNT(*) FROM {_table(Message)} m WHERE m.{_col(Message, 'recipient')} = "
        f"a.{a['id']} AND m.{_col(Message, 'acked_at')} IS NULL"
    )

    def session(column: str) -> str:
        return (
            f"SELECT s.{_col(AgentSession, column)} FROM {_table(AgentSession)} s WHERE "
            f"s.{_col(AgentSession, 'agent')} = a.{a['id']} AND "
            f"s.{_col(AgentSession, 'ended_at')} IS NULL ORDER BY s.{_col(AgentSession, 'id')}"
            " LIMIT 1"
        )

    fields = ("id", "name", "token_hash", "token_revoked_at", "status", "current_task")
    fields += ("spent_usd", "tokens_used", "last_heartbeat_at", "context_pct", "status_line")
    columns = ", ".join(f"a.{_col(Agent, name)}" for name in fields)
    return (
        f"SELECT {columns}, ({unread}), ({session('id')}), ({session('started_at')}),"
        f" a.{_col(Agent, 'repository')} FROM {_table(Agent)} a WHERE {where}"
        f" ORDER BY a.{a['id']}{_for_update()}"
    )


def _load(pending: list[Pending]) -> _Batch:
    ids = {p.agent_id for p in pending if p.agent_id is not None}
    hashes = {p.token_hash for p in pending if p.agent_id is None and p.token_hash}
    # Rows are locked in primary-key order, agents before tasks before budgets, so two
    # batches cannot deadlock each other; the transitions that take a task from its
    # holder lock the holder first too (Task._let_go). Should some other writer still
    # deadlock with a batch on PostgreSQL, the database aborts one side and
    # record_isolated retries the beats one by one.
    # (SQLite: the IMMEDIATE transaction already holds the database's write lock.)
    agents: dict[int, AgentRow] = {}
    where = []
    if ids:
        where.append(f"a.{_col(Agent, 'id')} IN ({_marks(ids)})")
    if hashes:
        where.append(f"a.{_col(Agent, 'token_hash')} IN ({_marks(hashes)})")
    if where:
        for row in _rows(_agents_sql(" OR ".join(where), connection.vendor), [*ids, *hashes]):
            pk, name, token_hash, revoked, status, task_id, usd, tokens = row[:8]
            last_beat, context, line, unread, session, started, repository_id = row[8:]
            started, last_beat = _aware(started), _aware(last_beat)
            agents[pk] = AgentRow(
                pk,
                name,
                token_hash,
                revoked,
                status,
                task_id,
                _usd(usd),
                int(tokens),
                int(unread or 0),
                session,
                started,
                repository_id,
                last_beat,
                int(context or 0),
                line or "",
            )
    tasks = {}
    task_ids = sorted({a.current_task_id for a in agents.values() if a.current_task_id})
    if task_ids:
        names = ("id", "status", "assignee", "lease_epoch", "lease_expires_at", "wave")
        sql = (
            f"SELECT {_cols(Task, *names, 'repository')}"
            f" FROM {_table(Task)} WHERE {_col(Task, 'id')} IN ({_marks(task_ids)})"
            f" ORDER BY {_col(Task, 'id')}{_for_update()}"
        )
        for row in _rows(sql, task_ids):
            # (SQLite hands the lease's end back naive: a spend report, which renews
            # nothing, answers it as read.)
            tasks[row[0]] = TaskRow(*row[:4], _aware(row[4]), *row[5:])
        unknown = sorted({t.wave_id for t in tasks.values()} - _PLAN_OF_WAVE.keys())
        if unknown:  # a wave never changes plans: each is read once per process
            sql = (
                f"SELECT {_cols(Wave, 'id', 'plan')} FROM {_table(Wave)}"
                f" WHERE {_col(Wave, 'id')} IN ({_marks(unknown)})"
            )
            if len(_PLAN_OF_WAVE) > 100_000:
                _PLAN_OF_WAVE.clear()
            _PLAN_OF_WAVE.update(_rows(sql, unknown))
        for task in tasks.values():
            task.plan_id = _PLAN_OF_WAVE.get(task.wave_id)
    budgets = _load_budgets(agents, tasks)
    if _missing_totals(pending, agents, tasks, budgets):
        budgets = _load_budgets(agents, tasks)
    models = {p.beat.model for p in pending if p.beat.model and not p.beat.cost_usd}
    prices = {}
    if models:
        prices = {
            name: (_usd(p_in), _usd(p_out))
            for name, p_in, p_out in _rows(
                f"SELECT {_cols(ModelPrice, 'model_name', 'usd_per_mtok_in', 'usd_per_mtok_out')}"
                f" FROM {_table(ModelPrice)} WHERE {_col(ModelPrice, 'model_name')}"
                f" IN ({_marks(models)})",
                sorted(models),
            )
        }
    repo_ids = {a.repository_id for a in agents.values() if a.repository_id}
    repo_ids |= {t.repository_id for t in tasks.values()}
    thresholds = _rotation_lines(repo_ids)
    return _Batch(
        now=timezone.now(),
        agents=agents,
        by_hash={a.token_hash: a for a in agents.values() if a.token_hash},
        tasks=tasks,
        budgets=budgets,
        prices=prices,
        thresholds=thresholds,
    )


_PLAN_OF_WAVE: dict[int, int] = {}
_LINES: dict[int, tuple[float, int]] = {}  # repository → (read at, rotation line)
LINES_TTL = 10.0  # seconds a repository's rotation line is remembered


def _rotation_lines(repo_ids: set[int]) -> dict[int, int]:
    """Each repository's rotation line, read at most every LINES_TTL seconds (a lead
    changing it waits that long; the hot path saves a query per batch)."""
    now = time.monotonic()
    stale = sorted(pk for pk in repo_ids if now - _LINES.get(pk, (-LINES_TTL, 0))[0] >= LINES_TTL)
    if stale:
        for pk, line in _rows(
            f"SELECT {_cols(Repository, 'id', 'rotate_at_pct')} FROM {_table(Repository)}"
            f" WHERE {_col(Repository, 'id')} IN ({_marks(stale)})",
            stale,
        ):
            _LINES[pk] = (now, line)
    return {pk: _LINES[pk][1] for pk in repo_ids if pk in _LINES}


def _load_budgets(agents: dict[int, AgentRow], tasks: dict[int, TaskRow]) -> list[BudgetRow]:
    """Every budget a beat of this batch can count against: the fleet's, the agents'
    own, and those of their tasks, waves, plans and repositories, by id.

    Budgets with a cap are locked: the batch checks spend against the stored total.
    Running totals without a cap (the fleet's, a wave's, a repository's) are shared
    by every batch of every web process; locked from this read to the commit, they
    made the processes take turns (measured: two processes 1.08x one). Where rows
    can be locked (PostgreSQL) they are read unlocked and added to at the end of the
    batch instead."""
    budgets: list[BudgetRow] = []
    if not agents:
        return budgets
    where, params = [f"{_col(Budget, 'scope')} = %s"], ["fleet"]
    for name, values in _scope_ids(agents, tasks):
        if values:
            where.append(f"{_col(Budget, name)} IN ({_marks(values)})")
            params += values
    select = f"SELECT {_cols(Budget, *BUDGET_COLUMNS)} FROM {_table(Budget)}"
    order = f" ORDER BY {_col(Budget, 'id')}"
    found = _rows(f"{select} WHERE {' OR '.join(where)}{order}", params)
    locked = {row[0] for row in found}  # SQLite: the write lock holds them all
    if connection.features.has_select_for_update:
        # Lock the capped ones (in id order) and read them again under the lock; one
        # capped after the read above counts as a running total (its add stops at the cap).
        capped = [
            row[0] for row in found if row[_LIMIT_USD] is not None or row[_LIMIT_TOKENS] is not None
        ]
        again = {}
        if capped:
            sql = f"{select} WHERE {_col(Budget, 'id')} IN ({_marks(capped)}){order}"
            again = {row[0]: row for row in _rows(sql + _for_update(), capped)}
        locked = set(again)
        found = [again.get(row[0], row) for row in found if row[0] in again or row[0] not in capped]
    for row in found:
        pk, scope, agent_id, task_id, wave_id, plan_id, repo_id = row[:7]
        limit_usd, spent_usd, limit_tokens, spent_tokens = row[7:]
        budgets.append(
            BudgetRow(
                pk,
                scope,
                agent_id,
                task_id,
                wave_id,
                plan_id,
                repo_id,
                None if limit_usd is None else _usd(limit_usd),
                _usd(spent_usd),
                None if limit_tokens is None else int(limit_tokens),
                int(spent_tokens),
                locked=pk in locked,
                loaded_usd=_usd(spent_usd),
                loaded_tokens=int(spent_tokens),
            )
        )
    return budgets


def _scope_ids(agents: dict[int, AgentRow], tasks: dict[int, TaskRow]) -> list[tuple[str, list]]:
    return [
        ("agent", sorted(agents)),
        ("task", sorted(tasks)),
        ("wave", sorted({t.wave_id for t in tasks.values()})),
        ("plan", sorted({t.plan_id for t in tasks.values() if t.plan_id})),
        ("repository", sorted({t.repository_id for t in tasks.values()})),
    ]


def _missing_totals(
    pending: list[Pending],
    agents: dict[int, AgentRow],
    tasks: dict[int, TaskRow],
    budgets: list[BudgetRow],
) -> bool:
    """Make the running-total rows (uncapped budgets) of the fleet and of each task,
    wave, plan and repository that this batch's spend counts against and that has
    none yet; True if any was made. (Once a fleet is warm, none is.)"""
    by_hash = {a.token_hash: a for a in agents.values() if a.token_hash}
    spending = [
        agents.get(p.agent_id) if p.agent_id is not None else by_hash.get(p.token_hash)
        for p in pending
        if p.beat.tokens_in or p.beat.tokens_out or p.beat.cost_usd
    ]
    have = {(b.scope, b.task_id or b.wave_id or b.plan_id or b.repository_id) for b in budgets}
    need: set[tuple[str, int | None]] = set()
    for agent in spending:
        if agent is None:
            continue
        need.add(("fleet", None))
        task = tasks.get(agent.current_task_id)
        if task is not None:
            need |= {
                ("task", task.pk),
                ("wave", task.wave_id),
                ("repository", task.repository_id),
            }
            if task.plan_id:
                need.add(("plan", task.plan_id))
    missing = need - have
    if not missing:
        return False
    Budget.objects.bulk_create(
        [Budget(scope=scope, **({f"{scope}_id": pk} if pk else {})) for scope, pk in missing],
        ignore_conflicts=True,
    )
    return True


def _authenticate(batch: _Batch, item: Pending, wait: float | None) -> AgentRow:
    if item.agent_id is not None:
        agent = batch.agents.get(item.agent_id)  # the API's own auth and limit already ran
        if agent is None:  # deleted since
            raise Refusal(401, "unauthorized", "the agent no longer exists", UNAUTHORIZED)
        return agent
    agent = batch.by_hash.get(item.token_hash)
    if agent is None:
        raise Refusal(401, "unauthorized", "missing or unknown bearer token", UNAUTHORIZED)
    if agent.token_revoked_at is not None:
        raise Refusal(401, "unauthorized", f"the token of {agent.name} was revoked", UNAUTHORIZED)
    if wait is not None:
        raise Refusal(
            429,
            "rate_limited",
            ratelimit.RATE_LIMITED,
            {"Retry-After": str(max(1, int(wait + 0.999)))},
        )
    return agent


def _apply(batch: _Batch, item: Pending, wait: float | None = None) -> dict[str, Any]:
    agent = _authenticate(batch, item, wait)
    beat = item.beat
    task = batch.tasks.get(agent.current_task_id)
    held = holds_lease(agent, task)
    if beat.epoch is not None and (not held or task.lease_epoch != beat.epoch):
        # Fencing: a paused-then-resumed agent must not act on a lease it lost.
        raise TransitionError(
            f"lease epoch {beat.epoch} is no longer held by {agent.name}{lost_to(agent.name)}",
            code="stale_lease",
        )
    if (
        agent.spent_usd + Decimal(str(beat.cost_usd)) >= MAX_USD
        or agent.tokens_used + beat.tokens_in + beat.tokens_out >= MAX_TOKENS
    ):
        # Refused before anything about the agent changes (a refused beat changes nothing).
        raise TransitionError(
            f"{agent.name}'s spend totals would overflow; a person must look at this agent",
            code="spend_overflow",
        )
    pct = context_of(beat, agent, batch.now)
    if beat.liveness:
        if agent.status == Agent.STALE:
            revived = Agent.objects.get(pk=agent.pk)
            revived.revive()
            agent.status = revived.status
        agent.last_heartbeat_at = batch.now
        agent.status_line = beat.status_line
    if pct is not None:
        agent.context_pct = pct
    batch.dirty_agents[agent.pk] = agent
    cost = Decimal(str(beat.cost_usd)).quantize(CENT, rounding=ROUND_HALF_UP)
    tokens = beat.tokens_in + beat.tokens_out
    if not cost and tokens and beat.model in batch.prices:
        # Tokens without a cost: priced from the model's row in the price table.
        per_in, per_out = batch.prices[beat.model]
        cost = ((per_in * beat.tokens_in + per_out * beat.tokens_out) / 1_000_000).quantize(
            CENT, rounding=ROUND_HALF_UP
        )
    budgets = [b for b in batch.budgets if b.covers(agent.pk, task)]
    if beat.tokens_in or beat.tokens_out or cost:
        if agent.session_id is None:
            agent.session_id = AgentSession.objects.create(agent_id=agent.pk).pk
        batch.spend.append(
            SpendEvent(
                agent_id=agent.pk,
                session_id=agent.session_id,
                task_id=task.pk if task else None,
                model_name=beat.model,
                tokens_in=beat.tokens_in,
                tokens_out=beat.tokens_out,
                cost_usd=cost,
                created_at=batch.now,
            )
        )
        agent.spent_usd += cost
        agent.tokens_used += beat.tokens_in + beat.tokens_out
    if agent.session_id is not None and (cost or tokens or pct is not None):
        # The session's running totals and its context peak.
        usd, used, latest, peak = batch.sessions.get(agent.session_id, [CENT * 0, 0, None, 0])
        batch.sessions[agent.session_id] = [
            usd + cost,
            used + tokens,
            pct if pct is not None else latest,
            max(peak, pct or 0),
        ]
    newly_spent = []
    if cost or tokens:
        # Spend counts against every budget in scope; a stored total stops at its cap
        # (the database refuses more), and reaching it means "stop" for every agent
        # the budget covers.
        for budget in budgets:
            was_spent, was = budget.cap_reached, budget.fraction_used or 0.0
            total = budget.spent_usd + cost
            budget.spent_usd = total if budget.limit_usd is None else min(total, budget.limit_usd)
            used = budget.spent_tokens + tokens
            budget.spent_tokens = (
                used if budget.limit_tokens is None else min(used, budget.limit_tokens)
            )
            budget.updated_at = batch.now
            batch.dirty_budgets[budget.pk] = budget
            if budget.cap_reached and not was_spent:
                newly_spent.append(budget)
                batch.crossings.append((budget.pk, "budget_spent"))
            elif was < WARN_AT <= (budget.fraction_used or 0.0):
                batch.crossings.append((budget.pk, "budget_warning"))
    if any(b.cap_reached for b in budgets) and agent.status != Agent.STOPPED:
        _stop_for_budget(agent, [b for b in budgets if b.cap_reached], newly_spent)
    if held and beat.liveness and agent.status != Agent.STOPPED:
        # A stopped agent's heartbeats keep no lease alive: its task goes back to ready
        # when the lease lapses, whatever the agent does. Spend reports are not liveness.
        task.lease_expires_at = batch.now + timedelta(seconds=settings.FLEET_LEASE_TTL)
        batch.dirty_tasks[task.pk] = task
        batch.claimants.add(agent.pk)
    left = budget_left(budgets)
    repository_id = task.repository_id if task else agent.repository_id
    line = batch.thresholds.get(repository_id, settings.FLEET_CONTEXT_ROTATE_PCT)
    rotate = pct is not None and pct >= line
    if rotate and agent.status in (Agent.IDLE, Agent.WORKING, Agent.REVIEWING):
        # Past the rotation line: the agent is rotating until its next session boots
        # (which then ends this session as "rotated", not "crashed"). One Event.
        rotating = Agent.objects.get(pk=agent.pk)
        rotating.rotate(by=rotating)
        agent.status = rotating.status
    return {
        "status": agent.status,
        "rotate": rotate,
        "stop": agent.status == Agent.STOPPED or left == 0,
        "inbox": agent.unread,
        "lease_expires_at": task.lease_expires_at if held else None,
        "epoch": task.lease_epoch if held else None,
        "budget_left_usd": left,
        "context_pct": agent.context_pct,
        "rotate_at_pct": line,
    }


def context_of(beat: Beat, agent: AgentRow, now: datetime) -> int | None:
    """The context use a beat reports, or estimates from its proxies (tool calls and
    files read this session, and the session's age); None when it says nothing."""
    if beat.context_pct is not None:
        return beat.context_pct
    if beat.tool_calls is None and beat.files_read is None:
        return None
    minutes = (
        (now - agent.session_started_at).total_seconds() / 60 if agent.session_started_at else 0
    )
    estimate = (
        (beat.tool_calls or 0) * settings.FLEET_CONTEXT_PER_TOOL_CALL
        + (beat.files_read or 0) * settings.FLEET_CONTEXT_PER_FILE_READ
        + minutes * settings.FLEET_CONTEXT_PER_MINUTE
    )
    return max(0, min(100, round(estimate)))


def _stop_for_budget(agent: AgentRow, spent: list[BudgetRow], newly: list[BudgetRow]) -> None:
    """The server's layer: an agent past a cap is stopped (budget) in the transaction
    that recorded the spend, and so is every other agent a budget that was spent just
    now covers. Rare, so it goes through the models (and their Events)."""
    from fleet import budgets

    stopping = Agent.objects.get(pk=agent.pk)
    if stopping.status != Agent.STOPPED:
        stopping.stop(reason="budget")
    agent.status = Agent.STOPPED
    for row in newly:
        # The other agents in scope are stopped right after this batch commits, each in
        # its own transaction: locking their rows here, after the budgets, could
        # deadlock with a batch that holds them and waits for a budget.
        transaction.on_commit(functools.partial(budgets.stop_in_scope_later, row.pk), robust=True)


def _write(batch: _Batch) -> None:
    _update_rows(
        Agent,
        batch.dirty_agents.values(),
        ["last_heartbeat_at", "context_pct", "status_line", "spent_usd", "tokens_used"],
    )
    _update_rows(Task, batch.dirty_tasks.values(), ["lease_expires_at"])
    _update_sessions(batch)
    dirty = sorted(batch.dirty_budgets.values(), key=lambda b: b.pk)
    _update_rows(
        Budget, [b for b in dirty if b.locked], ["spent_usd", "spent_tokens", "updated_at"]
    )
    _renew_claims(batch)
    _insert_rows(
        SpendEvent,
        batch.spend,
        [
            "agent",
            "session",
            "task",
            "model_name",
            "tokens_in",
            "tokens_out",
            "cost_usd",
            "created_at",
        ],
    )
    # Last: these rows are every batch's, so they stay locked only from here to commit.
    _add_to_totals([b for b in dirty if not b.locked], batch.now)


def _add_to_totals(budgets: list[BudgetRow], now: datetime) -> None:
    """Add the batch's spend to running totals read without a lock (in id order). Should
    a person have set a cap on one meanwhile, its total stops at the cap, as everywhere
    (the database refuses more); the next batch, or the worker's sweep, stops the
    agents it covers."""
    if not budgets:
        return
    usd = Budget._meta.get_field("spent_usd")
    at = _when(now)
    sql = _add_to_totals_sql(connection.vendor)
    params = []
    for b in budgets:
        more_usd = usd.get_db_prep_save(b.spent_usd - b.loaded_usd, connection)
        more_tokens = b.spent_tokens - b.loaded_tokens
        params.append([more_usd, more_usd, more_tokens, more_tokens, at, b.pk])
    _execute(sql, params)


@functools.lru_cache(maxsize=4)
def _add_to_totals_sql(vendor: str) -> str:
    def clamped(spent: str, limit: str) -> str:
        s, cap = _col(Budget, spent), _col(Budget, limit)
        return f"{s} = CASE WHEN {cap} IS NULL OR {s} + %s <= {cap} THEN {s} + %s ELSE {cap} END"

    return (
        f"UPDATE {_table(Budget)} SET {clamped('spent_usd', 'limit_usd')},"
        f" {clamped('spent_tokens', 'limit_tokens')}, {_col(Budget, 'updated_at')} = %s"
        f" WHERE {_col(Budget, 'id')} = %s"
    )


def _update_sessions(batch: _Batch) -> None:
    """Add each session's spend and raise its context peak (one statement per session;
    the session row is the agent's, which this batch holds locked)."""
    if not batch.sessions:
        return
    s = {name: _col(AgentSession, name) for name in ("spent_usd", "tokens_used")}
    s |= {name: _col(AgentSession, name) for name in ("context_pct", "context_peak", "id")}
    sql = (
        f"UPDATE {_table(AgentSession)} SET {s['spent_usd']} = {s['spent_usd']} + %s,"
        f" {s['tokens_used']} = {s['tokens_used']} + %s,"
        f" {s['context_pct']} = COALESCE(%s, {s['context_pct']}),"
        f" {s['context_peak']} = CASE WHEN {s['context_peak']} < %s THEN %s"
        f" ELSE {s['context_peak']} END WHERE {s['id']} = %s"
    )
    money = AgentSession._meta.get_field("spent_usd")
    params = [
        [money.get_db_prep_save(usd, connection), used, pct, peak, peak, pk]
        for pk, (usd, used, pct, peak) in sorted(batch.sessions.items())
    ]
    _execute(sql, params)


def _renew_claims(batch: _Batch) -> None:
    """A heartbeat keeps its agent's live claims alive for another claim TTL (about
    three heartbeat intervals); a lapsed claim stays lapsed."""
    if not batch.claimants:
        return
    ids = sorted(batch.claimants)
    expires = batch.now + timedelta(seconds=settings.FLEET_CLAIM_TTL)
    field = FileClaim._meta.get_field("expires_at")
    sql = (
        f"UPDATE {_table(FileClaim)} SET {_col(FileClaim, 'expires_at')} = %s"
        f" WHERE {_col(FileClaim, 'released_at')} IS NULL"
        f" AND {_col(FileClaim, 'expires_at')} > %s"
        f" AND {_col(FileClaim, 'agent')} IN ({_marks(ids)})"
    )
    params = [
        field.get_db_prep_save(expires, connection),
        field.get_db_prep_save(batch.now, connection),
        *ids,
    ]
    _execute(sql, [params])
