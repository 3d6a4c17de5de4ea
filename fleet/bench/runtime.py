"""``fleet_bench runtime``: the agent runtime on this machine.

A throwaway Fleet (daphne), one real runner process (``python -m fleet.runner``) on a
tmux server of its own, and N agents under it running a stand-in CLI
(``fleet.bench.fakecli``: it shows a prompt, reads what is typed, stamps it):

- hook overhead: Claude Code's PostToolUse hook as the agent's settings file spells
  it, from process start to Fleet's answer, p50 and p95 (and the full hook's);
- wake latency: a message posted (committed) → the nudge typed into the idle CLI;
- a dead CLI (killed with SIGKILL) → Fleet recorded the crash;
- the runner's CPU and memory with N agents, and the dashboard's pages meanwhile.

The Django side (seeding, posting messages, reading events) runs in child processes
on the bench's own database: ``python -m fleet.bench.runtime seed|message|events``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

TARGETS = {"hook_p95_ms": 60, "wake_p95_s": 2.0, "dead_noticed_max_s": 5.0}
CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def run(
    *,
    agents: int = 20,
    samples: int = 30,
    database_url: str | None = None,
    progress=print,
) -> dict[str, Any]:
    from fleet.bench.heartbeat import _run_module, bench_site
    from fleet.bench.load import percentile_ms
    from fleet.bench.servers import ROOT, Server, free_port, rss_kb, stop_process
    from fleet.runner.tmux import Tmux

    if shutil.which("tmux") is None:
        raise RuntimeError("tmux is not installed (apt-get install tmux)")
    results: dict[str, Any] = {"agents": agents, "samples": samples, "targets": TARGETS}
    with bench_site("fleet-bench-runtime-", database_url, results, redis_url=None) as (
        workdir,
        env,
    ):
        port = free_port()
        env = {**env, "FLEET_PUBLIC_URL": f"http://127.0.0.1:{port}"}
        server = Server(port, workdir, env=env, access_log=False, inherit_env=False).start()
        tmux = Tmux(socket=f"fleet-bench-{uuid.uuid4().hex[:8]}")
        runner = None
        try:
            progress(f"seeding {agents} agents under one runner …")
            seeded = json.loads(
                _run_module(["-m", "fleet.bench.runtime", "seed", "--agents", str(agents)], env)
            )
            log = workdir / "runner.log"
            with log.open("ab") as out:
                runner = subprocess.Popen(
                    [sys.executable, "-m", "fleet.runner", "--url", server.url],
                    cwd=ROOT,
                    env={**env, "FLEET_RUNNER_TOKEN": seeded["runner_token"],
                         "FLEET_TMUX_SOCKET": tmux.socket},
                    stdout=out,
                    stderr=out,
                )  # fmt: skip
            dirs = {a["name"]: Path(a["directory"]) for a in seeded["agents"]}
            started = time.monotonic()
            _wait(lambda: all((d / "received.times").exists() for d in dirs.values()), 120)
            results["all_started_s"] = round(time.monotonic() - started, 1)
            progress(f"{agents} CLIs started and at their prompts in {results['all_started_s']} s")

            first = next(iter(dirs.values()))
            quick, full = _hook_times(first, samples)
            results["hook_ms"] = {
                "p50": round(percentile_ms(quick, 50), 1),
                "p95": round(percentile_ms(quick, 95), 1),
                "full_hook_p50": round(percentile_ms(full, 50), 1),
                "full_hook_p95": round(percentile_ms(full, 95), 1),
            }
            progress(f"hook overhead: {results['hook_ms']}")

            cpu_before, wall_before = _cpu_seconds(runner.pid), time.monotonic()
            cookie = seeded["cookie"]
            names = list(dirs)
            posted = json.loads(
                _run_module(
                    ["-m", "fleet.bench.runtime", "message", "--to", ",".join(names),
                     "--count", str(min(samples, 40)), "--every", "0.5"],
                    env,
                )
            )  # fmt: skip
            pages = [
                _timed_get(f"{server.url}{path}", cookie)
                for path in ["/", "/agents/", *(f"/agents/{n}/" for n in names[:10])]
            ]
            time.sleep(4)
            wake = _wake_latencies(posted, dirs)
            results["wake_s"] = {
                "nudged": len(wake),
                "posted": len(posted),
                "p50": round(percentile_ms(wake, 50) / 1000, 2),
                "p95": round(percentile_ms(wake, 95) / 1000, 2),
            }
            progress(f"wake latency: {results['wake_s']}")
            seconds = time.monotonic() - wall_before
            results["runner"] = {
                "cpu_pct": round(100 * (_cpu_seconds(runner.pid) - cpu_before) / seconds, 1),
                "rss_mb": round((rss_kb(runner.pid) or 0) / 1024, 1),
                "window_s": round(seconds, 1),
            }
            results["dashboard_ms"] = {
                "pages": len(pages),
                "ok": sum(status == 200 for status, _ in pages),
                "p50": round(percentile_ms([t for _, t in pages], 50), 1),
                "max": round(max(t for _, t in pages) * 1000, 1),
            }
            progress(f"runner: {results['runner']}; dashboard: {results['dashboard_ms']}")

            victims = names[: min(5, len(names))]
            panes = tmux.panes()
            killed = {}
            for name in victims:
                pane = panes.get(f"fleet-{name}")
                if pane and pane.pid:
                    killed[name] = time.time()
                    # The CLI: launch.sh (the pane's process) waits for it.
                    subprocess.run(["pkill", "-KILL", "-P", str(pane.pid)], check=False)
                    time.sleep(0.3)
            time.sleep(7)
            crashes = json.loads(
                _run_module(["-m", "fleet.bench.runtime", "events", "--kind", "agent.crashed"], env)
            )
            noticed = [
                crashes[name] - at for name, at in killed.items() if crashes.get(name, 0) >= at
            ]
            results["dead_noticed_s"] = {
                "killed": len(killed),
                "noticed": len(noticed),
                "max": round(max(noticed), 2) if noticed else None,
                "p50": round(percentile_ms(noticed, 50) / 1000, 2) if noticed else None,
            }
            progress(f"dead CLI noticed: {results['dead_noticed_s']}")
        finally:
            stop_process(runner)
            tmux._run("kill-server", check=False)
            server.stop()
    results["met"] = {
        "hook_p95": results["hook_ms"]["p95"] <= TARGETS["hook_p95_ms"],
        "wake_p95": results["wake_s"]["p95"] <= TARGETS["wake_p95_s"]
        and results["wake_s"]["nudged"] == results["wake_s"]["posted"],
        "dead_noticed": results["dead_noticed_s"]["max"] is not None
        and results["dead_noticed_s"]["noticed"] == results["dead_noticed_s"]["killed"]
        and results["dead_noticed_s"]["max"] <= TARGETS["dead_noticed_max_s"],
    }
    return results


def table(results: dict) -> str:
    hook, wake, dead = results["hook_ms"], results["wake_s"], results["dead_noticed_s"]
    runner, pages = results["runner"], results["dashboard_ms"]
    met = results["met"]
    rows = [
        f"agent runtime on this machine: {results['agents']} agents under one runner "
        f"({results['database']}); all started and at their prompts in "
        f"{results['all_started_s']} s",
        f"  PostToolUse hook, start to Fleet's answer: p50 {hook['p50']} ms, p95 {hook['p95']} "
        f"ms (target p95 <= {TARGETS['hook_p95_ms']} ms: {'met' if met['hook_p95'] else 'MISSED'})"
        f"; the full hook: p50 {hook['full_hook_p50']} ms, p95 {hook['full_hook_p95']} ms",
        f"  wake, message posted -> typed into the idle CLI: {wake['nudged']}/{wake['posted']} "
        f"typed, p50 {wake['p50']} s, p95 {wake['p95']} s (target <= {TARGETS['wake_p95_s']} s:"
        f" {'met' if met['wake_p95'] else 'MISSED'})",
        f"  dead CLI (SIGKILL) -> crash recorded: {dead['noticed']}/{dead['killed']}, p50 "
        f"{dead['p50']} s, max {dead['max']} s (target <= {TARGETS['dead_noticed_max_s']} s: "
        f"{'met' if met['dead_noticed'] else 'MISSED'})",
        f"  runner: {runner['cpu_pct']}% of a core, {runner['rss_mb']} MB RSS over "
        f"{runner['window_s']} s; dashboard pages meanwhile: {pages['ok']}/{pages['pages']} "
        f"answered 200, p50 {pages['p50']} ms, max {pages['max']} ms",
    ]
    return "\n".join(rows) + "\n"


def _wait(check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s")
        time.sleep(0.2)


def _hook_times(directory: Path, samples: int) -> tuple[list[float], list[float]]:
    """Seconds per PostToolUse hook run, as Claude Code runs it (a shell, the command
    from the settings file, the hook JSON on stdin), and the full hook's for contrast."""
    settings = json.loads((directory / ".claude/settings.local.json").read_text())
    command = settings["hooks"]["PostToolUse"][0]["hooks"][0]["command"]
    full = command.replace("-S -m fleet.agent.quickhook", "-m fleet.agent hook PostToolUse")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "FLEET_"))}
    env.update(settings["env"])
    payload = json.dumps({"hook_event_name": "PostToolUse", "tool_name": "Edit"})
    times: dict[str, list[float]] = {command: [], full: []}
    for _ in range(samples):
        for cmd, took in times.items():
            start = time.perf_counter()
            done = subprocess.run(
                cmd, shell=True, cwd=directory, input=payload, capture_output=True, text=True,
                env=env, timeout=30,
            )  # fmt: skip
            took.append(time.perf_counter() - start)
            if done.returncode != 0 or done.stderr.strip():
                raise RuntimeError(f"the hook failed: {done.stderr[-500:]}")
    return times[command], times[full]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime + stime


