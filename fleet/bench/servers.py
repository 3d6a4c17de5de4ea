"""Start and stop Fleet's ASGI server (daphne or uvicorn) as a child process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def start_worker(env: dict, log: Path, interval: float = 0.5) -> subprocess.Popen:
    """``manage.py fleet_worker`` ticking every ``interval`` seconds, its output
    appended to ``log``."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "manage.py", "fleet_worker", "--interval", f"{interval:g}"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=out,
        )


def stop_process(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    """Terminate a child, and kill it if it is not gone within ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_command(kind: str, port: int, access_log: bool = True) -> list[str]:
    app = "fleet.asgi:application"
    if kind == "daphne":
        quiet = [] if access_log else ["-v", "0"]
        return [sys.executable, "-m", "daphne", *quiet, "-b", "127.0.0.1", "-p", str(port), app]
    if kind == "uvicorn":
        quiet = [] if access_log else ["--no-access-log"]
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            *quiet,
            "--lifespan",
            "off",
            app,
        ]
    raise ValueError(f"unknown server {kind!r} (daphne or uvicorn)")


def rss_kb(pid: int | None) -> int | None:
    """Resident memory of a process (Linux /proc), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, TypeError):
        return None
    return None


class Server:
    """One ASGI server process serving Fleet on 127.0.0.1:port.

    ``env`` is layered over the current environment; the server's output goes to a
    log file, never a pipe (it logs every request, and a full pipe would block it).
    """

    def __init__(
        self,
        port: int,
        data_dir: Path,
        env: dict[str, str] | None = None,
        kind: str = "daphne",
        access_log: bool = True,
        inherit_env: bool = True,
    ) -> None:
        self.port, self.data_dir, self.kind, self.access_log = port, data_dir, kind, access_log
        self.env = env or {}
        self.inherit_env = inherit_env  # False: ``env`` is the whole environment
        self.proc: subprocess.Popen | None = None
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log = data_dir / f"{kind}-{port}.log"
        self.url = f"http://127.0.0.1:{port}"

    def command(self) -> list[str]:
        return server_command(self.kind, self.port, self.access_log)

    def start(self, timeout: float = 30) -> Server:
        base = os.environ if self.inherit_env else {}
        env = {**base, "FLEET_DATA_DIR": str(self.data_dir), **self.env}
        env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.kind} exited: {self.log.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                        return self
                except OSError:
                    time.sleep(0.2)
            raise RuntimeError(f"{self.kind} did not answer within {timeout:.0f} s")
        except BaseException:  # Ctrl-C included: never leave the server behind
            self.kill()
            raise

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def rss_kb(self) -> int | None:
        """Resident memory of the server process (Linux /proc), or None."""
        return rss_kb(self.pid)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
