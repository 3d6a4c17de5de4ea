"""``fleet_bench sim``: the living demo's agents as the load. A whole sprint is played
by the simulator (``fleet_simulate``, the one code path for agent behaviour) against
daphne and the worker on a throwaway database; every agent call is timed."""

from __future__ import annotations

import json
import os

from fleet.bench.heartbeat import INHERIT, _run_module, bench_site
from fleet.bench.servers import Server, free_port, rss_kb, start_worker, stop_process

# The demo's timings, shortened so that a silent agent's lease lapses within the run.
TIMINGS = {
    "FLEET_HEARTBEAT_TTL": "3",
    "FLEET_LEASE_TTL": "4",
    "FLEET_HEARTBEAT_INTERVAL": "1",
    "FLEET_TASK_MAX_ATTEMPTS": "20",
}


def run(
    *,
    builders: int = 4,
    reviewers: int = 2,
    speed: float = 20,
    duration: float = 300,
    seed: int = 1,
    database_url: str | None = None,
    progress=print,
    redis_url: str | None = INHERIT,
) -> dict:
    results: dict = {"builders": builders, "reviewers": reviewers, "speed": speed, "seed": seed}
    results["cpus"] = os.cpu_count()
    with bench_site("fleet-bench-sim-", database_url, results, progress, redis_url) as (
        workdir,
        env,
    ):
        env = {**env, **TIMINGS}
        server = Server(free_port(), workdir, env=env, access_log=False, inherit_env=False)
        worker = start_worker(env, workdir / "worker.log")
        report = workdir / "simulation.json"
        progress(f"{builders} builders and {reviewers} reviewers play a sprint at ×{speed:g} …")
        try:
            with server:
                _run_module(
                    [
                        "manage.py",
                        "fleet_simulate",
                        f"--url={server.url}",
                        f"--speed={speed}",
                        f"--builders={builders}",
                        f"--reviewers={reviewers}",
                        f"--seed={seed}",
                        "--patience=1",
                        "--start=now",
                        f"--duration={duration}",
                        f"--json={report}",
                    ],
                    env,
                    timeout=duration + 120,
                )
                web, work = server.rss_kb(), rss_kb(worker.pid)
        finally:
            stop_process(worker)
        played = json.loads(report.read_text())
    results.update(
        seconds=played["seconds"],
        finished=played["finished"],
        steps_reached=sum(step["ok"] for step in played["steps"].values()),
        steps=len(played["steps"]),
        missed=[step["what"] for step in played["steps"].values() if not step["ok"]],
        api=played["api"],
        web_rss_mb=round(web / 1024, 1) if web else None,
        worker_rss_mb=round(work / 1024, 1) if work else None,
    )
    return results


def table(r: dict) -> str:
    api = r["api"]
    lines = [
        f"fleet_bench sim: a sprint played by {r['builders']} builders and {r['reviewers']} "
        f"reviewers at ×{r['speed']:g}, {r['database']}, {r['cpus']} CPUs",
        f"  scenario  {r['steps_reached']}/{r['steps']} steps in {r['seconds']} s"
        f" ({'every task merged' if r['finished'] else 'NOT finished'})",
        f"  agent API calls  {api['calls']} ({api['per_second']}/s)  p50 {api['p50_ms']} ms"
        f"  p99 {api['p99_ms']} ms  failed (5xx or no answer) {api['failed']}",
    ]
    for route, figures in api["routes"].items():
        lines.append(
            f"    {route:<22} {figures['calls']:>6}  p50 {figures['p50_ms']:>7} ms"
            f"  p99 {figures['p99_ms']:>7} ms"
        )
    lines.append(f"  RSS  web {r['web_rss_mb']} MB, worker {r['worker_rss_mb']} MB")
    lines.extend(f"  missed: {what}" for what in r["missed"])
    return "\n".join(lines)
