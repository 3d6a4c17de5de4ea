"""Simulated agents for the living demo and the benchmarks.

Each agent has only what a real one has: its own token, Fleet's HTTP API (through the
agent client) and git in the worktree Fleet gave it. No Django import here (a test
checks), so a simulation cannot take a shortcut past the paths real agents use.

Builders pull tasks, claim files, heartbeat with rising context and spend, journal,
commit and submit; they rotate at the server's word, stop at its word, and fix what
comes back to them. Reviewers take reviews and post findings, some real and some
false alarms. One builder persona goes silent mid-task.
"""

from __future__ import annotations

import random
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fleet.agent.client import Client, FleetError, Identity
from fleet.sim import script

MODEL = "sim-model"


class Clock:
    """Simulated seconds, ``speed`` times faster than real ones; stops with ``stop``.
    Under a runner, a ``nudge`` (typed into the agent's terminal) cuts a wait short."""

    def __init__(
        self, speed: float, stop: threading.Event, nudge: threading.Event | None = None
    ) -> None:
        self.speed, self.stop, self.nudge = speed, stop, nudge

    def sleep(self, seconds: float) -> bool:
        """False when the simulation is stopping."""
        if self.nudge is None:
            return not self.stop.wait(seconds / self.speed)
        deadline = time.monotonic() + seconds / self.speed
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            if self.nudge.wait(min(left, 0.2)):
                self.nudge.clear()
                return True
        return False

    @property
    def running(self) -> bool:
        return not self.stop.is_set()


@dataclass
class Persona:
    name: str
    role: str  # "builder" or "reviewer"
    token: str
    context_step: int = 4  # context points per unit of work
    silent_after: int | None = None  # units of work on its first task, then silence
    # USD a working heartbeat reports: always the same, so a wave's spend follows its
    # work (the demo's cap stop must happen whoever decides what when).
    cost_per_beat: float = 0.03


class LostLease(Exception):
    pass


class Stopped(Exception):
    pass


