"""``fleet_bench live``: N agents heartbeating once a second and M dashboards watching
the overview over websockets, against one daphne process: how long from a heartbeat's
POST to the frame that shows it at each dashboard, frames per dashboard per second
(the mean and the busiest dashboard's), and the web process's memory; with the
in-memory channel layer, then with Redis when one is given."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time

import websockets

from fleet.bench.heartbeat import INHERIT, _run_module, bench_site
from fleet.bench.load import encode, json_request, percentile_ms, read_response
from fleet.bench.servers import Server, free_port

TARGETS = {"p50_ms": 100, "p99_ms": 300, "frames_per_client_s": 5, "rss_mb": 250, "errors": 0}
MARK = re.compile(rb"(beat|quiet):(\d+):(\d+\.\d+)")
# The quiet phase, after the steady one: a fleet as it mostly is, 20 agents beating
# every 10 s at random moments (two beats a second, most of them after a fifth of a
# second without one: the leading edge's case); the other agents are silent.
QUIET_AGENTS, QUIET_PERIOD, PAUSE = 20, 10.0, 2.0


async def _agent(port: int, agent: dict, index: int, beats: dict, stats: dict) -> None:
    """Beats at ``beats["first"]``, then every ``beats["every"]`` seconds until
    ``beats["until"]``, each carrying its tag and when it was sent in its status line."""
    next_at = beats["first"]
    if next_at >= beats["until"]:
        return
    # Connected just before the first beat: a quiet agent's connection would otherwise
    # sit idle long enough for the server to close it.
    await asyncio.sleep(max(0.0, next_at - 0.5 - time.monotonic()))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while next_at < beats["until"]:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at += beats["every"]
            line = f"{beats['tag']}:{index}:{time.time():.3f}"
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
    """Connect, take the snapshot, then keep every frame with when it arrived until
    the run ends (``clock`` is filled in once every dashboard is connected). The
    frames are read for heartbeats after the run: 50 dashboards share this one
    client process, and reading them here would delay the next dashboard's frame."""
    log: list[tuple[float, float, bytes]] = []
    headers = {"Cookie": cookie, "Origin": f"http://127.0.0.1:{port}"}
    url = f"ws://127.0.0.1:{port}/ws/fleet/?view=overview&ack=1"
    async with websockets.connect(
        url, additional_headers=headers, max_size=None, open_timeout=120
    ) as ws:
        await asyncio.wait_for(ws.recv(), timeout=120)  # the snapshot
        await ws.send("ack")
        unacked, acked_at = 0, time.monotonic()
        stats["ready"] += 1
        await clock["go"].wait()
        until = clock["end"] + 1
        while time.monotonic() < until:
            try:
                frame = await asyncio.wait_for(
                    ws.recv(decode=False), timeout=max(0.1, until - time.monotonic())
                )
            except TimeoutError:
                break
            log.append((time.time(), time.monotonic(), frame))
            unacked += 1  # acknowledged as live.js does: a few at a time, twice a second
            if log[-1][1] - acked_at >= 0.5:
                await ws.send(f"ack:{unacked}")
                unacked, acked_at = 0, log[-1][1]
    stats["logs"].append(log)


def _phase(logs: list, tag: bytes, seen_from: float, frames_from: float, until: float) -> dict:
    """One phase's figures from the dashboards' frames: each beat of ``tag`` counts
    once per dashboard, at the first frame that shows it (from ``seen_from`` on);
    frames are counted from ``frames_from`` to ``until``."""
    latencies, per_dashboard, size = [], [], 0
    for log in logs:
        seen: set[bytes] = set()
        frames = 0
        for now, mono, frame in log:
            if frames_from <= mono < until:
                frames += 1
                size += len(frame)
            for match in MARK.finditer(frame):
                key = match.group(0)
                if key in seen:
                    continue
                seen.add(key)
                if match.group(1) == tag and mono >= seen_from:
                    latencies.append(now - float(match.group(3)))
        per_dashboard.append(frames)
    seconds, dashboards = until - frames_from, max(1, len(logs))
    figures = {
        "p50_ms": round(percentile_ms(latencies, 50), 1),
        "p99_ms": round(percentile_ms(latencies, 99), 1),
        "seen": len(latencies),
        "frames_per_client_s": round(sum(per_dashboard) / dashboards / seconds, 2),
        "frames_per_client_s_max": round(max(per_dashboard, default=0) / seconds, 2),
        "kib_per_client_s": round(size / 1024 / dashboards / seconds, 1),
    }
    figures["met"] = {
        "p50_ms": figures["p50_ms"] <= TARGETS["p50_ms"],
        "p99_ms": figures["p99_ms"] <= TARGETS["p99_ms"],
        "frames_per_client_s": figures["frames_per_client_s_max"] <= TARGETS["frames_per_client_s"],
    }
    return figures


