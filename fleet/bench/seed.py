"""Seed a throwaway benchmark database; run as ``python -m fleet.bench.seed``.

It runs in its own process (with the bench's DATABASE_URL) so that the benchmark
never touches the user's own database. Prints JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def seed_heartbeat(agents: int) -> dict:
    """N builder agents, each working on its own leased task in a running wave,
    each with a USD budget far above what the run can spend."""
    from fleet.models import Agent, AgentSession, Budget, Plan, Repository, Task, Wave

    repo = Repository.objects.create(name="Bench", slug="bench", path="/nonexistent")
    plan = Plan.objects.create(name="Bench", slug="bench")
    wave = Wave.objects.create(plan=plan, number=1, status=Wave.RUNNING)
    out = []
    for n in range(agents):
        agent = Agent.objects.create(name=f"bench-{n}", role=Agent.BUILDER, repository=repo)
        token = agent.issue_token()
        AgentSession.objects.create(agent=agent)
        Budget.objects.create(scope="agent", agent=agent, limit_usd=1_000_000)
        task = Task.objects.create(
            key=f"B-{n}", wave=wave, repository=repo, title=f"Bench {n}", status=Task.READY
        )
        task.assign(agent=agent)
        task.start(by=agent, epoch=task.lease_epoch)
        agent.start_work(task=task)
        task.refresh_from_db()
        out.append({"name": agent.name, "token": token, "epoch": task.lease_epoch})
    return {"agents": out}


def counts() -> dict:
    from fleet.models import Agent, SpendEvent

    return {
        "spend_events": SpendEvent.objects.count(),
        "agents_seen": Agent.objects.filter(last_heartbeat_at__isnull=False).count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.bench.seed")
    parser.add_argument("what", choices=["heartbeat", "counts"])
    parser.add_argument("--agents", type=int, default=20)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    import django

    django.setup()
    result = seed_heartbeat(args.agents) if args.what == "heartbeat" else counts()
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
