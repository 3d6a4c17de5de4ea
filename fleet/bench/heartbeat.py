"""``fleet_bench heartbeat``: N agents posting heartbeats to a live server, against
the trivial async JSON view as the baseline."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse, urlunparse

from fleet.bench.load import LoadResult, json_request, run_load
from fleet.bench.servers import ROOT, Server, free_port

TARGETS = {"per_second": 1000, "p99_ms": 50, "errors": 0, "baseline_ratio": 0.5}


def _run_module(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    if done.returncode:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout


@contextmanager
def bench_database(workdir: Path, database_url: str | None):
    """A fresh database for one run: a SQLite file in the work dir, or a new
    PostgreSQL database on the server named by ``database_url`` (dropped after)."""
    if not database_url or database_url.startswith("sqlite"):
        yield f"sqlite:///{workdir / 'bench.sqlite3'}"
        return
    import psycopg

    name = f"fleet_bench_{os.getpid()}"
    admin = psycopg.connect(database_url, autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunparse(urlparse(database_url)._replace(path=f"/{name}"))
    finally:
        try:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error:  # PostgreSQL before 13 has no FORCE; the server is gone now
            admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


INHERIT = "inherit"  # the channel layer of this process's environment (REDIS_URL or none)


@contextmanager
def bench_site(
    prefix: str,
    database_url: str | None,
    results: dict,
    progress=print,
    redis_url: str | None = INHERIT,
):
    """A throwaway Fleet for one benchmark: a work dir, a migrated fresh database and
    collected static files (pages render with DEBUG off); yields (workdir, env) and
    removes it all afterwards. Notes the database kind and channel layer in
    ``results``. ``redis_url``: None for the in-memory layer, a URL for Redis."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        with bench_database(workdir, database_url) as url:
            env = bench_env(workdir, url)
            if redis_url != INHERIT:
                env.pop("REDIS_URL", None)
                if redis_url:
                    env["REDIS_URL"] = redis_url
            results["database"] = url.split(":", 1)[0]
            results["channel_layer"] = "redis" if env.get("REDIS_URL") else "in-memory"
            progress(f"migrating a fresh {results['database']} database …")
            _run_module(["manage.py", "migrate", "--no-input", "-v", "0"], env)
            _run_module(["manage.py", "collectstatic", "--no-input", "-v", "0"], env)
            yield workdir, env
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def bench_env(workdir: Path, database_url: str) -> dict[str, str]:
    """Production-like settings (DEBUG off) for the servers under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "DJANGO_ALLOW"))}
    env.update(
        DATABASE_URL=database_url,
        FLEET_DATA_DIR=str(workdir),
        FLEET_BENCH="1",
        DEBUG="0",
        SECRET_KEY="bench-only-" + "k" * 50,
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="0",
        # Agents here beat far faster than real ones; the limiter still runs, it
        # just never refuses.
        FLEET_API_RATE="1000000/m",
        DJANGO_SETTINGS_MODULE="fleet.settings",
    )
    return env


def _heartbeat_requests(agents: list[dict]):
    beats = [0] * len(agents)

    def make(index: int):
        agent = agents[index % len(agents)]
        beats[index] += 1
        payload = {
            "context_pct": min(59, beats[index] // 50),
            "status_line": f"bench beat {beats[index]}",
            "tokens_in": 120,
            "tokens_out": 40,
            "cost_usd": 0.0003,
            "model": "bench-model",
            "epoch": agent["epoch"],
        }
        return json_request("/api/v1/heartbeat", payload, agent["token"])

    return make


def _check_heartbeat(status: int, body: bytes) -> str | None:
    answer = json.loads(body)
    if answer.get("stop") or answer.get("epoch") is None:
        return f"unexpected directives: {answer}"
    return None


def _ping(index: int):
    return json_request("/_bench/ping", {"agent": index, "context_pct": 10})


def _raw(index: int):
    return json_request("/_bench/raw", {"agent": index, "context_pct": 10})


DESCRIBE = {
    "raw": "raw ASGI answer (the server's ceiling)",
    "baseline": "trivial async Django JSON view (the baseline)",
    "heartbeat": "agents posting heartbeats",
}


def run(
    *,
    agents: int = 20,
    seconds: float = 10,
    warmup: float = 2,
    servers: tuple[str, ...] = ("daphne",),
    database_url: str | None = None,
    progress=print,
    processes: int = 1,
    redis_url: str | None = INHERIT,
) -> dict:
    results: dict = {"agents": agents, "seconds": seconds, "servers": {}, "processes": processes}
    for kind in servers:
        with bench_site(f"fleet-bench-{kind}-", database_url, results, progress, redis_url) as (
            workdir,
            env,
        ):
            seeded = json.loads(
                _run_module(["-m", "fleet.bench.seed", "heartbeat", "--agents", str(agents)], env)
            )
            # No access log: a per-request log line is an operator's choice, not Fleet's cost.
            web = [
                Server(
                    free_port(), workdir, env=env, kind=kind, access_log=False, inherit_env=False
                )
                for _ in range(processes)
            ]
            with contextlib.ExitStack() as stack:
                for server in web:
                    stack.enter_context(server)
                ports = [server.port for server in web]
                runs = {}
                for label, make, check in (
                    ("raw", _raw, None),
                    ("baseline", _ping, None),
                    ("heartbeat", _heartbeat_requests(seeded["agents"]), _check_heartbeat),
                ):
                    progress(f"[{kind}] {label}: {DESCRIBE[label]}, {agents} clients …")
                    runs[label] = run_load(
                        port=ports,
                        clients=agents,
                        make_request=make,
                        seconds=seconds,
                        warmup=warmup,
                        check=check,
                    )
                rss = sum(server.rss_kb() or 0 for server in web)
            stored = json.loads(_run_module(["-m", "fleet.bench.seed", "counts"], env))
        results["servers"][kind] = _summarize(runs, rss, stored)
    return results


def _summarize(runs: dict[str, LoadResult], rss: int | None, stored: dict) -> dict:
    base, beats = runs["baseline"], runs["heartbeat"]
    ratio = beats.rate / base.rate if base.rate else 0.0
    unstored = beats.accepted - stored["spend_events"]
    heartbeat = beats.summary()
    checks = {
        "per_second": heartbeat["per_second"] >= TARGETS["per_second"],
        "p99_ms": heartbeat["p99_ms"] <= TARGETS["p99_ms"],
        "errors": heartbeat["errors"] == TARGETS["errors"],
        "baseline_ratio": ratio >= TARGETS["baseline_ratio"],
        "nothing_lost": unstored == 0,
    }
    return {
        "raw": runs["raw"].summary(),
        "baseline": base.summary(),
        "heartbeat": heartbeat,
        "baseline_ratio": round(ratio, 3),
        "accepted": beats.accepted,
        "stored_spend_events": stored["spend_events"],
        "server_rss_mb": round(rss / 1024, 1) if rss else None,
        "targets": TARGETS,
        "met": checks,
    }


def table(results: dict) -> str:
    rows = [
        f"fleet_bench heartbeat: {results['agents']} agents, {results['seconds']:g} s per run, "
        f"{results.get('database', '?')} + {results.get('channel_layer', '?')} channel layer, "
        f"{results.get('processes', 1)} web process(es), {os.cpu_count()} CPUs",
        f"{'server':8} {'run':10} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'errors':>7}",
    ]
    for kind, res in results["servers"].items():
        for label in ("raw", "baseline", "heartbeat"):
            r = res[label]
            rows.append(
                f"{kind:8} {label:10} {r['per_second']:9.1f} {r['p50_ms']:8.2f} "
                f"{r['p99_ms']:8.2f} {r['max_ms']:8.2f} {r['errors']:7d}"
            )
        met = res["met"]
        marks = ", ".join(f"{k} {'ok' if v else 'MISSED'}" for k, v in met.items())
        rows.append(
            f"{kind:8} heartbeat/baseline {res['baseline_ratio']:.2f}; server RSS "
            f"{res['server_rss_mb']} MB; accepted {res['accepted']}, stored "
            f"{res['stored_spend_events']}"
        )
        rows.append(f"{kind:8} targets: {marks}")
    return "\n".join(rows)
