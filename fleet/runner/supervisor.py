"""The runner's loop: look at tmux, report to Fleet, do what the answer says.

Each tick: read every ``fleet-`` session this runner tagged (alive, dead with its exit
code, the screen), classify it (booting, ready at the CLI's own prompt, busy), send
that to Fleet, and reconcile with the answer: start what should run and does not,
end what should not run (cleanly: the CLI's exit command, then a kill after a grace
period), start a fresh session where the generation moved on, and type a nudge into
an idle prompt when something new waits for the agent. Nothing is acted on without
an answer, so a Fleet that cannot be reached leaves every session as it is.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import socket
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.runner.harnesses import HARNESSES, Harness, Launch
from fleet.runner.tmux import PREFIX, Pane, Tmux, TmuxError

log = logging.getLogger("fleet.runner")

VERSION = "1"
GRACE = 10.0  # seconds between the exit command (or interrupt) and a kill
SCREEN_EVERY = 1.0  # at most one screen per agent per second
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent.parent)


@dataclass
class Seen:
    """What this runner remembers of one session between ticks."""

    generation: int = 0
    ready_once: bool = False
    screen: str = ""
    state: str = ""
    screen_sent: str | None = None
    screen_at: float = 0.0
    ending_since: float | None = None
    waiting_since: float | None = None
    nudged_through: int = 0
    work_nudged: bool = False
    prompt_typed: bool = False
    typed: str = ""  # the last text typed, until its Enter was seen taken
    typed_at: float = 0.0
    enters: int = 0
    dead_since: float | None = None
    launched_at: float = field(default_factory=time.monotonic)


class Supervisor:
    def __init__(
        self,
        fleet: Any,
        tmux: Tmux,
        *,
        name: str = "",
        extra_path: str = "",
        python: str = sys.executable,
        grace: float = GRACE,
        clock=time.monotonic,
    ) -> None:
        self.fleet, self.tmux, self.name = fleet, tmux, name
        self.extra_path, self.python, self.grace, self.clock = extra_path, python, grace, clock
        self.seen: dict[str, Seen] = {}
        self.failed: dict[str, tuple[int, str]] = {}  # agent -> (generation, why it cannot start)
        self.ended: list[dict] = []
        self.harness_of: dict[str, str] = {}
        self.interval = 1.0
        self.started = time.time()
        self.enters: list[str] = []

    # --- one tick ------------------------------------------------------------

    def tick(self) -> dict[str, Any]:
        tmux_version, error = "", ""
        panes: dict[str, Pane] = {}
        try:
            tmux_version = self.tmux.available()
            # Only sessions a runner started (tagged): a person's own ``fleet-…`` session
            # is never reported nor ended. Before the first answer names this runner,
            # every runner's are reported (Fleet reads only its own); none is ended.
            panes = {
                p.agent: p
                for p in self.tmux.panes().values()
                if p.runner and (p.runner == self.name or not self.name)
            }
        except TmuxError as exc:
            error = f"{exc} on {socket.gethostname()}"
            log.error("%s: no agent can start here until it is fixed", error)
        reports = []
        for agent, pane in panes.items():
            try:
                reports.append(self._observe(agent, pane))
            except Exception as exc:  # e.g. the pane went away while it was read
                log.warning("%s: not observed this tick: %s", agent, exc)
        for agent, (generation, why) in self.failed.items():
            if agent not in panes:
                reports.append(
                    {"agent": agent, "generation": generation, "state": "failed", "error": why}
                )
        answer = self.fleet.sync(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "version": VERSION,
                "tmux": tmux_version,
                "error": error,
                "sessions": reports,
                "ended": self.ended,
            }
        )
        self.ended = []
        self.name = answer.get("runner", self.name)
        self.interval = float(answer.get("interval", self.interval))
        if not error:
            self._reconcile(answer["agents"], panes)
            self._press_enters()
        return answer

    # --- observing -------------------------------------------------------------

    def _harness(self, agent: str, pane: Pane) -> Harness:
        return HARNESSES.get(self.harness_of.get(agent) or pane.harness) or HARNESSES["command"]

    def _observe(self, agent: str, pane: Pane) -> dict[str, Any]:
        seen = self.seen.get(agent)
        if seen is None or seen.generation != pane.generation:
            seen = self.seen[agent] = Seen(generation=pane.generation)  # adopted, or new
            if pane.created and pane.created < self.started - 1:
                # Adopted from an earlier runner: it was given its opening already.
                seen.prompt_typed = seen.ready_once = True
        try:
            screen = self.tmux.capture(pane.session)
        except TmuxError:
            screen = seen.screen
        seen.screen = screen
        harness = self._harness(agent, pane)
        dead, exit_code = pane.dead, pane.exit_code
        if dead and exit_code is None:
            # tmux (3.3) often loses a pane's exit status: launch.sh wrote it. Until
            # either says, wait (a second or two at most): the code is what a person
            # reads first.
            exit_code = _exit_status(pane)
            seen.dead_since = seen.dead_since or self.clock()
            dead = exit_code is not None or self.clock() - seen.dead_since >= 2.0
        state = "exited" if dead else seen.state or "booting"
        if not pane.dead:
            state = self._classify(agent, pane, harness, seen, screen)
        report: dict[str, Any] = {
            "agent": agent,
            "generation": pane.generation,
            "state": state,
            "exit_code": exit_code if dead else None,
            "nudged_through": seen.nudged_through,
            "alive_seconds": max(0.0, time.time() - pane.created) if pane.created else 0.0,
        }
        now = self.clock()
        # A changed screen goes with a changed state at once, else at most once a second.
        due = dead or state != seen.state or now - seen.screen_at >= SCREEN_EVERY
        if screen != seen.screen_sent and due:
            report["screen"] = screen
            seen.screen_sent, seen.screen_at = screen, now
        seen.state = state
        return report

    def _classify(self, agent: str, pane: Pane, harness: Harness, seen: Seen, screen: str) -> str:
        for pattern, keys in harness.dialogs:
            if _search(pattern, screen):
                # A first-run question the CLI asks (trust this folder?): answered
                # with its safe default for an agent's own worktree.
                log.info("%s: answering %r with %s", agent, pattern, keys)
                self.tmux.keys(pane.session, *keys)
                return "booting"
        if harness.busy_at(screen):
            return "busy"
        if harness.ready_at(screen):
            seen.ready_once = True
            return "ready"
        return "busy" if seen.ready_once else "booting"

    # --- acting ----------------------------------------------------------------

    def _reconcile(self, wanted: list[dict], panes: dict[str, Pane]) -> None:
        names = {item["name"] for item in wanted}
        for agent, pane in panes.items():
            if pane.runner != self.name:
                continue  # another runner's (reported before this one knew its name)
            if agent not in names:
                log.warning("%s: no agent in Fleet wants this session; ending it", pane.session)
                self.tmux.kill(pane.session)
                self.seen.pop(agent, None)
                self.ended.append(
                    {"session": pane.session, "reason": "its agent is not this runner's in Fleet"}
                )
        for item in wanted:
            try:
                self._one(item, panes.get(item["name"]))
            except Exception as exc:  # one agent's trouble never stops the others
                log.exception("%s: %s", item["name"], exc)
                self.failed[item["name"]] = (item["generation"], str(exc)[:500] or repr(exc))

    def _one(self, item: dict, pane: Pane | None) -> None:
        agent = item["name"]
        self.harness_of[agent] = item["harness"]
        if item["kill"] and pane is not None and not pane.dead:
            log.info("%s: killed at a person's request", agent)
            self.tmux.kill(pane.session)
            return
        if not item["run"]:
            if pane is not None:
                self._end(item, pane, patience=0.0)
            self.failed.pop(agent, None)
            return
        if pane is None:
            self._launch(item)
            return
        if pane.generation != item["generation"]:
            if pane.dead:
                self.tmux.kill(pane.session)
                self._launch(item)
            else:
                self._end(item, pane, patience=float(item.get("patience") or 0))
            return
        if pane.dead:
            return  # Fleet decides: a restart comes as a new generation
        self._wake(item, pane)

    def _end(self, item: dict, pane: Pane, *, patience: float) -> None:
        """End a CLI cleanly: once it is idle (or its patience ran out), its exit
        command; a kill after the grace period. A dead pane is cleared."""
        agent = item["name"]
        if pane.dead:
            self.tmux.kill(pane.session)
            self.seen.pop(agent, None)
            return
        seen = self.seen.setdefault(agent, Seen(generation=pane.generation))
        now = self.clock()
        if seen.ending_since is not None:
            if now - seen.ending_since >= self.grace:
                log.warning("%s: did not exit within %.0f s; killing it", agent, self.grace)
                self.tmux.kill(pane.session)
            return
        harness = self._harness(agent, pane)
        ready = harness.ready_at(seen.screen)
        if not ready and patience:
            if seen.waiting_since is None:
                seen.waiting_since = now
                log.info("%s: waiting up to %.0f s for its turn to end", agent, patience)
            if now - seen.waiting_since < patience:
                return
        if not ready:
            self.tmux.keys(pane.session, *harness.interrupt)
            # Let the CLI take the interrupt first: an Escape with text right behind it
            # reads as Alt+key (Codex took "Escape /quit" as Alt-/ and sent "quit").
            time.sleep(0.5)
        log.info("%s: ending it (%s)", agent, " ".join(k or "Enter" for k in harness.exit_keys))
        self._keys(pane.session, harness.exit_keys)
        seen.ending_since = now

    def _keys(self, session: str, keys: tuple[str, ...]) -> None:
        for key in keys:
            if not key:
                self.tmux.keys(session, "Enter")
            elif key.startswith(("C-", "M-")) or key in ("Escape", "Enter"):
                self.tmux.keys(session, key)
            else:
                self.tmux.keys(session, "-l", key)
                time.sleep(0.2)  # let the CLI take the text before the Enter

    def _wake(self, item: dict, pane: Pane) -> None:
        """Type into the CLI's own idle prompt only: never while it boots or works."""
        agent = item["name"]
        seen = self.seen.setdefault(agent, Seen(generation=pane.generation))
        harness = self._harness(agent, pane)
        if seen.typed and self._resend_enter(agent, pane, harness, seen):
            return
        nudge = item.get("nudge")
        text = None
        if harness.typed_prompt and not seen.prompt_typed and item.get("prompt"):
            text = item["prompt"]
        elif nudge is None:
            seen.work_nudged = False
        elif nudge["through"] > seen.nudged_through:
            text = nudge["text"]  # messages past the last nudge
        elif not nudge["through"] and not seen.work_nudged:
            text = nudge["text"]  # work became ready
        if text is None:
            return
        screen = self.tmux.capture(pane.session)  # fresh: it may have started working
        if not harness.ready_at(screen):
            return
        log.info("%s: typing %r", agent, text)
        self.tmux.keys(pane.session, "-l", text)
        self.enters.append(pane.session)  # Enter after a pause, once for all (see below)
        seen.typed, seen.typed_at, seen.enters = text, self.clock(), 0
        if harness.typed_prompt and not seen.prompt_typed and item.get("prompt"):
            seen.prompt_typed = True
        elif nudge is not None and nudge["through"]:
            seen.nudged_through = nudge["through"]
        elif nudge is not None:
            seen.work_nudged = True

    def _press_enters(self) -> None:
        """Enter for every text typed this tick, after one short pause: an Enter in the
        same burst as the text reads as part of a paste to some CLIs, and one pause per
        tick (not per agent) keeps twenty wakes as quick as one."""
        if not self.enters:
            return
        time.sleep(0.15)
        for session in self.enters:
            try:
                self.tmux.keys(session, "Enter")
            except TmuxError as exc:
                log.warning("%s: Enter not sent: %s", session, exc)
        self.enters = []

    def _resend_enter(self, agent: str, pane: Pane, harness: Harness, seen: Seen) -> bool:
        """A CLI finishing its turn can drop the Enter after typed text (the text stays
        in its input line and nothing happens): seen a second later, Enter again, up to
        three times. True while that text is still being sent. (Nothing new is typed
        over it meanwhile: a prompt holding text is not an idle prompt.)"""
        if self.clock() - seen.typed_at < 1.0:
            return False
        screen = self.tmux.capture(pane.session)
        if not harness.unsent(screen, seen.typed) or harness.busy_at(screen):
            seen.typed = ""
            return False
        if seen.enters >= 3:
            log.warning("%s: %r stays in its input line after 3 Enters", agent, seen.typed)
            seen.typed = ""
            return False
        log.info("%s: the typed text is still in its input line: Enter again", agent)
        self.tmux.keys(pane.session, "Enter")
        seen.enters, seen.typed_at = seen.enters + 1, self.clock()
        return True

    def _launch(self, item: dict) -> None:
        agent, generation = item["name"], item["generation"]
        harness = HARNESSES.get(item["harness"])
        if harness is None:
            return self._cannot(agent, generation, f"unknown harness {item['harness']!r}")
        directory = Path(item["directory"])
        if not directory.is_dir():
            return self._cannot(
                agent, generation, f"its worktree {directory} is gone (nothing was started)"
            )
        launch = Launch(
            python=self.python,
            package_root=PACKAGE_ROOT,
            directory=str(directory),
            model=item.get("model", ""),
            permissions=item.get("permissions", "worktree"),
            prompt="" if harness.typed_prompt else item.get("prompt", ""),
            command=item.get("command", ""),
            environ={k: os.environ[k] for k in harness.env if k in os.environ},
        )
        argv = harness.argv(launch)
        if not argv:
            return self._cannot(agent, generation, "no command to run")
        path = os.pathsep.join(p for p in (self.extra_path, os.environ.get("PATH", "")) if p)
        binary = shutil.which(argv[0], path=path)
        if binary is None:
            return self._cannot(
                agent,
                generation,
                f"{argv[0]} is not installed on {socket.gethostname()} (not on the runner's "
                "PATH or FLEET_RUNNER_PATH)",
            )
        argv[0] = binary
        env = dict(launch.environ) | harness.env_set(launch)
        env |= {"PATH": path, "FLEET_AGENT": agent, "PYTHONPATH": PACKAGE_ROOT}
        script = _write_script(directory, agent=agent, argv=argv, env=env, generation=generation)
        session = PREFIX + agent
        self.tmux.new(
            session,
            directory=str(directory),
            script=str(script),
            generation=generation,
            runner=self.name,
            harness=harness.name,
        )
        self.seen[agent] = Seen(generation=generation)
        self.failed.pop(agent, None)
        log.info(
            "%s: started %s (generation %d) in %s", agent, harness.title, generation, directory
        )

    def _cannot(self, agent: str, generation: int, why: str) -> None:
        if self.failed.get(agent) != (generation, why):
            log.error("%s: cannot start: %s", agent, why)
        self.failed[agent] = (generation, why)


