"""File claims' statements in plain SQL: the claim route is hot (every agent claims
before it edits), and the ORM's query construction cost more than the database work
(profiled: 14 statements and ~8 ms of Python per claim and release on PostgreSQL).
``dispatch.claim`` and ``dispatch.release`` keep the rules; this module only reads
and writes rows. The SQL is built once per process and database vendor."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import NamedTuple

from django.db import connection

from fleet.models import Agent, Event, FileClaim, SharedFile, Task, Wave
from fleet.models.base import after_event
from fleet.rawsql import (
    aware,
    col,
    cols,
    execute,
    for_update,
    insert_rows,
    marks,
    rows,
    table,
    when,
)

_STRATEGIES = (SharedFile.OWNER, SharedFile.CONTRACT)
_WAVES = (Wave.APPROVED, Wave.RUNNING, Wave.BLOCKED)
_OPEN = tuple(sorted(Task.OPEN_STATES))
_CLAIM = ("id", "repository", "task", "agent", "path", "mode", "created_at", "expires_at")


@functools.lru_cache(maxsize=4)
def _sql(vendor: str) -> dict[str, str]:
    c = {name: col(FileClaim, name) for name in (*_CLAIM, "released_at")}
    a_id, t_id = col(Agent, "id"), col(Task, "id")
    claim_cols = ", ".join(f"c.{c[name]}" for name in _CLAIM)
    return {
        # The agent's row locked (a stop or a lease expiry waits for this claim) ...
        "agent": (
            f"SELECT {cols(Agent, 'status', 'stop_reason')} FROM {table(Agent)}"
            f" WHERE {a_id} = %s{for_update()}"
        ),
        # ... then its task's state read, by a statement of its own: one that waited
        # for the lock sees what committed meanwhile (a joined row would come from the
        # snapshot taken before the wait, on PostgreSQL).
        "task": f"SELECT {cols(Task, 'status', 'assignee')} FROM {table(Task)} WHERE {t_id} = %s",
        # The path's current writer (read claims share a path), only its row locked.
        "writer": (
            f"SELECT {claim_cols}, a.{col(Agent, 'name')}, t.{col(Task, 'key')}"
            f" FROM {table(FileClaim)} c"
            f" JOIN {table(Agent)} a ON a.{a_id} = c.{c['agent']}"
            f" JOIN {table(Task)} t ON t.{t_id} = c.{c['task']}"
            f" WHERE c.{c['repository']} = %s AND c.{c['path']} = %s"
            f" AND c.{c['released_at']} IS NULL AND c.{c['mode']} <> '{FileClaim.READ}'"
            f" LIMIT 1{for_update('c')}"
        ),
        "extend": f"UPDATE {table(FileClaim)} SET {c['expires_at']} = %s WHERE {c['id']} = %s",
        "end": f"UPDATE {table(FileClaim)} SET {c['released_at']} = %s WHERE {c['id']} = %s",
        # A first claim racing another one for a free path (PostgreSQL: SQLite's write
        # lock lets no other claim in): the unique constraint decides, and the loser
        # gets no row back (no exception, no savepoint).
        "insert": (
            f"INSERT INTO {table(FileClaim)}"
            f" ({cols(FileClaim, *_CLAIM[1:])}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            + (
                f" ON CONFLICT ({c['repository']}, {c['path']}) WHERE {c['released_at']}"
                f" IS NULL AND {c['mode']} = '{FileClaim.WRITE}' DO NOTHING"
                if vendor == "postgresql"
                else ""
            )
            + f" RETURNING {c['id']}"
        ),
        # Released by its agent: the row as the answer needs it (its task's key too).
        "release": (
            f"UPDATE {table(FileClaim)} SET {c['released_at']} = %s"
            f" WHERE {c['id']} = %s AND {c['agent']} = %s AND {c['released_at']} IS NULL"
            f" RETURNING {cols(FileClaim, *_CLAIM, 'released_at')},"
            f" (SELECT t.{col(Task, 'key')} FROM {table(Task)} t"
            f" WHERE t.{t_id} = {table(FileClaim)}.{c['task']})"
        ),
        "own": (
            f"SELECT {claim_cols}, c.{c['released_at']}, t.{col(Task, 'key')}"
            f" FROM {table(FileClaim)} c JOIN {table(Task)} t ON t.{t_id} = c.{c['task']}"
            f" WHERE c.{c['id']} = %s AND c.{c['agent']} = %s"
        ),
    }


@functools.lru_cache(maxsize=4)
def _decisions_sql(vendor: str) -> str:
    sf = {n: col(SharedFile, n) for n in ("id", "path", "strategy", "repository", "wave")}
    owner = col(SharedFile, "owner_task")
    m2m = SharedFile.tasks.through
    t_id = col(Task, "id")
    return (
        f"SELECT sf.{sf['path']}, sf.{sf['strategy']}, o.{col(Task, 'key')}"
        f" FROM {table(SharedFile)} sf"
        f" JOIN {table(Wave)} w ON w.{col(Wave, 'id')} = sf.{sf['wave']}"
        f" LEFT JOIN {table(Task)} o ON o.{t_id} = sf.{owner}"
        f" WHERE sf.{sf['repository']} = %s AND sf.{sf['strategy']} IN ({marks(_STRATEGIES)})"
        f" AND w.{col(Wave, 'status')} IN ({marks(_WAVES)})"
        f" AND (sf.{owner} IS NULL OR sf.{owner} <> %s)"
        f" AND (o.{col(Task, 'status')} IN ({marks(_OPEN)})"
        f" OR EXISTS (SELECT 1 FROM {table(m2m)} m"
        f" WHERE m.{col(m2m, 'sharedfile')} = sf.{sf['id']} AND m.{col(m2m, 'task')} = %s))"
        f" ORDER BY sf.{sf['path']}"
    )


def decisions(task: Task) -> list[tuple[str, str, str]]:
    """(path glob, strategy, owner's key) of the owner/contract decisions of approved
    (not yet merged) waves that give a path to another task: those made about this
    task, and any whose owner is still at work; by path."""
    return rows(
        _decisions_sql(connection.vendor),
        [task.repository_id, *_STRATEGIES, *_WAVES, task.pk, *_OPEN, task.pk],
    )


@functools.lru_cache(maxsize=8)
def _lookup_sql(model, by: str, names: tuple[str, ...], vendor: str) -> tuple[str, list[str]]:
    # In the model's field order: ``from_db`` fills the rest in by that order.
    fields = [f for f in model._meta.concrete_fields if f.name in names]
    sql = f"SELECT {cols(model, *(f.name for f in fields))} FROM {table(model)}"
    return f"{sql} WHERE {col(model, by)} = %s", [f.attname for f in fields]


def _lookup(model, by: str, value, names: tuple[str, ...]):
    """The row whose unique ``by`` is ``value``, as an instance with only ``names``
    loaded (the rest is read from the database if something asks for it), or None."""
    sql, attnames = _lookup_sql(model, by, names, connection.vendor)
    found = rows(sql, [value])
    return model.from_db(connection.alias, attnames, found[0]) if found else None


_AGENT = ("id", "name", "role", "token_revoked_at")
_TASK = ("id", "key", "status", "assignee", "read_only", "repository", "wave")


def agent_by_token(token_hash: str) -> Agent | None:
    """What the claim route needs of the token's agent."""
    return _lookup(Agent, "token_hash", token_hash, _AGENT)


def task_by_key(key: str) -> Task | None:
    """What a claim needs of its task."""
    task = _lookup(Task, "key", key, _TASK)
    if task is not None:
        task.read_only = bool(task.read_only)  # SQLite hands back 0 or 1
    return task


def _q(name: str) -> str:
    return _sql(connection.vendor)[name]


def _claim(row, released_at=None) -> FileClaim:
    pk, repository_id, task_id, agent_id, path, mode, created_at, expires_at = row[:8]
    return FileClaim(
        id=pk,
        repository_id=repository_id,
        task_id=task_id,
        agent_id=agent_id,
        path=path,
        mode=mode,
        created_at=aware(created_at),
        expires_at=aware(expires_at),
        released_at=aware(released_at),
    )


def state(agent_id: int, task_id: int) -> tuple[str, str, str | None, int | None]:
    """(agent status, stop reason, task status, task assignee), the agent locked first;
    None for what was deleted meanwhile."""
    agent = rows(_q("agent"), [agent_id]) or [(None, "")]
    task = rows(_q("task"), [task_id]) or [(None, None)]
    return (*agent[0], *task[0])


class Held(NamedTuple):
    claim: FileClaim
    agent: str  # the holder's name
    task: str  # its task's key


def writer(repository_id: int, path: str) -> Held | None:
    """The path's unreleased write claim, locked, with its agent's name and task's key."""
    found = rows(_q("writer"), [repository_id, path])
    return Held(_claim(found[0]), found[0][8], found[0][9]) if found else None


def extend(claim: FileClaim, expires: datetime) -> None:
    execute(_q("extend"), [[when(expires), claim.pk]])
    claim.expires_at = expires


def end(claim: FileClaim, at: datetime) -> None:
    """Release a lapsed claim another task takes over in this transaction."""
    execute(_q("end"), [[when(at), claim.pk]])
    claim.released_at = at


def insert(*, task: Task, agent: Agent, path: str, mode: str, now, expires) -> FileClaim | None:
    """The new claim, or None when another agent's claim of the path won the race."""
    found = rows(
        _q("insert"),
        [task.repository_id, task.pk, agent.pk, path, mode, when(now), when(expires)],
    )
    if not found:
        return None
    made = FileClaim(
        id=found[0][0],
        repository_id=task.repository_id,
        path=path,
        mode=mode,
        created_at=now,
        expires_at=expires,
    )
    made.task, made.agent = task, agent
    return made


def release(agent: Agent, claim_id: int, now: datetime) -> tuple[FileClaim, bool] | None:
    """(the agent's claim, whether this call released it), or None: no such claim of
    this agent. An already released claim is answered as it is."""
    found = rows(_q("release"), [when(now), claim_id, agent.pk])
    released = bool(found)
    found = found or rows(_q("own"), [claim_id, agent.pk])
    if not found:
        return None
    claim = _claim(found[0], found[0][8])
    claim.agent = agent
    # The answer names the task: its key, the rest of the row loaded only if asked for.
    claim.task = Task.from_db(connection.alias, ["id", "key"], [claim.task_id, found[0][9]])
    return claim, released


def record(kind: str, *, by: Agent, **fields) -> None:
    """``Event.objects.record`` in plain SQL (no id needed back)."""
    event = Event.objects.build(kind, by=by, **fields)
    insert_rows(Event, [event], _EVENT)
    after_event()


_EVENT = [f.name for f in Event._meta.concrete_fields if not f.primary_key]
