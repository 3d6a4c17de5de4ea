"""``manage.py fleet_bench {heartbeat,git,merges,plan,live,review,sim,soak,runtime,all}``:
measure Fleet on this machine.

Each benchmark starts what it needs on 127.0.0.1 over throwaway data (a temporary
SQLite database, or a fresh PostgreSQL database when --database-url names one; a
generated repository in a temporary directory), drives it, stops it, prints a table
and writes the figures as JSON.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from fleet.bench import everything, gitbench, heartbeat, live, mergebench, plan, simbench, soak
from fleet.bench import review as reviewbench
from fleet.bench import runtime as runtimebench
from fleet.bench.heartbeat import INHERIT


def _database_option(parser) -> None:
    parser.add_argument(
        "--database-url",
        default=os.environ.get("FLEET_BENCH_DATABASE_URL", ""),
        help="PostgreSQL server to create a throwaway database on (default: SQLite)",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="Redis for the channel layer (default: REDIS_URL from the environment, if set)",
    )


def _redis(options) -> str | None:
    return options["redis_url"] if options.get("redis_url") is not None else INHERIT


class Command(BaseCommand):
    help = "Benchmark Fleet on this machine (loopback only, bounded in time and size)."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(
            dest="bench",
            required=True,
            metavar="{heartbeat,git,merges,plan,live,sim,soak,runtime,all}",
        )
        hb = sub.add_parser("heartbeat", help="agents posting heartbeats vs a trivial async view")
        hb.add_argument("--agents", type=int, default=20, help="simulated agents (default 20)")
        hb.add_argument("--seconds", type=float, default=10, help="measured seconds per run")
        hb.add_argument("--warmup", type=float, default=2, help="unmeasured seconds first")
        hb.add_argument(
            "--server",
            action="append",
            choices=["daphne", "uvicorn"],
            help="ASGI server(s) to measure (repeatable; default daphne)",
        )
        hb.add_argument(
            "--processes", type=int, default=1, help="web processes sharing the load (default 1)"
        )
        _database_option(hb)
        hb.add_argument("--json", dest="json_path", help="where to write the JSON figures")

        gb = sub.add_parser("git", help="worktrees, stale-base report, merge queue")
        gb.add_argument("--files", type=int, default=20_000)
        gb.add_argument("--commits", type=int, default=10_000)
        gb.add_argument("--worktrees", type=int, default=100)
        gb.add_argument("--merges", type=int, default=20)
        gb.add_argument(
            "--behind", type=int, default=400, help="commits main is past the stale fork"
        )
        gb.add_argument("--json", dest="json_path", help="where to write the JSON figures")

        mb = sub.add_parser("merges", help="the merge queue one at a time vs in batches")
        mb.add_argument("--tasks", type=int, default=10, help="approved tasks queued (default 10)")
        mb.add_argument(
            "--check-seconds", type=float, default=5, help="length of the check (default 5)"
        )
        mb.add_argument("--failing", type=int, default=1, help="tasks that break the check")
        mb.add_argument("--batch", type=int, default=5, help="the batched run's size (default 5)")
        mb.add_argument("--json", dest="json_path", help="where to write the JSON figures")

        pb = sub.add_parser("plan", help="shared-file matrix of a large wave; claims under a race")
        pb.add_argument("--tasks", type=int, default=50)
        pb.add_argument("--paths", type=int, default=200, help="declared paths per task")
        pb.add_argument("--files", type=int, default=20_000, help="files in the repository")
        pb.add_argument("--claimers", type=int, default=100)
        pb.add_argument("--seconds", type=float, default=10, help="seconds of claiming")
        _database_option(pb)
        pb.add_argument("--json", dest="json_path", help="where to write the JSON figures")

        sb = sub.add_parser("sim", help="the living demo's agents as the load: a whole sprint")
        sb.add_argument("--builders", type=int, default=4)
        sb.add_argument("--reviewers", type=int, default=2)
        sb.add_argument("--speed", type=float, default=20, help="simulated time per real second")
        sb.add_argument("--duration", type=float, default=300, help="real seconds at most")
        sb.add_argument("--seed", type=int, default=1)
        _database_option(sb)
        sb.add_argument("--json", dest="json_path", help="where to write the JSON figures")

        so = sub.add_parser("soak", help="a steady realistic load: RSS, descriptors, git processes")
        so.add_argument("--seconds", type=float, default=600, help="how long (default 600)")
        so.add_argument("--interval", type=float, default=5, help="seconds between samples")
        so.add_argument("--warmup", type=float, default=120, help="seconds before measuring")
        _database_option(so)
        so.add_argument("--json", dest="json_path", help="where to write the JSON figures")

        al = sub.add_parser(
            "all", help="every benchmark, SQLite and PostgreSQL + Redis, and a soak"
        )
        al.add_argument(
            "--soak-seconds",
            type=float,
            default=None,
            help="length of the soak (default 600; 20 with --quick)",
        )
        al.add_argument("--quick", action="store_true", help="short runs: check the harness")
        _database_option(al)
        al.add_argument("--json", dest="json_path", help="where to write the JSON figures")

        lb = sub.add_parser("live", help="heartbeat-to-dashboard latency over websockets")
        lb.add_argument("--agents", type=int, default=500)
        lb.add_argument("--dashboards", type=int, default=50)
        lb.add_argument("--seconds", type=float, default=20)
        lb.add_argument(
            "--quiet-seconds",
            type=float,
            default=20,
            help="then this long quiet: 20 agents beating every 10 s (0: no quiet phase)",
        )
        _database_option(lb)
        lb.add_argument("--json", dest="json_path", help="where to write the JSON figures")

        vb = sub.add_parser("review", help="the review workspace: a task page on a large diff")
        vb.add_argument("--lines", type=int, default=5000, help="changed lines (default 5,000)")
        vb.add_argument("--files", type=int, default=40, help="files they are in (default 40)")
        _database_option(vb)
        vb.add_argument("--json", dest="json_path", help="where to write the JSON figures")

        rb = sub.add_parser(
            "runtime", help="runner: hook overhead, wake latency, dead CLIs, N agents' cost"
        )
        rb.add_argument("--agents", type=int, default=20)
        rb.add_argument("--samples", type=int, default=30)
        _database_option(rb)
        rb.add_argument("--json", dest="json_path", help="where to write the JSON figures")

    def handle(self, *args, **options) -> None:
        progress = lambda line: self.stderr.write(line)  # noqa: E731
        try:
            if options["bench"] == "heartbeat":
                results = self._heartbeat(options, progress)
                text = heartbeat.table(results)
            elif options["bench"] == "live":
                results = self._live(options, progress)
                text = live.tables(results)
            elif options["bench"] == "review":
                results = self._review(options, progress)
                text = reviewbench.table(results)
            elif options["bench"] == "runtime":
                results = self._runtime(options, progress)
                text = runtimebench.table(results)
            elif options["bench"] == "soak":
                results = self._soak(options, progress)
                text = soak.table(results)
            elif options["bench"] == "all":
                results = self._all(options, progress)
                text = everything.table(results)
            elif options["bench"] == "sim":
                results = self._sim(options, progress)
                text = simbench.table(results)
            elif options["bench"] == "merges":
                results = self._merges(options, progress)
                text = mergebench.table(results)
            elif options["bench"] == "plan":
                results = self._plan(options, progress)
                text = plan.table(results)
            else:
                results = self._git(options, progress)
                text = gitbench.table(results)
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(text)
        path = self._save(options, results)
        self.stdout.write(f"figures written to {path}")

    def _save(self, options, results: dict) -> Path:
        if "json_to" not in options:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            default = settings.FLEET_DATA_DIR / "bench" / f"{options['bench']}-{stamp}.json"
            options["json_to"] = Path(options["json_path"] or default)
        path = options["json_to"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        return path

    def _heartbeat(self, options, progress) -> dict:
        if not 1 <= options["agents"] <= 500:
            raise CommandError("--agents must be between 1 and 500")
        if not 0.5 <= options["seconds"] <= 600:
            raise CommandError("--seconds must be between 0.5 and 600")
        if not 1 <= options["processes"] <= 8:
            raise CommandError("--processes must be between 1 and 8")
        return heartbeat.run(
            agents=options["agents"],
            seconds=options["seconds"],
            warmup=max(0.0, min(options["warmup"], 60)),
            servers=tuple(options["server"] or ["daphne"]),
            database_url=options["database_url"] or None,
            progress=progress,
            processes=options["processes"],
            redis_url=_redis(options),
        )

    def _review(self, options, progress) -> dict:
        if not 10 <= options["lines"] <= 200_000:
            raise CommandError("--lines must be between 10 and 200000")
        if not 2 <= options["files"] <= 2_000:
            raise CommandError("--files must be between 2 and 2000")
        return reviewbench.run(
            lines=options["lines"],
            files=options["files"],
            database_url=options["database_url"] or None,
            progress=progress,
        )

    def _git(self, options, progress) -> dict:
        bounds = {
            "files": (10, 200_000),
            "commits": (2, 100_000),
            "worktrees": (1, 500),
            "behind": (1, 10_000),
        }
        for name, (low, high) in {**bounds, "merges": (1, 200)}.items():
            if not low <= options[name] <= high:
                raise CommandError(f"--{name} must be between {low} and {high}")
        return gitbench.run(
            files=options["files"],
            commits=options["commits"],
            worktree_count=options["worktrees"],
            merges=options["merges"],
            behind=options["behind"],
            progress=progress,
        )

    def _merges(self, options, progress) -> dict:
        for name, (low, high) in {"tasks": (2, 200), "batch": (2, 20)}.items():
            if not low <= options[name] <= high:
                raise CommandError(f"--{name} must be between {low} and {high}")
        if not 0 <= options["failing"] < options["tasks"]:
            raise CommandError("--failing must be between 0 and --tasks - 1")
        if not 0 <= options["check_seconds"] <= 600:
            raise CommandError("--check-seconds must be between 0 and 600")
        return mergebench.run(
            tasks=options["tasks"],
            check_seconds=options["check_seconds"],
            failing=options["failing"],
            batch=options["batch"],
            progress=progress,
        )

    def _plan(self, options, progress) -> dict:
        bounds = {
            "tasks": (2, 500),
            "paths": (10, 500),
            "files": (1_000, 200_000),
            "claimers": (2, 500),
        }
        for name, (low, high) in bounds.items():
            if not low <= options[name] <= high:
                raise CommandError(f"--{name} must be between {low} and {high}")
        if options["tasks"] * 300 > options["files"]:
            raise CommandError("--files must be at least 300 × --tasks")
        if not 0.5 <= options["seconds"] <= 600:
            raise CommandError("--seconds must be between 0.5 and 600")
        return plan.run(
            tasks=options["tasks"],
            paths=options["paths"],
            files=options["files"],
            claimers=options["claimers"],
            seconds=options["seconds"],
            database_url=options["database_url"] or None,
            progress=progress,
            redis_url=_redis(options),
        )

    def _live(self, options, progress) -> dict:
        for name, (low, high) in {"agents": (1, 2000), "dashboards": (1, 500)}.items():
            if not low <= options[name] <= high:
                raise CommandError(f"--{name} must be between {low} and {high}")
        if not 1 <= options["seconds"] <= 600:
            raise CommandError("--seconds must be between 1 and 600")
        if not 0 <= options["quiet_seconds"] <= 600:
            raise CommandError("--quiet-seconds must be between 0 and 600")
        # The in-memory layer, then Redis (--redis-url, else REDIS_URL) when there is one.
        return live.run_layers(
            agents=options["agents"],
            dashboards=options["dashboards"],
            seconds=options["seconds"],
            quiet=options["quiet_seconds"],
            database_url=options["database_url"] or None,
            progress=progress,
            redis_url=options["redis_url"] or os.environ.get("REDIS_URL") or None,
        )

    def _runtime(self, options, progress) -> dict:
        if not 1 <= options["agents"] <= 100 or not 5 <= options["samples"] <= 500:
            raise CommandError("--agents must be 1-100 and --samples 5-500")
        return runtimebench.run(
            agents=options["agents"],
            samples=options["samples"],
            database_url=options["database_url"] or None,
            progress=progress,
        )

    def _sim(self, options, progress) -> dict:
        if not 1 <= options["builders"] <= 8 or not 1 <= options["reviewers"] <= 4:
            raise CommandError("--builders must be 1-8 and --reviewers 1-4")
        if not 1 <= options["speed"] <= 100:
            raise CommandError("--speed must be between 1 and 100")
        if not 10 <= options["duration"] <= 1800:
            raise CommandError("--duration must be between 10 and 1800")
        return simbench.run(
            builders=options["builders"],
            reviewers=options["reviewers"],
            speed=options["speed"],
            duration=options["duration"],
            seed=options["seed"],
            database_url=options["database_url"] or None,
            progress=progress,
            redis_url=_redis(options),
        )

    def _soak(self, options, progress) -> dict:
        if not 5 <= options["seconds"] <= 24 * 3600:
            raise CommandError("--seconds must be between 5 and 86400")
        if not 0.5 <= options["interval"] <= 600 or options["warmup"] < 0:
            raise CommandError("--interval must be 0.5-600 and --warmup not negative")
        return soak.run(
            seconds=options["seconds"],
            interval=options["interval"],
            warmup=min(options["warmup"], options["seconds"] / 2),
            database_url=options["database_url"] or None,
            redis_url=_redis(options),
            progress=progress,
        )

    def _all(self, options, progress) -> dict:
        if options["soak_seconds"] is None:
            options["soak_seconds"] = 20 if options["quick"] else 600
        if not 5 <= options["soak_seconds"] <= 24 * 3600:
            raise CommandError("--soak-seconds must be between 5 and 86400")
        redis = (
            options["redis_url"]
            if options["redis_url"] is not None
            else os.environ.get("REDIS_URL")
        )
        return everything.run(
            database_url=options["database_url"] or None,
            redis_url=redis or None,
            soak_seconds=options["soak_seconds"],
            quick=options["quick"],
            progress=progress,
            checkpoint=lambda figures: self._save(options, figures),
        )
