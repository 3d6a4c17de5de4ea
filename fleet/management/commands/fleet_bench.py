"""``manage.py fleet_bench heartbeat``: measure Fleet on this machine.

Starts its own server processes on 127.0.0.1 over a throwaway database (SQLite, or a
fresh PostgreSQL database when --database-url names one), drives them, stops them,
prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from fleet.bench import heartbeat


class Command(BaseCommand):
    help = "Benchmark Fleet on this machine (loopback only, bounded in time)."

    def add_arguments(self, parser) -> None:
        sub = parser.add_subparsers(dest="bench", required=True, metavar="{heartbeat}")
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
            "--database-url",
            default=os.environ.get("FLEET_BENCH_DATABASE_URL", ""),
            help="PostgreSQL server to create a throwaway database on (default: SQLite)",
        )
        hb.add_argument("--json", dest="json_path", help="where to write the JSON figures")

    def handle(self, *args, **options) -> None:
        if not 1 <= options["agents"] <= 500:
            raise CommandError("--agents must be between 1 and 500")
        if not 0.5 <= options["seconds"] <= 600:
            raise CommandError("--seconds must be between 0.5 and 600")
        try:
            results = heartbeat.run(
                agents=options["agents"],
                seconds=options["seconds"],
                warmup=max(0.0, min(options["warmup"], 60)),
                servers=tuple(options["server"] or ["daphne"]),
                database_url=options["database_url"] or None,
                progress=lambda line: self.stderr.write(line),
            )
        except RuntimeError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(heartbeat.table(results))
        path = Path(
            options["json_path"]
            or settings.FLEET_DATA_DIR
            / "bench"
            / f"heartbeat-{time.strftime('%Y%m%d-%H%M%S')}.json"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
        self.stdout.write(f"figures written to {path}")
