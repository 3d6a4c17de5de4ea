"""``fleet_bench soak``: Fleet under a steady, realistic load for a long while (ten
minutes by default) — the simulator playing sprint after sprint through the API and
git, the worker merging — sampling the web and worker processes every few seconds:
resident memory, open file descriptors, and git child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from fleet.bench.heartbeat import INHERIT, bench_site
from fleet.bench.servers import ROOT, Server, free_port, rss_kb, start_worker, stop_process
from fleet.bench.simbench import TIMINGS

TARGETS = {"rss_growth_mb": 5}


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def git_children(*pids: int) -> int:
    """git processes below these processes (running or not yet reaped)."""
    parent, name = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        parent[int(entry.name)], name[int(entry.name)] = int(fields[1]), comm
    count = 0
    for pid, comm in name.items():
        if not comm.startswith("git"):
            continue
        up = parent.get(pid)
        while up and up not in pids:
            up = parent.get(up)
        count += bool(up)
    return count


def run(
    *,
    seconds: float = 600,
    interval: float = 5,
    warmup: float = 120,
    speed: float = 20,
    database_url: str | None = None,
    redis_url: str | None = INHERIT,
    progress=print,
) -> dict:
    results: dict = {"seconds": seconds, "interval": interval, "warmup": warmup, "speed": speed}
    samples: list[dict] = []
    runs = 0
    with bench_site("fleet-bench-soak-", database_url, results, progress, redis_url) as (
        workdir,
        env,
    ):
        env = {**env, **TIMINGS}
        worker = start_worker(env, workdir / "soak.log")
        log = (workdir / "soak.log").open("ab")  # the simulations' output, beside it
        server = Server(free_port(), workdir, env=env, access_log=False, inherit_env=False)
        simulation = None
        try:
            with server:
                started = time.monotonic()
                progress(f"soaking for {seconds:g} s, sampling every {interval:g} s …")
                while (elapsed := time.monotonic() - started) < seconds:
                    if simulation is None or simulation.poll() is not None:
                        runs += simulation is not None
                        simulation = subprocess.Popen(
                            [
                                sys.executable,
                                "manage.py",
                                "fleet_simulate",
                                f"--url={server.url}",
                                f"--speed={speed}",
                                "--patience=1",
                                "--start=now",
                                f"--duration={max(10, seconds - elapsed)}",
                                f"--json={workdir / 'simulation.json'}",
                            ],
                            cwd=ROOT,
                            env=env,
                            stdout=log,
                            stderr=log,
                        )
                    samples.append(
                        {
                            "t": round(elapsed, 1),
                            "web_rss_kb": server.rss_kb(),
                            "worker_rss_kb": rss_kb(worker.pid),
                            "web_fds": open_fds(server.pid),
                            "worker_fds": open_fds(worker.pid),
                            "git_children": git_children(server.pid, worker.pid),
                        }
                    )
                    time.sleep(interval)
        finally:
            for proc in (simulation, worker):
                stop_process(proc)
            log.close()
    results.update(summarize(samples, warmup), sprints=runs, samples=samples)
    return results


def summarize(samples: list[dict], warmup: float) -> dict:
    steady = [s for s in samples if s["t"] >= warmup] or samples[-1:]
    if not steady:
        return {}

    def growth(key: str) -> float | None:
        first, last = steady[0][key], steady[-1][key]
        return round((last - first) / 1024, 1) if first and last else None

    def spread(key: str) -> list:
        values = [s[key] for s in steady if s[key] is not None]
        return [min(values), max(values)] if values else []

    figures = {
        "web_rss_growth_mb": growth("web_rss_kb"),
        "worker_rss_growth_mb": growth("worker_rss_kb"),
        "web_rss_mb": round((steady[-1]["web_rss_kb"] or 0) / 1024, 1),
        "worker_rss_mb": round((steady[-1]["worker_rss_kb"] or 0) / 1024, 1),
        "web_fds": spread("web_fds"),
        "worker_fds": spread("worker_fds"),
        "git_children": spread("git_children"),
        "steady_samples": len(steady),
    }
    # No reading (a process died) is not a pass.
    figures["met"] = {
        key: figures[key] is not None and figures[key] <= TARGETS["rss_growth_mb"]
        for key in ("web_rss_growth_mb", "worker_rss_growth_mb")
    }
    return figures


def table(r: dict) -> str:
    ok = lambda key: "met" if r["met"][key] else "MISSED"  # noqa: E731
    return "\n".join(
        [
            f"fleet_bench soak: {r['seconds']:g} s ({r['sprints']} sprint(s) played at "
            f"×{r['speed']:g}), {r['database']} + {r['channel_layer']} channel layer; "
            f"measured after a {r['warmup']:g} s warm-up over {r['steady_samples']} samples",
            f"  RSS growth  web {r['web_rss_growth_mb']} MB ({ok('web_rss_growth_mb')}, ≤ "
            f"{TARGETS['rss_growth_mb']}), worker {r['worker_rss_growth_mb']} MB "
            f"({ok('worker_rss_growth_mb')}); now web {r['web_rss_mb']} MB, worker "
            f"{r['worker_rss_mb']} MB",
            f"  open file descriptors (min-max)  web {r['web_fds']}, worker {r['worker_fds']}",
            f"  git child processes (min-max)  {r['git_children']}",
        ]
    )
