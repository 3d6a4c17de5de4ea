"""``fleet_bench plan``: the shared-file matrix of a large wave, and file claims under
a race of many agents (claims/s, and double claims, which must be zero)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time

from fleet.bench import gitbench
from fleet.bench.heartbeat import INHERIT, _run_module, bench_site
from fleet.bench.load import encode, json_request, percentile_ms, read_response
from fleet.bench.servers import Server, free_port

TARGETS = {"matrix_ms": 100, "double_claims": 0}
CONTESTED = 20  # paths the claimers fight over in the contested race
PATHS_PER_CLAIMER = 20  # the open race's pool: conflicts happen, as in a real wave


async def _claimer(
    port: int,
    agent: dict,
    deadline: float,
    holders: dict,
    stats: dict,
    rng: random.Random,
    pool: int,
) -> None:
    """Claim a random path of the pool; on success check nobody else holds it, then
    release it. ``holders`` is cleared *before* the release is sent, so a claim the
    server grants while it is set is a real double claim."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = {"Authorization": f"Bearer {agent['token']}"}
    try:
        while time.monotonic() < deadline:
            path = f"config/contested_{rng.randrange(pool)}.py"
            started = time.monotonic()
            writer.write(
                encode(
                    *json_request(
                        "/api/v1/claims", {"task": agent["task"], "paths": [path]}, agent["token"]
                    )
                )
            )
            status, body, _ = await asyncio.wait_for(read_response(reader), 30)
            stats["latencies"].append(time.monotonic() - started)
            if status == 201:
                stats["granted"] += 1
                if holders.get(path) not in (None, agent["name"]):
                    stats["double"] += 1
                holders[path] = agent["name"]
                claim_id = json.loads(body)[0]["id"]
                await asyncio.sleep(0)  # let others try while it is held
                holders.pop(path, None)
                writer.write(encode("DELETE", f"/api/v1/claims/{claim_id}", auth, b""))
                status, body, _ = await asyncio.wait_for(read_response(reader), 30)
                if status != 200:
                    stats["errors"].append(f"release HTTP {status}: {body[:120]!r}")
            elif status == 409:
                stats["refused"] += 1
            elif status == 503:  # the server asks to retry (e.g. out of connections)
                stats["retried"] += 1
                await asyncio.sleep(0.05)
            else:
                stats["errors"].append(f"claim HTTP {status}: {body[:120]!r}")
    finally:
        writer.close()


async def _race(port: int, agents: list[dict], seconds: float, seed: int, pool: int) -> dict:
    stats = {"granted": 0, "refused": 0, "retried": 0, "double": 0, "errors": [], "latencies": []}
    holders: dict[str, str] = {}
    deadline = time.monotonic() + seconds
    started = time.monotonic()
    await asyncio.gather(
        *(
            _claimer(port, a, deadline, holders, stats, random.Random(seed + i), pool)
            for i, a in enumerate(agents)
        )
    )
    elapsed = time.monotonic() - started
    latencies = stats["latencies"]
    attempts = len(latencies)
    return {
        "claimers": len(agents),
        "paths": pool,
        "seconds": round(elapsed, 2),
        "attempts": attempts,
        "granted": stats["granted"],
        "refused_409": stats["refused"],
        "retry_503": stats["retried"],
        "double_claims": stats["double"],
        "errors": len(stats["errors"]),
        "error_samples": stats["errors"][:5],
        "attempts_per_second": round(attempts / elapsed, 1) if elapsed else 0.0,
        "claims_per_second": round(stats["granted"] / elapsed, 1) if elapsed else 0.0,
        "p50_ms": round(percentile_ms(latencies, 50), 1),
        "p99_ms": round(percentile_ms(latencies, 99), 1),
    }


