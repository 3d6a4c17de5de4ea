"""tmux, driven through its command line: one session per agent, named
``fleet-<agent>``, tagged with the runner and the session generation it runs.

Sessions keep their pane after the CLI exits (``remain-on-exit``), so the exit code
and the last screen can be read and reported: a runner never has to guess whether
a prompt on screen is the CLI's or a bare shell's (there is no shell).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass

PREFIX = "fleet-"
FIELDS = (
    "#{session_name}",
    "#{pane_dead}",
    "#{pane_dead_status}",
    "#{pane_pid}",
    "#{@fleet_generation}",
    "#{@fleet_runner}",
    "#{@fleet_harness}",
    "#{session_created}",
    "#{@fleet_directory}",
)


class TmuxError(Exception):
    pass


@dataclass
class Pane:
    session: str
    dead: bool
    exit_code: int | None
    pid: int | None
    generation: int
    runner: str
    harness: str
    created: int
    directory: str = ""

    @property
    def agent(self) -> str:
        return self.session.removeprefix(PREFIX)


class Tmux:
    def __init__(self, socket: str = "", binary: str = "tmux", timeout: float = 10.0) -> None:
        self.binary, self.socket, self.timeout = binary, socket, timeout
        self.base = [binary] + (["-L", socket] if socket else [])

    def available(self) -> str:
        """tmux's version ("tmux 3.3a"), or raise TmuxError saying why there is none."""
        if shutil.which(self.binary) is None:
            raise TmuxError(f"tmux is not installed (no {self.binary!r} on PATH)")
        return self._run("-V", base=[self.binary]).strip()

    def attach_command(self, agent: str) -> str:
        socket = f" -L {self.socket}" if self.socket else ""
        return f"tmux{socket} attach -t {PREFIX}{agent}"

    def _run(self, *args: str, base: list[str] | None = None, check: bool = True) -> str:
        try:
            done = subprocess.run(
                [*(base or self.base), *args],
                capture_output=True,
                text=True,
                timeout=self.timeout,
                errors="replace",
            )
        except FileNotFoundError as exc:
            raise TmuxError(f"tmux is not installed: {exc}") from exc
        except subprocess.TimeoutExpired as exc:
            raise TmuxError(f"tmux {args[0]} did not answer in {self.timeout:.0f} s") from exc
        if check and done.returncode != 0:
            raise TmuxError(f"tmux {args[0]}: {done.stderr.strip() or done.returncode}")
        return done.stdout

    def panes(self) -> dict[str, Pane]:
        """Every ``fleet-`` session of this tmux server (none when no server runs)."""
        out = self._run("list-panes", "-a", "-F", "\t".join(FIELDS), check=False)
        found: dict[str, Pane] = {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) != len(FIELDS) or not parts[0].startswith(PREFIX):
                continue
            name, dead, status, pid, generation, runner, harness, created, directory = parts
            found.setdefault(
                name,
                Pane(
                    session=name,
                    dead=dead == "1",
                    exit_code=int(status) if dead == "1" and status.lstrip("-").isdigit() else None,
                    pid=int(pid) if pid.isdigit() else None,
                    generation=int(generation) if generation.isdigit() else 0,
                    runner=runner,
                    harness=harness,
                    created=int(created) if created.isdigit() else 0,
                    directory=directory,
                ),
            )
        return found

    def new(
        self,
        session: str,
        *,
        directory: str,
        script: str,
        generation: int,
        runner: str,
        harness: str,
    ) -> None:
        """Start ``script`` in a new detached session; the pane stays after it exits."""
        self._run(
            "new-session", "-d", "-s", session, "-c", directory, "-x", "200", "-y", "50", script,
            ";", "set-option", "-t", session, "remain-on-exit", "on",
            ";", "set-option", "-t", session, "@fleet_generation", str(generation),
            ";", "set-option", "-t", session, "@fleet_runner", runner,
            ";", "set-option", "-t", session, "@fleet_harness", harness,
            ";", "set-option", "-t", session, "@fleet_directory", directory,
        )  # fmt: skip

    def capture(self, session: str, lines: int = 40) -> str:
        return self._run("capture-pane", "-p", "-J", "-t", f"={session}:", "-S", f"-{lines}")

    def type(self, session: str, text: str) -> None:
        """Type ``text`` literally, then Enter (a separate key: some CLIs read a pasted
        newline as part of the text)."""
        self._run("send-keys", "-t", f"={session}:", "-l", text)
        time.sleep(0.15)  # an Enter in the same burst reads as part of a paste
        self._run("send-keys", "-t", f"={session}:", "Enter")

    def keys(self, session: str, *keys: str) -> None:
        self._run("send-keys", "-t", f"={session}:", *keys)

    def kill(self, session: str) -> None:
        self._run("kill-session", "-t", f"={session}", check=False)