def _exit_status(pane: Pane) -> int | None:
    """The exit code launch.sh recorded for the pane's generation, if it did."""
    if not pane.directory:
        return None
    try:
        text = (Path(pane.directory) / ".fleet" / f"exit-{pane.generation}").read_text()
    except OSError:
        return None
    return int(text) if text.strip().lstrip("-").isdigit() else None


def _search(pattern: str, screen: str) -> bool:
    import re

    return re.search(pattern, screen) is not None


def _write_script(
    directory: Path, *, agent: str, argv: list[str], env: dict, generation: int
) -> Path:
    """``.fleet/launch.sh`` (0700, untracked): the environment and the CLI's command
    line. Tokens are not in it: hooks and the MCP bridge read ``identity.json``. It
    records the CLI's exit code in ``.fleet/exit-<generation>`` (tmux 3.3 often loses
    a pane's exit status)."""
    folder = directory / ".fleet"
    folder.mkdir(mode=0o700, exist_ok=True)
    for old in folder.glob("exit-*"):
        old.unlink(missing_ok=True)
    script = folder / "launch.sh"
    status = shlex.quote(str(folder / f"exit-{generation}"))
    lines = [
        "#!/bin/sh",
        f"# Written by Fleet's runner: {agent}, generation {generation}.",
        *(f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())),
        f"cd {shlex.quote(str(directory))} || exit 97",
        " ".join(shlex.quote(a) for a in argv),
        "code=$?",
        f'echo "$code" > {status}',
        'exit "$code"',
        "",
    ]
    fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines))
    os.chmod(script, stat.S_IRWXU)
    return script
