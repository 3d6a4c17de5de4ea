"""The per-agent rate limit: a fixed window counted in the cache (Redis when
REDIS_URL is set, so every web process shares the count). One cache increment per
call; the rate is read from settings (FLEET_API_RATE, e.g. "1200/m") on every call."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.cache import cache

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"1200/m"`` → (1200, 60)."""
    count, _, period = rate.partition("/")
    return int(count), PERIODS[period.strip()[:1].lower()]


def hit(agent_id: int) -> float | None:
    """Count one call by the agent: None when allowed, else seconds until it may
    call again."""
    limit, period = parse_rate(settings.FLEET_API_RATE)
    now = time.time()
    window = int(now // period)
    key = f"fleet:rate:{agent_id}:{window}"
    try:
        count = cache.incr(key)
    except ValueError:  # the window's first call
        count = 1 if cache.add(key, 1, period + 1) else cache.incr(key)
    if count > limit:
        return (window + 1) * period - now
    return None
