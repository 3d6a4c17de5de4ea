from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from fleet.worker import SWEEPS, Worker


class Command(BaseCommand):
    help = "Run Fleet's worker: lease and heartbeat sweeps, the merge queue, worktree cleanup."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--once", action="store_true", help="run one tick and exit")
        parser.add_argument(
            "--interval",
            type=float,
            default=settings.FLEET_WORKER_INTERVAL,
            help="seconds between ticks (default: %(default)s)",
        )
        names = [name for name, _ in SWEEPS]
        parser.add_argument(
            "--only",
            action="append",
            choices=names,
            help="run only this sweep (repeatable), e.g. a worker of its own for merges",
        )
        parser.add_argument(
            "--skip", action="append", choices=names, default=[], help="do not run this sweep"
        )

    def handle(self, *args: Any, once: bool, interval: float, **options: Any) -> None:
        if interval <= 0:
            self.stderr.write("--interval must be positive")
            raise SystemExit(2)
        chosen = options["only"] or [name for name, _ in SWEEPS]
        sweeps = tuple(name for name in chosen if name not in options["skip"])
        if not sweeps:
            self.stderr.write("nothing to run: --skip leaves no sweep")
            raise SystemExit(2)
        logging.getLogger("fleet.worker").setLevel(logging.INFO)
        worker = Worker(interval=interval, sweeps=sweeps)
        worker.install_signal_handlers()
        self.stdout.write(
            f"fleet_worker: started (interval {interval:g}s; sweeps: {', '.join(sweeps)})"
        )
        self.stdout.flush()
        ticks = worker.run(once=once)
        self.stdout.write(f"fleet_worker: stopped after {ticks} tick(s)")
