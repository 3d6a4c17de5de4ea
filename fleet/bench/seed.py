"""Seed (and for the merge queue, drive) a throwaway benchmark database; run as
``python -m fleet.bench.seed``.

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


def seed_and_merge(repo: str, count: int) -> dict:
    """``count`` approved tasks, each with one commit in its own worktree, merged one by
    one through the real merge queue; the seconds each merge took."""
    import time
    from pathlib import Path

    from fleet import merging
    from fleet.git import repo as gitrepo
    from fleet.git import worktrees
    from fleet.models import Agent, MergeRequest, Plan, Repository, Task, Wave

    repository = Repository.objects.create(
        name="Bench", slug="bench", path=repo, check_command="true"
    )
    plan = Plan.objects.create(name="Bench", slug="bench")
    wave = Wave.objects.create(plan=plan, number=1, status=Wave.RUNNING)
    builder = Agent.objects.create(name="bench-builder", role=Agent.BUILDER)
    root = Path(repo).parent / "queue"
    for n in range(count):
        key = f"M-{n}"
        wt = root / key
        worktrees.create(repo, worktree=wt, branch=f"feat/{key}", remote="origin", default="main")
        head = gitrepo.commit_files(
            path=wt, files={f"src/new/m{n}.py": f"M = {n}\n"}, message=f"work on {key}"
        )
        task = Task.objects.create(
            key=key,
            wave=wave,
            repository=repository,
            title=f"Merge {n}",
            status=Task.APPROVED,
            head_sha=head,
            worktree_path=str(wt),
            assignee=builder,
        )
        merging.enqueue(task, by=None)
    seconds, cleanup = [], []
    while MergeRequest.objects.filter(result=MergeRequest.PENDING).exists():
        started = time.perf_counter()
        head = merging.process(repository)
        seconds.append(time.perf_counter() - started)
        if head is None or head.result == MergeRequest.PENDING:
            break
        started = time.perf_counter()
        merging.collect_merged()
        cleanup.append(time.perf_counter() - started)
    merged = MergeRequest.objects.filter(result=MergeRequest.MERGED).count()
    return {"seconds": seconds, "cleanup": cleanup, "merged": merged}


def counts() -> dict:
    from fleet.models import Agent, SpendEvent

    return {
        "spend_events": SpendEvent.objects.count(),
        "agents_seen": Agent.objects.filter(last_heartbeat_at__isnull=False).count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.bench.seed")
    parser.add_argument("what", choices=["heartbeat", "counts", "merges"])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--repo", default="")
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fleet.settings")
    import django

    django.setup()
    if args.what == "heartbeat":
        result = seed_heartbeat(args.agents)
    elif args.what == "merges":
        result = seed_and_merge(args.repo, args.count)
    else:
        result = counts()
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
