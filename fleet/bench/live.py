"""``fleet_bench live``: N agents heartbeating once a second and M dashboards watching
the overview over websockets, against one daphne process: how long from a heartbeat's
POST to the frame that shows it at each dashboard, frames per dashboard per second
(the mean and the busiest dashboard's), and the web process's memory; with the
in-memory channel layer, then with Redis when one is given."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time

import websockets

from fleet.bench.heartbeat import INHERIT, _run_module, bench_site
from fleet.bench.load import encode, json_request, percentile_ms, read_response
from fleet.bench.servers import Server, free_port

TARGETS = {"p50_ms": 100, "p99_ms": 300, "frames_per_client_s": 5, "rss_mb": 250, "errors": 0}
MARK = re.compile(rb"beat:(\d+):(\d+\.\d+)")


async def _agent(port: int, agent: dict, index: int, until: float, stats: dict) -> None:
    """One heartbeat a second, each carrying when it was sent in its status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    next_at = time.monotonic() + (index % 100) / 100  # spread over the second
    try:
        while time.monotonic() < until:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += 1.0
            line = f"beat:{index}:{time.time():.3f}"
            writer.write(
                encode(
                    *json_request(
                        "/api/v1/heartbeat",
                        {"context_pct": 20, "status_line": line},
                        agent["token"],
                    )
                )
            )
            status, body, _ = await asyncio.wait_for(read_response(reader), 30)
            stats["sent"] += 1
            if status != 200:
                stats["errors"].append(f"heartbeat HTTP {status}: {body[:120]!r}")
    finally:
        writer.close()


async def _dashboard(port: int, cookie: str, clock: dict, stats: dict) -> None:
    """Connect, take the snapshot, then count frames and heartbeat sightings until the
    run ends (``clock`` is filled in once every dashboard is connected)."""
    seen: set[str] = set()
    headers = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"}
    url = f"ws://127.0.0.1:{port}/ws/fleet/?view=overview&ack=1"
    async with websockets.connect(
        url, additional_headers=headers, max_size=None, open_timeout=120
    ) as ws:
        await asyncio.wait_for(ws.recv(), timeout=120)  # the snapshot
        await ws.send("ack")
        unacked, acked_at = 0, time.monotonic()
        stats["ready"] += 1
        frames = 0
        await clock["go"].wait()
        until, measure_from = clock["until"] + 1, clock["measure_from"]
        while time.monotonic() < until:
            try:
                # Bytes, not text: 50 dashboards share this one client process, and
                # decoding every frame would delay the next dashboard's reading.
                frame = await asyncio.wait_for(
                    ws.recv(decode=False), timeout=max(0.1, until - time.monotonic())
                )
            except TimeoutError:
                break
            now, mono = time.time(), time.monotonic()
            unacked += 1  # acknowledged as live.js does: a few at a time, twice a second
            if mono - acked_at >= 0.5:
                await ws.send(f"ack:{unacked}")
                unacked, acked_at = 0, mono
            if measure_from <= mono < clock["until"]:  # the measured seconds only
                frames += 1
                stats["frames"] += 1
                stats["bytes"] += len(frame)
            for match in MARK.finditer(frame):
                key = match.group(0)
                if key in seen:
                    continue
                seen.add(key)
                if mono >= measure_from:
                    stats["latencies"].append(now - float(match.group(2)))
    stats["per_dashboard"].append(frames)


async def _drive(port, agents, cookie, dashboards, seconds, warmup) -> dict:
    """Dashboards connect first (their snapshots are not what is measured); then the
    agents beat for warmup + seconds, and only the last ``seconds`` count."""
    stats = {"sent": 0, "errors": [], "frames": 0, "bytes": 0, "latencies": [], "ready": 0}
    stats["per_dashboard"] = []
    clock: dict = {"go": asyncio.Event()}
    watchers = [
        asyncio.create_task(_dashboard(port, cookie, clock, stats)) for _ in range(dashboards)
    ]
    deadline = time.monotonic() + 180
    while stats["ready"] < dashboards and time.monotonic() < deadline:
        if any(w.done() for w in watchers):
            for w in watchers:
                if w.done() and w.exception():
                    raise RuntimeError(f"a dashboard failed: {w.exception()!r}")
        await asyncio.sleep(0.1)
    start = time.monotonic()
    clock.update(measure_from=start + warmup, until=start + warmup + seconds)
    clock["go"].set()
    await asyncio.gather(
        *watchers, *(_agent(port, a, i, clock["until"], stats) for i, a in enumerate(agents))
    )
    return stats


