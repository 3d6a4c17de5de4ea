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


def hit(ident: str, rate: str | None = None) -> float | None:
    """Count one call by a caller (an agent, keyed by its token's hash): None when
    allowed, else seconds until it may call again. A fixed window: across a window's
    edge up to twice the rate can pass, the usual trade for one increment per call."""
    limit, period = parse_rate(rate or settings.FLEET_API_RATE)
    now = time.time()
    window = int(now // period)
    key = f"fleet:rate:{ident}:{window}"
    try:
        count = cache.incr(key)
    except ValueError:  # the window's first call
        count = 1 if cache.add(key, 1, period + 1) else cache.incr(key)
    if count > limit:
        return (window + 1) * period - now
    return None


def spent(ident: str, rate: str) -> float | None:
    """Without counting: None while ``ident`` is within ``rate`` in this window, else
    seconds until the window ends."""
    limit, period = parse_rate(rate)
    now = time.time()
    window = int(now // period)
    if (cache.get(f"fleet:rate:{ident}:{window}") or 0) >= limit:
        return (window + 1) * period - now
    return None
