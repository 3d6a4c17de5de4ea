"""Running totals without a cap (the fleet's, a wave's, a repository's) are shared by
every heartbeat batch of every web process. On PostgreSQL a batch reads them without a
lock and adds its spend at its end: concurrent batches lose nothing, and a cap set on
one meanwhile still holds."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection, connections, transaction
from django.db.models import Sum

from fleet import heartbeats
from fleet.bench.seed import seed_heartbeat
from fleet.heartbeats import Beat, Pending
from fleet.models import Budget, SpendEvent, hash_token

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("row locks: PostgreSQL (SQLite's batches hold its one write lock)")


def beat(token: str, usd: float) -> Pending:
    return Pending(
        beat=Beat(context_pct=10, cost_usd=usd, tokens_in=7), token_hash=hash_token(token)
    )


def test_concurrent_batches_add_up_in_the_shared_totals():
    agents = seed_heartbeat(6)["agents"]
    barrier = threading.Barrier(3)
    failures: list[Exception] = []

    def batches(mine: list[dict]) -> None:
        try:
            barrier.wait()
            for _ in range(15):
                results = heartbeats.record([beat(a["token"], 0.07) for a in mine])
                failures.extend(r for r in results if isinstance(r, Exception))
        except Exception as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=batches, args=(agents[i::3],)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    spent = SpendEvent.objects.aggregate(usd=Sum("cost_usd"), tokens=Sum("tokens_in"))
    assert spent["usd"] == Decimal("6.30") and spent["tokens"] == 6 * 15 * 7
    for scope in ("fleet", "wave", "repository"):
        total = Budget.objects.get(scope=scope)
        assert total.limit_usd is None and total.spent_usd == spent["usd"], scope
        assert total.spent_tokens == spent["tokens"], scope


def test_a_cap_set_on_a_total_while_a_batch_runs_still_holds():
    agents = seed_heartbeat(2)["agents"]
    heartbeats.record([beat(agents[0]["token"], 1.0)])  # makes the running totals
    wave = Budget.objects.get(scope="wave")
    assert wave.limit_usd is None and wave.spent_usd == Decimal("1.00")
    loaded, capped = threading.Event(), threading.Event()
    failures: list[Exception] = []

    def batch() -> None:
        try:
            with transaction.atomic():
                pending = [beat(agents[1]["token"], 2.5)]
                state = heartbeats._load(pending)  # the totals read, not locked
                loaded.set()
                assert capped.wait(30)
                for item in pending:
                    heartbeats._apply(state, item)
                heartbeats._write(state)
        except Exception as exc:
            failures.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=batch)
    thread.start()
    assert loaded.wait(30)
    # A person caps the wave meanwhile (committed at once: the row was not locked).
    Budget.objects.filter(pk=wave.pk).update(limit_usd=Decimal("2.00"))
    capped.set()
    thread.join(timeout=60)
    assert failures == []
    wave.refresh_from_db()
    assert wave.spent_usd == Decimal("2.00")  # stopped at the cap, not refused
    assert Budget.objects.get(scope="fleet").spent_usd == Decimal("3.50")  # all of it
    assert SpendEvent.objects.aggregate(usd=Sum("cost_usd"))["usd"] == Decimal("3.50")