def run(
    *,
    agents: int = 500,
    dashboards: int = 50,
    seconds: float = 20,
    warmup: float = 3,
    database_url: str | None = None,
    progress=print,
    redis_url: str | None = INHERIT,
) -> dict:
    results: dict = {"agents": agents, "dashboards": dashboards, "seconds": seconds}
    results["cpus"] = os.cpu_count()
    with bench_site("fleet-bench-live-", database_url, results, progress, redis_url) as (
        workdir,
        env,
    ):
        seeded = json.loads(
            _run_module(["-m", "fleet.bench.seed", "heartbeat", "--agents", str(agents)], env)
        )
        cookie = json.loads(_run_module(["-m", "fleet.bench.seed", "session"], env))["cookie"]
        server = Server(free_port(), workdir, env=env, access_log=False, inherit_env=False)
        progress(f"{agents} agents at 1 heartbeat/s, {dashboards} dashboards, {seconds:g} s …")
        with server:
            stats = asyncio.run(
                _drive(server.port, seeded["agents"], cookie, dashboards, seconds, warmup)
            )
            rss = server.rss_kb()
    lat = stats["latencies"]
    results.update(
        {
            "heartbeats_sent": stats["sent"],
            "errors": len(stats["errors"]),
            "error_samples": stats["errors"][:5],
            "p50_ms": round(percentile_ms(lat, 50), 1),
            "p99_ms": round(percentile_ms(lat, 99), 1),
            "seen": len(lat),
            "frames_per_client_s": round(stats["frames"] / dashboards / seconds, 2),
            "frames_per_client_s_max": round(max(stats["per_dashboard"], default=0) / seconds, 2),
            "kib_per_client_s": round(stats["bytes"] / 1024 / dashboards / seconds, 1),
            "rss_mb": round(rss / 1024, 1) if rss else None,
            "targets": TARGETS,
        }
    )
    results["met"] = {
        "p50_ms": results["p50_ms"] <= TARGETS["p50_ms"],
        "p99_ms": results["p99_ms"] <= TARGETS["p99_ms"],
        "frames_per_client_s": results["frames_per_client_s_max"] <= TARGETS["frames_per_client_s"],
        "rss_mb": (results["rss_mb"] or 0) <= TARGETS["rss_mb"],
        "errors": results["errors"] <= TARGETS["errors"],
    }
    return results


def run_layers(*, redis_url: str | None = None, progress=print, **options) -> dict:
    """``run`` with the in-memory channel layer, then with Redis at ``redis_url`` (if
    given): {"layers": {"memory": figures, "redis": figures}}."""
    layers = {"memory": None} | ({"redis": redis_url} if redis_url else {})
    results: dict = {"layers": {}}
    for name, url in layers.items():
        progress(f"== {name} channel layer ==")
        results["layers"][name] = run(redis_url=url, progress=progress, **options)
    return results


def table(r: dict) -> str:
    ok = lambda key: "met" if r["met"][key] else "MISSED"  # noqa: E731
    return "\n".join(
        [
            f"fleet_bench live: {r['agents']} agents at 1/s, {r['dashboards']} dashboards, "
            f"{r['seconds']:g} s, {r['database']} + {r.get('channel_layer', '?')} channel layer, "
            f"{r['cpus']} CPUs",
            f"  heartbeat → dashboard  p50 {r['p50_ms']} ms ({ok('p50_ms')}, ≤ "
            f"{TARGETS['p50_ms']})   p99 {r['p99_ms']} ms ({ok('p99_ms')}, ≤ {TARGETS['p99_ms']})"
            f"   ({r['seen']} sightings)",
            f"  frames per dashboard per second {r['frames_per_client_s']}, busiest "
            f"{r['frames_per_client_s_max']} ({ok('frames_per_client_s')}, ≤ "
            f"{TARGETS['frames_per_client_s']}), {r['kib_per_client_s']} KiB/s each",
            f"  web RSS {r['rss_mb']} MB ({ok('rss_mb')}, ≤ {TARGETS['rss_mb']})",
            f"  heartbeats sent {r['heartbeats_sent']}, errors {r['errors']} ({ok('errors')})",
        ]
    )


def tables(results: dict) -> str:
    """``table`` for each channel layer of ``run_layers``."""
    return "\n".join(table(figures) for figures in results["layers"].values())