def git(worktree: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(
        ["git", *args], cwd=worktree, capture_output=True, text=True, timeout=60
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout.strip()


class SimAgent:
    beat_every = 10.0  # simulated seconds between heartbeats while waiting
    step_seconds = 8.0  # simulated seconds per unit of work

    def __init__(
        self,
        persona: Persona,
        *,
        url: str,
        clock: Clock,
        seed: int,
        say: Callable[[str], None] = print,
    ) -> None:
        self.persona, self.clock, self.say_ = persona, clock, say
        identity = Identity(url=url, token=persona.token, agent=persona.name, role=persona.role)
        self.client = Client(identity, retries=4, backoff=0.2, timeout=30)
        self.client.call = self._timed(self.client.call)
        self.calls: list[tuple[str, float, bool]] = []  # (route, seconds, answered < 400)
        self.rng = random.Random(f"{seed}:{persona.name}")
        self.context = 8
        self.epoch: int | None = None
        self.stopped = False
        self.silent = False
        self.errors: list[str] = []
        self.crashed = False
        self.sessions = 0
        # Under a runner (a CLI in tmux): idle shows a prompt, rotation ends the process
        # and the runner starts a fresh one that boots from the journal.
        self.interactive = False
        self.progress_file: Path | None = None  # steps done per task, across sessions

    def say(self, text: str) -> None:
        self.say_(f"[{self.persona.name}] {text}")

    def _timed(self, call: Callable) -> Callable:
        """The client's calls, each timed (the benchmark's load figures)."""

        def timed(method: str, path: str, body: Any = None, **options: Any) -> Any:
            route = f"{method} {path.split('/')[0].split('?')[0]}"
            started = time.perf_counter()
            ok = False
            try:
                result = call(method, path, body, **options)
                ok = True
                return result
            except FleetError as exc:
                ok = 0 < exc.status < 500  # a refusal is an answer; 5xx and no answer are not
                raise
            finally:
                self.calls.append((route, time.perf_counter() - started, ok))

        return timed

    def run(self) -> None:
        booted = False
        while self.clock.running and not self.silent:
            try:
                if not booted:
                    self.boot()
                    booted = True
                self.main()
                return
            except (
                FleetError,
                LostLease,
                RuntimeError,
                OSError,
                subprocess.SubprocessError,
            ) as exc:
                # A refusal it did not expect, or git failing for a moment: say so, wait
                # a beat, carry on.
                self.errors.append(f"{type(exc).__name__}: {exc}")
                self.say(f"refused: {exc}")
                self.epoch = None
                if len(self.errors) > 25 or not self.clock.sleep(self.beat_every):
                    return
            except Exception as exc:  # a bug in the simulator: reported, not raised
                self.crashed = True
                self.errors.append(f"crashed: {type(exc).__name__}: {exc}")
                self.say(f"crashed: {exc}")
                return

    def main(self) -> None:
        raise NotImplementedError

    # --- what every agent does ---------------------------------------------------

    def boot(self) -> dict:
        result = self.client.get("boot")
        # Fleet numbers sessions per agent, as its pages do; the count is a fallback.
        self.sessions = result.get("session_number") or self.sessions + 1
        self.context = 8 + self.rng.randint(0, 6)
        digest = result.get("digest") or {}
        if result.get("task") and any(digest.values()):
            self.say(
                f"session {self.sessions} boots on {result['task']['key']} from the journal: "
                + "; ".join(f"{k}: {v[0]}" for k, v in digest.items() if v)
            )
        return result

    def beat(self, status: str, *, spend: bool = True) -> dict:
        cost = self.persona.cost_per_beat if spend else 0.0
        body = {
            "context_pct": min(self.context, 100),
            "status_line": status[:200],
            "tokens_in": int(cost * 40_000),
            "tokens_out": int(cost * 4_000),
            "cost_usd": round(cost, 4),
            "model": MODEL,
        }
        if self.epoch is not None:
            body["epoch"] = self.epoch
        try:
            result = self.client.post("heartbeat", body)
        except FleetError as exc:
            if exc.code in ("stale_lease", "lease_lost"):
                self.epoch = None
                raise LostLease(str(exc.detail)) from None
            raise
        if result.get("epoch") is not None:
            self.epoch = result["epoch"]
        if result["stop"] and not self.stopped:
            self.say("the server says stop (budget spent or stopped by a person)")
        self.stopped = bool(result["stop"])
        if result["rotate"] and not self.stopped:
            self.rotate(result)
        return result

    def rotate(self, directive: dict) -> None:
        self.say(f"context {directive['context_pct']}% ≥ {directive['rotate_at_pct']}%: rotating")
        self.journal("learned", "Context fills fast on this task: keep steps small.")
        self.journal("next", "Resume from the journal in a fresh session.")
        if self.interactive:
            self.say("ending this session; the runner starts a fresh one")
            raise SystemExit(0)
        self.boot()

    def progress(self, key: str, done: int | None = None) -> int:
        """Steps of ``key`` done, kept on disk under a runner: a rotation ends the
        process, and the next session carries on where this one stopped."""
        if self.progress_file is None:
            return 0
        import json

        try:
            known = json.loads(self.progress_file.read_text())
        except (OSError, ValueError):
            known = {}
        if done is not None:
            known[key] = done
            self.progress_file.write_text(json.dumps(known))
        return known.get(key, 0)

    def idle(self) -> None:
        """Under a runner: the prompt a nudge is typed into."""
        if self.interactive:
            self.say_("fleet> ")

    def journal(self, kind: str, body: str, task: str | None = None) -> None:
        payload = {"kind": kind, "body": body}
        if task:
            payload["task"] = task
        self.client.post("journal", payload)

    def wait_while_stopped(self) -> bool:
        """Beat (spending nothing) until a person resumes this agent."""
        while self.clock.running:
            result = self.beat("stopped: waiting for a person", spend=False)
            if not result["stop"]:
                self.say("resumed")
                return True
            if not self.clock.sleep(self.beat_every):
                break
        return False


class Builder(SimAgent):
    def main(self) -> None:
        while self.clock.running and not self.silent:
            if self.stopped and not self.wait_while_stopped():
                return
            try:
                work = self.client.post("work/next")
            except FleetError as exc:
                if exc.code in ("budget_spent", "stopped"):
                    self.say(f"no work: {exc.detail}")
                    self.stopped = exc.code == "stopped" or self.stopped
                    self.beat("waiting: budget spent", spend=False)
                    self.clock.sleep(self.beat_every)
                    continue
                raise
            if work["kind"] != "task" or not work.get("task"):
                self.beat("idle: no ready task", spend=False)
                self.idle()
                self.clock.sleep(self.beat_every)
                continue
            try:
                self.work_on(work["task"])
            except LostLease as exc:
                self.say(f"lost the lease: {exc}")
            except Stopped:
                self.epoch = None  # a stopped agent keeps no lease

    def work_on(self, task: dict) -> None:
        key, title = task["key"], task["title"]
        self.epoch = task["lease_epoch"]
        worktree = Path(task["worktree_path"] or "")
        if (
            not task["worktree_path"]
            or not worktree.is_absolute()
            or not (worktree / ".git").exists()
        ):
            # Never write anywhere but the task's own worktree (an empty path would be
            # this process's directory): say so and wait for a person.
            self.journal("note", f"{key} has no usable worktree ({worktree}); not writing", key)
            self.beat(f"{key}: no worktree, waiting", spend=False)
            self.clock.sleep(self.beat_every * 3)
            raise Stopped
        plan = script.BY_TITLE.get(title)
        notes = [m for m in self.client.get("inbox") if m.get("task") == key]
        # Submitted before (its head is known): it came back, with a finding or a failed
        # merge, to this builder or (its lease lapsed) to another. Fix, do not redo.
        returned = bool(task["head_sha"])
        if task["attempt"] > 1 and not returned:
            self.say(f"takes over {key} (attempt {task['attempt']})")
            self.boot()  # a fresh session: the digest is the predecessor's journal
        self.claim(key, task["declared_paths"])
        self.journal("next", f"{title}: write it, test it, hand it in.", task=key)
        for message in notes:
            self.say(f"{key} came back: {message['subject']}")
        steps = 2 if returned else (plan.steps if plan else 5)
        for step in range(self.progress(key) if not returned else 0, steps):
            self.context += self.persona.context_step + self.rng.randint(0, 2)
            self.beat(f"{key}: {'fixing' if returned else 'working'} ({step + 1}/{steps})")
            if self.stopped:
                raise Stopped
            if self.persona.silent_after is not None and step + 1 >= self.persona.silent_after:
                self.journal("done", f"Drafted {title}; nothing committed yet.", task=key)
                self.journal("next", f"Write the files of {title} and submit.", task=key)
                self.say(f"goes silent on {key} (no more heartbeats)")
                self.silent = True
                raise Stopped
            if not self.clock.sleep(self.step_seconds):
                raise Stopped
            self.progress(key, step + 1)
        if returned and any("rebase" in m["body"] for m in notes):
            self.rebase(worktree)
        files = dict(plan.files if plan else {f"{task['declared_paths'][0]}": f"# {title}\n"})
        if returned and plan and plan.fix:
            files = dict(plan.fix)
        fragment = script.changelog_path(key)
        previous = (worktree / fragment).read_text() if (worktree / fragment).exists() else ""
        line = f"- {key}: {'fix: ' if returned else ''}{title}\n"
        files[fragment] = previous + line if line not in previous else previous
        self.commit(worktree, files, f"{key}: {'Fix ' if returned else ''}{title}")
        self.journal("done", f"{title}: committed and tested.", task=key)
        head = git(worktree, "rev-parse", "HEAD")
        result = self.client.post(f"tasks/{key}/submit", {"commit": head, "epoch": self.epoch})
        self.epoch = None
        self.say(f"submitted {key} at {head[:10]} ({result['status']})")
        self.progress(key, 0)
        for message in notes:  # read and acted on: only now acknowledged
            self.client.post(f"inbox/{message['id']}/ack")
        self.beat(f"{key} submitted", spend=False)

    def claim(self, key: str, paths: list[str]) -> None:
        for _ in range(20):
            try:
                self.client.post("claims", {"task": key, "paths": paths})
                return
            except FleetError as exc:
                if exc.code == "claim_owned":  # a planning decision: waiting will not help
                    self.journal("note", f"{key}: {exc.detail}; a person decides", key)
                    self.say(f"cannot claim: {exc.detail}")
                    self.clock.sleep(self.beat_every * 3)
                    raise Stopped from None
                if exc.code != "claim_held":
                    raise
                self.say(f"waiting for files: {exc.detail}")
                self.beat(f"{key}: waiting for a claim")
                if not self.clock.sleep(self.beat_every):
                    raise Stopped from None
        raise Stopped

    def rebase(self, worktree: Path) -> None:
        git(worktree, "fetch", "-q", "origin")
        branch = git(worktree, "rev-parse", "--abbrev-ref", "origin/HEAD", check=False)
        onto = branch if branch.startswith("origin/") else "origin/main"
        who = self.persona.name
        identity = ["-c", f"user.name={who}", "-c", f"user.email={who}@agents.fleet.invalid"]
        if subprocess.run(
            ["git", *identity, "rebase", onto], cwd=worktree, capture_output=True, timeout=60
        ).returncode:
            git(worktree, "rebase", "--abort", check=False)
            self.say(f"rebase onto {onto} conflicts; committing on the old base")

    def commit(self, worktree: Path, files: dict[str, str], message: str) -> None:
        for name, text in files.items():
            path = worktree / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git(worktree, "add", "-A")
        if not git(worktree, "status", "--porcelain"):
            return
        who = self.persona.name
        git(
            worktree,
            "-c",
            f"user.name={who}",
            "-c",
            f"user.email={who}@agents.fleet.invalid",
            "commit",
            "-q",
            "-m",
            message,
        )


class Reviewer(SimAgent):
    def main(self) -> None:
        while self.clock.running:
            if self.stopped and not self.wait_while_stopped():
                return
            try:
                work = self.client.post("work/next")
            except FleetError as exc:
                if exc.code in ("budget_spent", "stopped"):
                    self.beat("waiting: budget spent", spend=False)
                    self.clock.sleep(self.beat_every)
                    continue
                raise
            if work["kind"] != "review" or not work.get("review_id"):
                self.beat("idle: nothing to review", spend=False)
                self.idle()
                self.clock.sleep(self.beat_every)
                continue
            self.review(work["review_id"])

    def review(self, review_id: int) -> None:
        review = self.client.get(f"reviews/{review_id}")
        key, title = review["task"]["key"], review["task"]["title"]
        for step in range(3):
            self.context += self.persona.context_step
            self.beat(f"reviewing {key} ({step + 1}/3)")
            if self.stopped or not self.clock.sleep(self.step_seconds):
                return
        plan = script.BY_TITLE.get(title)
        added = "\n".join(line[1:] for line in review["diff"].splitlines() if line.startswith("+"))
        findings = [
            {
                "path": f.path,
                "line_start": f.line,
                "severity": f.severity,
                "title": f.title,
                "body": f.body,
            }
            for f in (plan.findings if plan else ())
            if f.when in added
        ]
        self.client.post(f"reviews/{review_id}/findings", {"findings": findings})
        self.say(f"reviewed {key}: {len(findings)} finding(s)")


def in_process(persona: Persona, url: str, speed: float, seed: int, stop, out) -> None:
    """One agent in its own process (``multiprocessing``, spawned): it runs until
    ``stop`` is set, sending what it says and, at the end, its figures through ``out``.
    It also reports whether anything in the process imported Django (nothing should)."""
    import sys

    clock = Clock(speed, stop)
    kind = Builder if persona.role == "builder" else Reviewer
    agent = kind(persona, url=url, clock=clock, seed=seed, say=lambda line: out.put(("say", line)))
    try:
        agent.run()
    finally:
        out.put(
            (
                "done",
                {
                    "name": persona.name,
                    "calls": agent.calls,
                    "errors": agent.errors,
                    "crashed": agent.crashed,
                    "django_loaded": any(m.split(".")[0] == "django" for m in sys.modules),
                },
            )
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m fleet.sim.agents PERSONA_FILE``: one simulated agent as a CLI of its
    own, for a runner to start in tmux (the living demo under ``make run``). It says
    what it does on its terminal, shows ``fleet>`` while idle, takes any line typed
    there as a nudge to look for work now, ends on end of input (the runner's exit),
    and ends its process to rotate (the runner starts a fresh session)."""
    import json
    import sys

    path = Path(argv[0] if argv else sys.argv[1])
    spec = json.loads(path.read_text())
    stop, nudge = threading.Event(), threading.Event()

    def read_terminal() -> None:
        for line in sys.stdin:
            if line.strip():
                nudge.set()
        stop.set()  # end of input: the runner ends this session

    threading.Thread(target=read_terminal, daemon=True).start()
    persona = Persona(**spec["persona"])
    kind = Builder if persona.role == "builder" else Reviewer

    def say(line: str) -> None:
        print(line if line.endswith("> ") else f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    agent = kind(
        persona,
        url=spec["url"],
        clock=Clock(spec["speed"], stop, nudge),
        seed=spec["seed"],
        say=say,
    )
    agent.interactive = True
    agent.progress_file = path.with_name("sim-progress.json")
    say(f"[{persona.name}] simulated {persona.role} starting (session of a runner)")
    agent.run()
    return 1 if agent.crashed else 0


if __name__ == "__main__":
    raise SystemExit(main())
