"""``manage.py fleet_simulate``: the living demo — simulated agents at work.

Sets up a fresh repository and a two-wave plan, starts builders and reviewers that
work only through the HTTP API of a running Fleet (``--url``) and git, plays a
patient lead, and prints which steps of the scenario happened and when. The story
starts when a person signs in (``--start now``: at once).
"""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from fleet.sim import director, runner


class Command(BaseCommand):
    help = "Run simulated agents against a running Fleet (the living demo)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--url", default=settings.FLEET_PUBLIC_URL, help="Fleet's base URL")
        parser.add_argument("--builders", type=int, default=4, help="builders (1-8, default 4)")
        parser.add_argument("--reviewers", type=int, default=2, help="reviewers (1-4, default 2)")
        parser.add_argument(
            "--speed", type=float, default=1.0, help="simulated time per real second (0.1-100)"
        )
        parser.add_argument(
            "--duration",
            type=float,
            default=1800,
            help="stop after this many real seconds (default 1800) or when the plan is merged",
        )
        parser.add_argument("--seed", type=int, default=1, help="random seed (reproducible runs)")
        parser.add_argument(
            "--patience",
            type=float,
            default=None,
            help="real seconds the simulated lead leaves a decision to people (default 40 / speed)",
        )
        parser.add_argument("--no-lead", action="store_true", help="people play the lead")
        parser.add_argument(
            "--under-runner",
            action="store_true",
            help="the agents run as CLIs a runner starts in tmux (as `make run` does)",
        )
        parser.add_argument(
            "--start",
            choices=("sign-in", "now"),
            default="now" if settings.FLEET_DEMO_START == "now" else "sign-in",
            help="start the story when a person signs in (default; FLEET_DEMO_START) or now",
        )
        parser.add_argument("--wait", type=float, default=60, help="seconds to wait for --url")
        parser.add_argument("--json", dest="json_path", help="where to write the step report")

    def handle(self, *args: Any, **options: Any) -> None:
        speed = options["speed"]
        if not 0.1 <= speed <= 100:
            raise CommandError("--speed must be between 0.1 and 100")
        if not 1 <= options["builders"] <= 8 or not 1 <= options["reviewers"] <= 4:
            raise CommandError("--builders must be 1-8 and --reviewers 1-4")
        if not 1 <= options["duration"] <= 24 * 3600:
            raise CommandError("--duration must be between 1 and 86400 seconds")
        url = options["url"].rstrip("/")
        self._wait_for(url, options["wait"])
        lock = threading.Lock()

        def say(line: str) -> None:
            with lock:
                self.stdout.write(f"{time.strftime('%H:%M:%S')} {line}")
                self.stdout.flush()

        stage = director.setup(builders=options["builders"], reviewers=options["reviewers"])
        say(
            f"simulation run {stage.run}: plan {stage.plan.slug}, repository "
            f"{stage.repository.slug}, {options['builders']} builder(s), "
            f"{options['reviewers']} reviewer(s), speed ×{speed:g}, seed {options['seed']}"
        )
        # SIGTERM (``make run`` stopping) ends the run like Ctrl-C: agents stop, the
        # report is still written.
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
        results = runner.play(
            stage,
            url=url,
            speed=speed,
            seed=options["seed"],
            patience=options["patience"],
            duration=options["duration"],
            lead=not options["no_lead"],
            say=say,
            stop=stop,
            under_runner=options["under_runner"],
            wait_for_people=options["start"] == "sign-in",
        )
        self.stdout.write(self.table(results))
        path = options["json_path"] or (
            Path(settings.FLEET_DATA_DIR) / "simulations" / f"run-{stage.run}.json"
        )
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(results, indent=2) + "\n")
        self.stdout.write(f"report written to {path}")

    def table(self, results: dict[str, Any]) -> str:
        lines = [f"\nScenario (run {results['run']}, {results['seconds']} s):"]
        timeline = results.get("timeline", {})
        for name, step in results["steps"].items():
            mark = "✓" if step["ok"] else "·"
            at = f" (at {timeline[name]:g} s)" if name in timeline else ""
            lines.append(
                f"  {mark} {step['what']}{at}" + (f" — {step['detail']}" if step["detail"] else "")
            )
        if "finished" in timeline:
            lines.append(f"  the plan was merged {timeline['finished']:g} s after the start")
        return "\n".join(lines)

    def _wait_for(self, url: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2):
                    return
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise CommandError(f"Fleet does not answer at {url}: {exc}") from exc
                time.sleep(0.5)
