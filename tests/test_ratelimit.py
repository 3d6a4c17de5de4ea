"""The per-agent rate limit's counting, on whichever cache the pass runs with (the
in-memory one, or Redis in CI's second pass)."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.core.cache import cache

from fleet import ratelimit


@pytest.fixture(autouse=True)
def _fresh_counts():
    cache.clear()
    yield
    cache.clear()


def test_a_batch_counts_each_call_in_order():
    waits = ratelimit.hit_many(["a", "a", "b", "a", "a"], "3/m")
    assert waits[:4] == [None] * 4  # a's first three calls and b's first
    assert 0 < waits[4] <= 60  # a's fourth
    assert ratelimit.hit("b", "3/m") is None and ratelimit.spent("a", "3/m")
    assert ratelimit.spent("b", "3/m") is None


def test_a_count_never_outlives_its_window():
    if not settings.REDIS_URL:
        pytest.skip("Redis: the in-memory cache's entries carry their own expiry")
    import redis

    shared = redis.Redis.from_url(settings.REDIS_URL)
    window = int(time.time() // 60)
    ratelimit.hit("fresh", "5/m")
    # A key left without an expiry (by an interrupted count) gets the window's too.
    stuck = cache.make_and_validate_key(f"fleet:rate:stuck:{window}")
    shared.set(stuck, 2)
    assert ratelimit.hit("stuck", "5/m") is None
    for key in (cache.make_and_validate_key(f"fleet:rate:fresh:{window}"), stuck):
        assert 0 < shared.ttl(key) <= 61, key
    assert int(shared.get(stuck)) == 3
