from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from fleet.models import Agent, Repository, Task
from fleet.runner.harnesses import HARNESSES
from fleet.spawn import SpawnError, spawn


class Command(BaseCommand):
    help = (
        "Spawn an agent: its identity and token (shown once), a worktree off fresh main for "
        "a builder with a task, the untracked identity layer, and the command to start it."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--repo", required=True, help="repository slug")
        parser.add_argument("--role", required=True, choices=[r for r, _ in Agent.ROLE_CHOICES])
        parser.add_argument("--name", required=True, help="agent name (lowercase, digits, -)")
        parser.add_argument("--task", help="task key for a builder, e.g. T-12")
        parser.add_argument(
            "--harness",
            choices=list(HARNESSES),
            help="start the agent's CLI under a runner (claude, codex, gemini, opencode, command)",
        )
        parser.add_argument("--model", default="", help="the model the CLI uses")
        parser.add_argument("--command", default="", help="with --harness command: what to run")
        parser.add_argument(
            "--dir", type=Path, help="where to write the identity layer (default: the worktree)"
        )

    def handle(self, *args: Any, repo: str, role: str, name: str, **options: Any) -> None:
        repository = Repository.objects.filter(slug=repo).first()
        if repository is None:
            raise CommandError(f"no repository {repo!r}")
        task = None
        if options.get("task"):
            task = Task.objects.filter(key=options["task"]).select_related("repository").first()
            if task is None:
                raise CommandError(f"no task {options['task']!r}")
        try:
            spawned = spawn(
                repository=repository,
                role=role,
                name=name,
                task=task,
                directory=options["dir"],
                harness=options.get("harness") or "",
                model=options.get("model") or "",
                command=options.get("command") or "",
            )
        except SpawnError as exc:
            raise CommandError(str(exc)) from exc
        except Exception as exc:  # validation of the name, for one
            raise CommandError(f"spawn failed: {exc}") from exc
        agent = spawned.agent
        self.stdout.write(self.style.SUCCESS(f"Spawned {agent.role} {agent.name}."))
        self.stdout.write(f"  token (shown once): {spawned.token}")
        self.stdout.write(f"  identity: {spawned.directory / '.fleet' / 'identity.json'}")
        end = agent.ports_start + agent.ports_count - 1
        self.stdout.write(f"  ports: {agent.ports_start}-{end}")
        if options.get("harness"):
            runner = agent.runtime.runner
            where = f"runner {runner.name} starts it" if runner else "the next runner starts it"
            self.stdout.write(f"  {HARNESSES[options['harness']].title}: {where}")
            return
        self.stdout.write("Start it with:")
        self.stdout.write(f"  {spawned.command}")
