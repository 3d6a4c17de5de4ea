"""``fleet_bench all``: every benchmark in turn, on SQLite and (when given) PostgreSQL +
Redis, then the soak; one table of every figure against its target, one JSON file."""

from __future__ import annotations

import os

from fleet.bench import gitbench, heartbeat, live, plan, simbench, soak

CLAIM_TARGETS = {"sqlite": 100, "postgresql": 200}  # claims per second
SCALE_TARGET = 1.7  # two web processes on PostgreSQL + Redis vs one
REDIS_LIVE_SLACK_MS = 50


def run(
    *,
    database_url: str | None,
    redis_url: str | None,
    soak_seconds: float = 600,
    quick: bool = False,
    progress=print,
    checkpoint=lambda figures: None,
) -> dict:
    """``quick``: short runs (a smoke test of the harness, not figures to quote).
    ``checkpoint(figures)`` is called after each benchmark (a late failure keeps the
    earlier figures)."""
    s = 2 if quick else 10
    out = _Figures(checkpoint, cpus=os.cpu_count(), quick=quick)
    progress("== heartbeats, SQLite, one process (daphne and uvicorn) ==")
    out["heartbeat_sqlite"] = heartbeat.run(
        agents=20,
        seconds=s,
        warmup=1 if quick else 2,
        servers=("daphne", "uvicorn"),
        redis_url=None,
        progress=progress,
    )
    if database_url:
        for n in (1, 2):
            progress(f"== heartbeats, PostgreSQL + Redis, {n} web process(es) ==")
            out[f"heartbeat_pg_{n}"] = heartbeat.run(
                agents=40,
                seconds=s,
                warmup=1 if quick else 2,
                database_url=database_url,
                redis_url=redis_url,
                processes=n,
                progress=progress,
            )
    layers = [None] + ([redis_url] if redis_url else [])
    for layer in layers:
        name = "redis" if layer else "memory"
        progress(f"== heartbeat → dashboard, SQLite + {name} channel layer ==")
        out[f"live_{name}"] = live.run(
            agents=50 if quick else 500,
            dashboards=5 if quick else 50,
            seconds=3 if quick else 20,
            quiet=3 if quick else 20,
            redis_url=layer,
            progress=progress,
        )
    for db in [None] + ([database_url] if database_url else []):
        name = "postgresql" if db else "sqlite"
        progress(f"== the matrix and the claim race, {name} ==")
        out[f"plan_{name}"] = plan.run(
            tasks=10 if quick else 50,
            paths=20 if quick else 200,
            files=3_000 if quick else 20_000,
            claimers=10 if quick else 100,
            seconds=2 if quick else 10,
            database_url=db,
            redis_url=redis_url if db else None,
            progress=progress,
        )
    progress("== git ==")
    out["git"] = gitbench.run(
        files=500 if quick else 20_000,
        commits=300 if quick else 10_000,
        worktree_count=3 if quick else 100,
        merges=2 if quick else 20,
        progress=progress,
    )
    progress("== the simulator's sprint as the load ==")
    out["sim"] = simbench.run(speed=30 if quick else 20, redis_url=None, progress=progress)
    progress("== soak ==")
    out["soak"] = soak.run(
        seconds=soak_seconds,
        interval=2 if quick else 5,
        warmup=min(120, soak_seconds / 3),
        progress=progress,
    )
    return dict(out)


class _Figures(dict):
    """The figures so far; each new benchmark's are saved as they come."""

    def __init__(self, checkpoint, **fields) -> None:
        super().__init__(**fields)
        self.checkpoint = checkpoint

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.checkpoint(dict(self))


