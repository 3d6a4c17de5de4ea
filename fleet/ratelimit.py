"""The per-agent rate limit: a fixed window counted in the cache (Redis when
REDIS_URL is set, so every web process shares the count). One cache increment per
call; the rate is read from settings (FLEET_API_RATE, e.g. "1200/m") on every call."""

from __future__ import annotations

import functools
import logging
import time

from django.conf import settings
from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.signals import setting_changed
from django.dispatch import receiver

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

log = logging.getLogger("fleet.ratelimit")
# While the shared cache (Redis) is out of reach, each process counts on its own: the
# limits still hold per process, and the API keeps answering (the database, not the
# cache, is the source of truth).
_LOCAL = LocMemCache("fleet-ratelimit-fallback", {"MAX_ENTRIES": 100_000})
RETRY_SHARED = 5.0  # seconds before the shared cache is tried again after a failure
_shared_down_until = 0.0


@functools.cache
def _shared():
    """The default cache, one client per process. ``django.core.cache.cache`` is one
    per context under ASGI, so every call on a lean route (each runs in a fresh
    context) opened a new Redis connection: ~40% of a claim's time, profiled."""
    return caches.create_connection(DEFAULT_CACHE_ALIAS)


@receiver(setting_changed)
def _caches_changed(*, setting: str, **kwargs) -> None:
    if setting == "CACHES":
        _shared.cache_clear()


def _store():
    """The shared cache, unless it failed in the last few seconds (a circuit breaker:
    an unreachable Redis costs one timeout per RETRY_SHARED, not one per call)."""
    return _LOCAL if time.monotonic() < _shared_down_until else _shared()


def _shared_failed(exc: Exception) -> None:
    global _shared_down_until
    if time.monotonic() >= _shared_down_until:
        log.warning("the cache is out of reach (%s); counting in this process", exc)
    _shared_down_until = time.monotonic() + RETRY_SHARED


def _count(key: str, period: int) -> int:
    store = _store()
    try:
        try:
            return store.incr(key)
        except ValueError:  # the window's first call
            return 1 if store.add(key, 1, period + 1) else store.incr(key)
    except ValueError:
        raise
    except Exception as exc:
        if store is _LOCAL:
            raise
        _shared_failed(exc)
        return _count(key, period)


def _read(key: str) -> int:
    store = _store()
    try:
        return store.get(key) or 0
    except Exception as exc:
        if store is _LOCAL:
            raise
        _shared_failed(exc)
        return _LOCAL.get(key) or 0


def parse_rate(rate: str) -> tuple[int, int]:
    """``"1200/m"`` → (1200, 60)."""
    count, _, period = rate.partition("/")
    return int(count), PERIODS[period.strip()[:1].lower()]


RATE_LIMITED = "too many requests from this agent"  # the 429's words, on every route


def hit(ident: str, rate: str | None = None) -> float | None:
    """Count one call by a caller (an agent, keyed by its token's hash): None when
    allowed, else seconds until it may call again. A fixed window: across a window's
    edge up to twice the rate can pass, the usual trade for one increment per call."""
    return hit_many([ident], rate)[0]


def hit_many(idents: list[str], rate: str | None = None) -> list[float | None]:
    """``hit`` for each caller of a batch (a caller may appear more than once), in one
    round trip to Redis."""
    limit, period = parse_rate(rate or settings.FLEET_API_RATE)
    now = time.time()
    window = int(now // period)
    counts = _count_many([f"fleet:rate:{ident}:{window}" for ident in idents], period)
    return [(window + 1) * period - now if count > limit else None for count in counts]


# Count, and give a key without an expiry the window's (whichever call made it),
# atomically: a key never outlives its window.
_COUNT = """
local n = redis.call('INCR', KEYS[1])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return n
"""


def _count_many(keys: list[str], period: int) -> list[int]:
    store = _store()
    client = getattr(getattr(store, "_cache", None), "get_client", None)
    if store is _LOCAL or client is None:  # not Redis: the cache's own increments
        return [_count(key, period) for key in keys]
    try:
        # One pipeline for the batch, where the cache's ``incr`` costs two round trips
        # per key (exists, incr). EVAL, not a registered script: Redis keeps the compiled
        # script either way, and redis-py's pipelined scripts ask SCRIPT EXISTS first.
        pipeline = client(None, write=True).pipeline(transaction=False)
        for key in keys:
            pipeline.eval(_COUNT, 1, store.make_and_validate_key(key), period + 1)
        return [int(count) for count in pipeline.execute()]
    except Exception as exc:
        _shared_failed(exc)
        return [_count(key, period) for key in keys]


def spent(ident: str, rate: str) -> float | None:
    """Without counting: None while ``ident`` is within ``rate`` in this window, else
    seconds until the window ends."""
    limit, period = parse_rate(rate)
    now = time.time()
    window = int(now // period)
    if _read(f"fleet:rate:{ident}:{window}") >= limit:
        return (window + 1) * period - now
    return None