async def _drive(port, agents, cookie, dashboards, seconds, warmup, quiet) -> dict:
    """Dashboards connect first (their snapshots are not what is measured); then the
    agents beat for warmup + seconds, and only the last ``seconds`` count (the steady
    phase); then, after a pause, the quiet phase for ``quiet`` seconds."""
    stats: dict = {"sent": 0, "errors": [], "ready": 0, "logs": []}
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
    steady_end = start + warmup + seconds
    quiet_from = steady_end + PAUSE
    clock.update(measure_from=start + warmup, until=steady_end, quiet_from=quiet_from)
    clock["end"] = quiet_from + quiet if quiet else steady_end
    clock["go"].set()
    beating = [
        _agent(
            port,
            agent,
            i,
            {"tag": "beat", "first": start + (i % 100) / 100, "every": 1.0, "until": steady_end},
            stats,
        )
        for i, agent in enumerate(agents)
    ]
    if quiet:
        moments = random.Random(7)  # the same run every time
        beating += [
            _agent(
                port,
                agent,
                i,
                {
                    "tag": "quiet",
                    "first": quiet_from + moments.uniform(0, QUIET_PERIOD),
                    "every": QUIET_PERIOD,
                    "until": clock["end"],
                },
                stats,
            )
            for i, agent in enumerate(agents[:QUIET_AGENTS])
        ]
    await asyncio.gather(*watchers, *beating)
    stats["steady"] = _phase(
        stats["logs"], b"beat", clock["measure_from"], clock["measure_from"], steady_end
    )
    if quiet:
        stats["quiet"] = _phase(stats["logs"], b"quiet", quiet_from, quiet_from, clock["end"])
    return stats


def run(
    *,
    agents: int = 500,
    dashboards: int = 50,
    seconds: float = 20,
    warmup: float = 3,
    quiet: float = 20,
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
        if quiet:
            progress(
                f"… then {quiet:g} s quiet: {min(agents, QUIET_AGENTS)} agents beating "
                f"every {QUIET_PERIOD:g} s"
            )
        with server:
            stats = asyncio.run(
                _drive(server.port, seeded["agents"], cookie, dashboards, seconds, warmup, quiet)
            )
            rss = server.rss_kb()
    results.update(stats["steady"])
    results.update(
        {
            "heartbeats_sent": stats["sent"],
            "errors": len(stats["errors"]),
            "error_samples": stats["errors"][:5],
            "rss_mb": round(rss / 1024, 1) if rss else None,
            "targets": TARGETS,
        }
    )
    results["met"].update(
        rss_mb=(results["rss_mb"] or 0) <= TARGETS["rss_mb"],
        errors=results["errors"] <= TARGETS["errors"],
    )
    if quiet:
        results["quiet"] = stats["quiet"] | {
            "seconds": quiet,
            "agents": min(agents, QUIET_AGENTS),
            "every_s": QUIET_PERIOD,
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
    def ok(figures: dict, key: str) -> str:
        return "met" if figures["met"][key] else "MISSED"

    def latency(figures: dict) -> str:
        return (
            f"p50 {figures['p50_ms']} ms ({ok(figures, 'p50_ms')}, ≤ {TARGETS['p50_ms']})   "
            f"p99 {figures['p99_ms']} ms ({ok(figures, 'p99_ms')}, ≤ {TARGETS['p99_ms']})   "
            f"({figures['seen']} sightings)"
        )

    def frames(figures: dict) -> str:
        return (
            f"frames per dashboard per second {figures['frames_per_client_s']}, busiest "
            f"{figures['frames_per_client_s_max']} ({ok(figures, 'frames_per_client_s')}, ≤ "
            f"{TARGETS['frames_per_client_s']}), {figures['kib_per_client_s']} KiB/s each"
        )

    lines = [
        f"fleet_bench live: {r['agents']} agents at 1/s, {r['dashboards']} dashboards, "
        f"{r['seconds']:g} s, {r['database']} + {r.get('channel_layer', '?')} channel layer, "
        f"{r['cpus']} CPUs",
        f"  steady: heartbeat → dashboard  {latency(r)}",
        "    (at five frames a second, a beat of a steady stream waits 100 ms for its frame "
        "at the median before any work: see docs/benchmarks.md)",
        f"  steady: {frames(r)}",
    ]
    if "quiet" in r:
        q = r["quiet"]
        lines += [
            f"  quiet ({q['agents']} agents beating every {q['every_s']:g} s, {q['seconds']:g} s): "
            f"heartbeat → dashboard  {latency(q)}",
            f"  quiet: {frames(q)}",
        ]
    return "\n".join(
        [
            *lines,
            f"  web RSS {r['rss_mb']} MB ({ok(r, 'rss_mb')}, ≤ {TARGETS['rss_mb']})",
            f"  heartbeats sent {r['heartbeats_sent']}, errors {r['errors']} ({ok(r, 'errors')})",
        ]
    )


def tables(results: dict) -> str:
    """``table`` for each channel layer of ``run_layers``."""
    return "\n".join(table(figures) for figures in results["layers"].values())