def run(
    *,
    tasks: int = 50,
    paths: int = 200,
    files: int = 20_000,
    claimers: int = 100,
    seconds: float = 10,
    database_url: str | None = None,
    progress=print,
    redis_url: str | None = INHERIT,
) -> dict:
    results: dict = {"cpus": os.cpu_count()}
    with bench_site("fleet-bench-plan-", database_url, results, progress, redis_url) as (
        workdir,
        env,
    ):
        progress(f"generating a repository of {files:,} files …")
        origin, clone = workdir / "origin.git", workdir / "clone"
        gitbench.generate(origin, files=files, commits=2)
        gitbench._git(workdir, "clone", "-q", str(origin), str(clone))
        progress(f"matrix: {tasks} tasks × {paths} declared paths …")
        results["matrix"] = json.loads(
            _run_module(
                [
                    "-m",
                    "fleet.bench.seed",
                    "matrix",
                    "--repo",
                    str(clone),
                    "--count",
                    str(tasks),
                    "--paths",
                    str(paths),
                ],
                env,
            )
        )
        results["matrix"]["files"] = files
        seeded = json.loads(
            _run_module(["-m", "fleet.bench.seed", "heartbeat", "--agents", str(claimers)], env)
        )
        pool = claimers * PATHS_PER_CLAIMER
        server = Server(free_port(), workdir, env=env, access_log=False, inherit_env=False)
        with server:
            progress(f"claims: {claimers} agents claiming among {pool} paths, {seconds:g} s …")
            results["claims_open"] = asyncio.run(
                _race(server.port, seeded["agents"], seconds, 11, pool)
            )
            progress(f"claims: {claimers} agents racing for {CONTESTED} paths, {seconds:g} s …")
            results["claims"] = asyncio.run(
                _race(server.port, seeded["agents"], seconds, 7, CONTESTED)
            )
    results["targets"] = TARGETS
    results["met"] = {
        "matrix_ms": results["matrix"]["matrix_ms"] <= TARGETS["matrix_ms"],
        "double_claims": results["claims"]["double_claims"]
        + results["claims_open"]["double_claims"]
        == TARGETS["double_claims"],
    }
    return results


def _race_lines(title: str, c: dict) -> list[str]:
    return [
        title,
        f"  attempts/s {c['attempts_per_second']:>8.1f}   claims granted/s "
        f"{c['claims_per_second']:>7.1f}   p50 {c['p50_ms']} ms   p99 {c['p99_ms']} ms",
        f"  granted {c['granted']}, refused (409) {c['refused_409']}, asked to retry (503) "
        f"{c['retry_503']}, errors {c['errors']}, double claims {c['double_claims']}",
    ]


def table(results: dict) -> str:
    m, c = results["matrix"], results["claims"]
    ok = lambda key: "met" if results["met"][key] else "MISSED"  # noqa: E731
    races = []
    if "claims_open" in results:
        o = results["claims_open"]
        races = _race_lines(
            f"claims: {o['claimers']} agents among {o['paths']} paths, {o['seconds']:g} s", o
        )
    return "\n".join(
        [
            f"fleet_bench plan: {results['database']}, {results['cpus']} CPUs",
            f"matrix: {m['tasks']} tasks × {m['declared_per_task']} declared paths on "
            f"{m['files']:,} files → {m['shared_paths']} shared paths × "
            f"{m['matrix_columns']} tasks",
            f"  first sync (lists the tree, makes the rows) {m['first_sync_ms']:>8.1f} ms",
            f"  sync + matrix, warm (server time)          {m['matrix_ms']:>8.1f} ms  "
            f"target ≤ {TARGETS['matrix_ms']} ms: {ok('matrix_ms')}",
            f"  whole wave page (preflight, render)        {m['page_ms']:>8.1f} ms  "
            f"({m['page_bytes'] / 1024:.0f} KiB)",
            *races,
            *_race_lines(
                f"claims: {c['claimers']} agents, {CONTESTED} contested paths, {c['seconds']:g} s",
                c,
            ),
            f"double claims, both races: target 0: {ok('double_claims')}",
        ]
    )