def _timed_get(url: str, cookie: str) -> tuple[int, float]:
    request = urllib.request.Request(url, headers={"Cookie": cookie})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, time.perf_counter() - start


def _wake_latencies(posted: list[dict], dirs: dict[str, Path]) -> list[float]:
    """Seconds from each message's commit to the first nudge typed after it."""
    typed: dict[str, list[float]] = {}
    for name, directory in dirs.items():
        path = directory / "received.times"
        lines = path.read_text().splitlines() if path.exists() else []
        typed[name] = [
            float(line.split("\t", 1)[0]) for line in lines if "new Fleet message" in line
        ]
    latencies = []
    for item in posted:
        after = [t for t in typed.get(item["agent"], []) if t >= item["at"]]
        if after:
            latencies.append(min(after) - item["at"])
    return latencies


# --- the Django side, in a child process on the bench's database ----------------


def _seed(agents: int) -> dict:
    from fleet.bench import fakecli
    from fleet.bench.seed import seed_session
    from fleet.models import Agent, Repository, Runner
    from fleet.spawn import spawn

    repository = Repository.objects.create(name="Bench", slug="bench", path="/nonexistent")
    runner = Runner.objects.create(name="bench")
    token = runner.issue_token()
    out = []
    for n in range(agents):
        spawned = spawn(
            repository=repository,
            role=Agent.ORCHESTRATOR,
            name=f"cli-{n}",
            harness="command",
            command=f"{sys.executable} {fakecli.__file__}",
        )
        out.append({"name": spawned.agent.name, "directory": str(spawned.directory)})
    return {"runner_token": token, "agents": out, **seed_session()}


def _message(names: list[str], count: int, every: float) -> list[dict]:
    from django.contrib.auth.models import User

    from fleet import runtime
    from fleet.models import Agent

    lead = User.objects.get(username="bench-watcher")
    sent = []
    for i in range(count):
        agent = Agent.objects.get(name=names[i % len(names)])
        at = time.time()
        runtime.message(agent, by=lead, subject=f"bench {i}", body="wake up")
        sent.append({"agent": agent.name, "at": at})
        time.sleep(every)
    return sent


def _events(kind: str) -> dict:
    from fleet.models import Event

    first: dict[str, float] = {}
    for name, created in (
        Event.objects.filter(kind=kind)
        .order_by("created_at")
        .values_list("agent__name", "created_at")
    ):
        first.setdefault(name, created.timestamp())
    return first


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fleet.bench.runtime")
    parser.add_argument("what", choices=["seed", "message", "events"])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--to", default="")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--kind", default="agent.crashed")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    import django

    django.setup()
    if args.what == "seed":
        result: Any = _seed(args.agents)
    elif args.what == "message":
        result = _message(args.to.split(","), args.count, args.every)
    else:
        result = _events(args.kind)
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
