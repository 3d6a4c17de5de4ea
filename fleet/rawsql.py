"""Plain SQL built from the models' own table and column names, for the hot paths
(heartbeat batches, file claims): there the ORM's query construction cost more than
the database work (profiled). Quoting and locking follow the connection's vendor."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from django.db import connection, models
from django.utils import timezone


def table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def col(model, name: str) -> str:
    return connection.ops.quote_name(model._meta.get_field(name).column)


def cols(model, *names: str) -> str:
    return ", ".join(col(model, name) for name in names)


def marks(values) -> str:
    return ", ".join(["%s"] * len(values))


def for_update(of: str = "") -> str:
    """Row locks that leave foreign keys free: another transaction may still insert a
    row pointing at a locked agent (an event, a message) while it holds a task.
    ``of``: lock only that table (alias) of a join. SQLite has no row locks (its
    transactions take the write lock up front)."""
    if not connection.features.has_select_for_update:
        return ""
    lock = (
        " FOR NO KEY UPDATE" if connection.features.has_select_for_no_key_update else " FOR UPDATE"
    )
    return f"{lock} OF {of}" if of else lock


def aware(value: Any) -> datetime | None:
    """A datetime read with raw SQL as an aware one (SQLite hands back naive UTC
    values, or text from a subquery)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = models.DateTimeField().to_python(value)
    return timezone.make_aware(value, timezone.UTC) if timezone.is_naive(value) else value


def rows(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def when(value: datetime | None):
    """A datetime as the database stores it (an aware datetime for PostgreSQL, UTC text
    for SQLite), for a parameter of plain SQL."""
    return connection.ops.adapt_datetimefield_value(value)


def execute(sql: str, params: list[list]) -> None:
    """The statement once per parameter list: ``executemany`` for several, a plain
    ``execute`` for one (psycopg's ``executemany`` sets up a pipeline: costly for one)."""
    with connection.cursor() as cursor:
        if len(params) == 1:
            cursor.execute(sql, params[0])
        elif params:
            cursor.executemany(sql, params)


def update_rows(model, rows, names: list[str]) -> None:
    """One parameterized UPDATE per row.

    ``bulk_update`` builds a CASE expression per field and row, which costs more
    than the database work here. The rows are locked by this transaction and the
    values come from validated input, so plain per-row updates are safe.
    """
    rows = list(rows)
    if not rows:
        return
    sql, fields = statement("update", model, tuple(names), connection.vendor)
    execute(
        sql,
        [
            [f.get_db_prep_save(getattr(row, f.attname), connection) for f in fields] + [row.pk]
            for row in rows
        ],
    )


def insert_rows(model, objs, names: list[str]) -> None:
    """One parameterized ``INSERT`` per object, for the same reason (ids are not needed
    back)."""
    if not objs:
        return
    sql, fields = statement("insert", model, tuple(names), connection.vendor)
    execute(
        sql, [[f.get_db_prep_save(getattr(o, f.attname), connection) for f in fields] for o in objs]
    )


@functools.lru_cache(maxsize=32)
def statement(kind: str, model, names: tuple[str, ...], vendor: str) -> tuple[str, list]:
    """The UPDATE-by-id or INSERT for these fields, built once per process (the hot
    path runs it every batch). ``vendor`` keys the cache to the database's quoting."""
    fields = [model._meta.get_field(name) for name in names]
    if kind == "update":
        sql = "UPDATE {} SET {} WHERE {} = %s".format(
            table(model),
            ", ".join(f"{col(model, f.name)} = %s" for f in fields),
            col(model, model._meta.pk.name),
        )
    else:
        sql = f"INSERT INTO {table(model)} ({cols(model, *names)}) VALUES ({marks(fields)})"
    return sql, fields
