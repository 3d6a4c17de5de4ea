"""The real agent CLIs (installed by ``make clis``) under a real runner process, a live
Fleet and a private tmux server; the model is a scripted server of ours."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from fleet.models import Runner, Runtime
from fleet.runner.tmux import Tmux
from tests.agent.conftest import live_fleet  # noqa: F401 - the session's live Fleet

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".tools" / "node_modules" / ".bin"
API_KEY = "sk-ant-scripted-0123456789abcdefghijklmnop"


def cli(name: str) -> Path:
    """The pinned CLI, or a skip saying how to install it (CI requires it: ``make clis``
    runs there, and FLEET_REQUIRE_CLIS=1 turns a missing CLI into a failure)."""
    binary = BIN / name
    if not binary.exists():
        if os.environ.get("FLEET_REQUIRE_CLIS") == "1":
            pytest.fail(f"{binary} is missing: run `make clis`")
        pytest.skip(f"{name} is not installed here (make clis)")
    return binary


@pytest.fixture
def tmux():
    server = Tmux(socket=f"fleet-cli-{uuid.uuid4().hex[:10]}")
    yield server
    server._run("kill-server", check=False)


def claude_config(folder: Path, trusted: list[str]) -> Path:
    """What a person who set up Claude Code has: onboarding done, the API key approved,
    the folders trusted. (Fleet writes each worktree's project settings itself.)"""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".claude.json").write_text(
        json.dumps(
            {
                "hasCompletedOnboarding": True,
                "customApiKeyResponses": {"approved": [API_KEY[-20:]], "rejected": []},
                "projects": {path: {"hasTrustDialogAccepted": True} for path in trusted},
            }
        )
    )
    return folder


class RunnerProcess:
    """``python -m fleet.runner`` as a host runs it, restartable and killable with -9."""

    def __init__(self, url: str, tmux: Tmux, workdir: Path, env: dict[str, str]) -> None:
        runner = Runner.objects.create(name=f"host-{uuid.uuid4().hex[:6]}")
        self.name = runner.name
        self.token_file = workdir / "runner.token"
        self.token_file.write_text(runner.issue_token())
        self.token_file.chmod(0o600)
        self.log = workdir / "runner.log"
        self.url, self.tmux, self.env = url, tmux, env
        self.process: subprocess.Popen | None = None

    def start(self) -> RunnerProcess:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fleet.runner",
                "--url",
                self.url,
                "--token-file",
                str(self.token_file),
                "--socket",
                self.tmux.socket,
                "--path",
                str(BIN),
            ],
            cwd=ROOT,
            env={**self.env, "FLEET_RUNNER_LOG": "DEBUG"},
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("a"),
            start_new_session=True,
        )
        return self

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def wait_for(check: Callable[[], object], *, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            states = list(Runtime.objects.values_list("agent__name", "state", "error", "screen"))
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            pytest.fail(f"timed out waiting for {what}; runtimes: {states}\nrunner log:\n{tail}")
        time.sleep(0.3)


def wait_until_ended(tmux: Tmux, agent: str, *, log: Path, timeout: float = 60) -> None:
    """The agent's CLI and its tmux session are gone, and Fleet recorded it ended."""
    wait_for(
        lambda: f"fleet-{agent}" not in tmux.panes(),
        timeout=timeout,
        what=f"{agent}'s CLI ended",
        log=log,
    )
    wait_for(
        lambda: Runtime.objects.get(agent__name=agent).state == Runtime.ENDED,
        timeout=20,
        what=f"{agent}'s runtime ended",
        log=log,
    )
