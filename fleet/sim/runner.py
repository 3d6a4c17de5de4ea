"""One simulation run: each agent in a process of its own (spawned: nothing of this
Django process comes along), the lead's loop here, until the plan is merged, the time
is up, or ``stop`` is set. Used by ``fleet_simulate``, ``fleet_bench`` and the tests."""

from __future__ import annotations

import contextlib
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from fleet.bench.load import percentile_ms
from fleet.git.errors import GitError
from fleet.sim import director
from fleet.sim.agents import in_process


def play(
    stage: director.Stage,
    *,
    url: str,
    speed: float,
    seed: int,
    patience: float | None = None,
    duration: float = 1800,
    lead: bool = True,
    say: Callable[[str], None] = print,
    stop: threading.Event | None = None,
    under_runner: bool = False,
    wait_for_people: bool = False,
) -> dict[str, Any]:
    """``under_runner``: each agent is a CLI a runner starts in tmux (as real agents
    are), not a child process of this one; the run's figures then cover the lead only.
    ``wait_for_people``: the agents start (and idle: no wave is approved) at once, but
    the story (the lead's first move, ``duration``, the timeline) starts when a person
    signs in, so a newcomer sees it from the start."""
    stop = stop or threading.Event()
    context = multiprocessing.get_context("spawn")
    halt, out = context.Event(), context.Queue()
    agents = [
        context.Process(
            target=in_process,
            args=(persona, url.rstrip("/"), speed, seed, halt, out),
            name=f"sim-{persona.name}",
            daemon=True,
        )
        for persona in stage.personas
    ]
    if under_runner:
        agents = []
        hand_to_runner(stage, url=url.rstrip("/"), speed=speed, seed=seed)
        say("the agents run under the runner, each in tmux: see their pages' terminals")
    person = director.Lead(stage, patience=40 / speed if patience is None else patience, say=say)
    for agent in agents:
        agent.start()
    finished: dict[str, dict] = {}

    def drain(wait: float = 0.0) -> None:
        deadline = time.monotonic() + wait
        while True:
            try:
                kind, item = out.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            if kind == "say":
                say(item)
            else:
                finished[item["name"]] = item

    started = time.monotonic()
    story: float | None = None  # when the story started (a person signed in)
    timeline: dict[str, float] = {}  # seconds from the story's start to each step
    looked = 0.0
    if wait_for_people:
        say("the story starts when a person signs in (FLEET_DEMO_START=now: at once)")
    try:
        while not stop.is_set():
            now = time.monotonic()
            if story is None:
                if wait_for_people and not director.someone_signed_in():
                    drain()
                    stop.wait(1.0)
                    continue
                story = now
                if wait_for_people:
                    say(f"a person signed in: the story starts ({now - started:.0f} s after setup)")
            if now - story >= duration:
                break
            if lead:
                person.tick()
            drain()
            if now - looked >= 2:
                looked = now
                # A fetch racing the worker's may fail: look again next time.
                with contextlib.suppress(GitError):
                    note_steps(stage, timeline, now - story)
            if director.finished(stage):
                timeline.setdefault("finished", round(time.monotonic() - story, 1))
                say("every task of the plan is merged")
                break
            stop.wait(min(1.0, 2 / speed))
    except KeyboardInterrupt:
        say("interrupted")
    finally:
        halt.set()
        deadline = time.monotonic() + 60
        while len(finished) < len(agents) and time.monotonic() < deadline:
            drain(wait=1.0)
            if all(not a.is_alive() for a in agents):
                drain(wait=1.0)
                break
        for agent in agents:
            agent.join(timeout=5)
            if agent.is_alive():
                agent.kill()
        if under_runner:
            from fleet.models import Runtime

            # Nobody wants these sessions any more: the runner ends them.
            Runtime.objects.filter(agent_id__in=stage.agent_ids).delete()
    calls = [tuple(call) for item in finished.values() for call in item["calls"]]
    steps = director.report(stage)
    if story is not None:
        note_steps(stage, timeline, time.monotonic() - story, steps=steps)
    return {
        "run": stage.run,
        "plan": stage.plan.slug,
        "repository": stage.repository.slug,
        "seconds": round(time.monotonic() - started, 1),
        "waited_for_people": round((story or time.monotonic()) - started, 1),
        "finished": director.finished(stage),
        "steps": steps,
        "timeline": timeline,
        "agents": {
            name: {"crashed": item["crashed"], "django_loaded": item["django_loaded"]}
            for name, item in finished.items()
        },
        "agents_reported": len(finished),
        "agent_errors": {name: item["errors"] for name, item in finished.items() if item["errors"]},
        "api": api_figures(calls, time.monotonic() - started),
    }


def note_steps(
    stage: director.Stage,
    timeline: dict[str, float],
    seconds: float,
    *,
    steps: dict[str, dict] | None = None,
) -> None:
    """Record the seconds since the story's start at which each step is first seen
    (looked at every couple of seconds: that is the figures' precision)."""
    for name, step in (steps or director.report(stage)).items():
        if step["ok"] and name not in timeline:
            timeline[name] = round(seconds, 1)


def hand_to_runner(stage: director.Stage, *, url: str, speed: float, seed: int) -> None:
    """Give each simulated agent a runtime: the runner starts ``python -m
    fleet.sim.agents`` (the command harness) in its own directory, reading its persona
    and token from a 0600 file there (never the command line)."""
    import dataclasses
    import json
    import os
    import shlex
    import sys
    from pathlib import Path

    from django.conf import settings

    from fleet import runtime
    from fleet.models import Agent

    for persona in stage.personas:
        directory = Path(settings.FLEET_DATA_DIR) / "agents" / persona.name
        (directory / ".fleet").mkdir(parents=True, exist_ok=True, mode=0o700)
        spec = directory / ".fleet" / "persona.json"
        fd = os.open(spec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(
                {"persona": dataclasses.asdict(persona), "url": url, "speed": speed, "seed": seed},
                f,
            )
        command = f"{shlex.quote(sys.executable)} -m fleet.sim.agents {shlex.quote(str(spec))}"
        runtime.attach(
            Agent.objects.get(name=persona.name),
            harness="command",
            model="sim-model",
            command=command,
            directory=directory,
        )


def api_figures(calls: list[tuple[str, float, bool]], seconds: float) -> dict[str, Any]:
    """What the agents' API calls cost: count, rate, latency, failures (5xx or none)."""
    figures: dict[str, Any] = {
        "calls": len(calls),
        "per_second": round(len(calls) / seconds, 1) if seconds else 0.0,
        "p50_ms": round(percentile_ms([c[1] for c in calls], 50), 1),
        "p99_ms": round(percentile_ms([c[1] for c in calls], 99), 1),
        "failed": sum(not c[2] for c in calls),
        "routes": {},
    }
    for route in sorted({c[0] for c in calls}):
        took = [c[1] for c in calls if c[0] == route]
        figures["routes"][route] = {
            "calls": len(took),
            "p50_ms": round(percentile_ms(took, 50), 1),
            "p99_ms": round(percentile_ms(took, 99), 1),
        }
    return figures