def table(r: dict) -> str:
    rows = [
        f"fleet_bench all ({r['cpus']} CPUs{', QUICK: not figures to quote' if r['quick'] else ''})"
    ]

    def row(what: str, value, target: str = "", ok: bool | None = None) -> None:
        mark = "" if ok is None else ("met" if ok else "MISSED")
        rows.append(f"  {what:<52} {value!s:>14}  {target:<18} {mark}")

    for kind, res in r["heartbeat_sqlite"]["servers"].items():
        hb = res["heartbeat"]
        row(
            f"heartbeats/s, SQLite, 1 process, {kind}",
            hb["per_second"],
            "≥ 1000",
            hb["per_second"] >= 1000,
        )
        row(
            f"  p99 ms / errors ({kind})",
            f"{hb['p99_ms']} / {hb['errors']}",
            "≤ 50 / 0",
            hb["p99_ms"] <= 50 and hb["errors"] == 0,
        )
        row(f"  trivial async view req/s ({kind})", res["baseline"]["per_second"])
    if "heartbeat_pg_1" in r:
        one = r["heartbeat_pg_1"]["servers"]["daphne"]["heartbeat"]["per_second"]
        two = r["heartbeat_pg_2"]["servers"]["daphne"]["heartbeat"]["per_second"]
        row("heartbeats/s, PostgreSQL + Redis, 1 process", one)
        row("heartbeats/s, PostgreSQL + Redis, 2 processes", two)
        ratio = round(two / one, 2) if one else 0
        row("  2 processes vs 1", f"{ratio}x", f"≥ {SCALE_TARGET}x", ratio >= SCALE_TARGET)
    for name in ("memory", "redis"):
        if f"live_{name}" in r:
            lv = r[f"live_{name}"]
            row(
                f"heartbeat → dashboard p50/p99 ms ({name} layer)",
                f"{lv['p50_ms']} / {lv['p99_ms']}",
                f"≤ {live.TARGETS['p50_ms']} / {live.TARGETS['p99_ms']}",
                lv["met"]["p50_ms"] and lv["met"]["p99_ms"],
            )
            row(
                f"  frames per dashboard per s (busiest) / web RSS MB ({name})",
                f"{lv['frames_per_client_s_max']} / {lv['rss_mb']}",
            )
    if "live_redis" in r:
        worse = round(r["live_redis"]["p50_ms"] - r["live_memory"]["p50_ms"], 1)
        row(
            "  Redis vs in-memory, p50",
            f"+{worse} ms",
            f"≤ +{REDIS_LIVE_SLACK_MS} ms",
            worse <= REDIS_LIVE_SLACK_MS,
        )
    for name in ("sqlite", "postgresql"):
        if f"plan_{name}" in r:
            c, o = r[f"plan_{name}"]["claims"], r[f"plan_{name}"].get("claims_open")
            if o is not None:
                row(
                    f"claims/s granted, {o['paths']} paths ({name})",
                    o["claims_per_second"],
                    f"≥ {CLAIM_TARGETS[name]}",
                    o["claims_per_second"] >= CLAIM_TARGETS[name],
                )
            row(f"  granted/s, {c['paths']} contested paths", c["claims_per_second"], "", None)
            doubles = c["double_claims"] + (o["double_claims"] if o else 0)
            row(f"  double claims, both races ({name})", doubles, "0", doubles == 0)
            row(
                f"  shared-file matrix ms ({name})",
                r[f"plan_{name}"]["matrix"]["matrix_ms"],
                "≤ 100",
                r[f"plan_{name}"]["matrix"]["matrix_ms"] <= 100,
            )
    g = r["git"]
    row(
        "git: worktree vs raw git (ratio)", g["worktree_ratio"], "≤ 1.3", g["met"]["worktree_ratio"]
    )
    row("git: stale-base report s", g["stale_report_s"], "≤ 1.0", g["met"]["stale_report_s"])
    row("git: stale-base report vs raw git", g["stale_ratio"], "≤ 3.0", g["met"]["stale_ratio"])
    row("git: merge p95 s", g["merge_p95_s"], "≤ 3.0", g["met"]["merge_p95_s"])
    sim = r["sim"]
    row(
        "simulated sprint: steps, API p50/p99 ms",
        f"{sim['steps_reached']}/{sim['steps']}, {sim['api']['p50_ms']}/{sim['api']['p99_ms']}",
    )
    so = r["soak"]
    row(
        f"soak {so['seconds']:g} s: web / worker RSS growth MB",
        f"{so['web_rss_growth_mb']} / {so['worker_rss_growth_mb']}",
        "≤ 5 each",
        all(so["met"].values()),
    )
    row("  open fds web / worker (min-max)", f"{so['web_fds']} / {so['worker_fds']}", "flat")
    row("  git child processes (min-max)", so["git_children"], "flat")
    return "\n".join(rows)
