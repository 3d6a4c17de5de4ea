"""``python -m fleet.runner``: supervise this host's agent CLIs for Fleet.

The token comes from ``FLEET_RUNNER_TOKEN`` or ``--token-file`` (never the command
line: ``ps`` shows it to every user). Stops on SIGTERM/SIGINT, leaving every agent's
tmux session running: a runner started again adopts them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from fleet.runner.client import Fleet, FleetUnreachable, RunnerRefused
from fleet.runner.supervisor import Supervisor
from fleet.runner.tmux import Tmux

log = logging.getLogger("fleet.runner")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fleet.runner", description=__doc__)
    parser.add_argument("--url", default=os.environ.get("FLEET_URL", "http://127.0.0.1:8000"))
    parser.add_argument(
        "--token-file",
        type=Path,
        default=os.environ.get("FLEET_RUNNER_TOKEN_FILE") or None,
        help="a file holding the runner token (else FLEET_RUNNER_TOKEN)",
    )
    parser.add_argument(
        "--socket",
        default=os.environ.get("FLEET_TMUX_SOCKET", ""),
        help="tmux socket name (-L); empty for the default server",
    )
    parser.add_argument(
        "--path",
        default=os.environ.get("FLEET_RUNNER_PATH", ""),
        help="directories searched for agent CLIs before PATH (os.pathsep-separated)",
    )
    parser.add_argument("--once", action="store_true", help="one sync, then exit")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("FLEET_RUNNER_LOG", "INFO"),
        format="%(asctime)s fleet-runner %(levelname)s %(message)s",
    )
    # Not passed on: the tmux server (and every agent's CLI) inherits this environment.
    token = os.environ.pop("FLEET_RUNNER_TOKEN", "")
    os.environ.pop("FLEET_RUNNER_TOKEN_FILE", None)
    if args.token_file:
        try:
            token = args.token_file.read_text().strip()
        except OSError as exc:
            log.error("cannot read the runner token: %s", exc)
            return 2
    if not token:
        log.error(
            "no runner token: register one (Runners page, or manage.py fleet_runner --register "
            "NAME) and pass it in FLEET_RUNNER_TOKEN or --token-file"
        )
        return 2
    supervisor = Supervisor(Fleet(args.url, token), Tmux(args.socket), extra_path=args.path)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("runner started (pid %d), syncing with %s", os.getpid(), args.url)
    failures = 0
    while not stop.is_set():
        try:
            supervisor.tick()
            failures = 0
        except RunnerRefused as exc:
            log.error(
                "Fleet refused this runner (%s); stopping. The agents' tmux sessions are "
                "left running; a runner with a valid token adopts them.",
                exc,
            )
            return 3
        except FleetUnreachable as exc:
            failures += 1
            if failures in (1, 10) or failures % 60 == 0:
                log.warning("Fleet unreachable (%s); sessions left as they are", exc)
        if args.once:
            break
        stop.wait(min(supervisor.interval * (1 + min(failures, 5)), 30))
    log.info("runner stopped; the agents' sessions keep running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
