from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from fleet.models import Runner


class Command(BaseCommand):
    help = (
        "Runners: register one (its token shown once, or written to a 0600 file), revoke "
        "one, or list them. Start a registered runner with `python -m fleet.runner`."
    )

    def add_arguments(self, parser: Any) -> None:
        action = parser.add_mutually_exclusive_group(required=True)
        action.add_argument("--register", metavar="NAME", help="register a runner (or re-key it)")
        action.add_argument("--revoke", metavar="NAME", help="revoke a runner's token")
        action.add_argument("--list", action="store_true", help="list runners and their state")
        parser.add_argument(
            "--token-file",
            type=Path,
            help="with --register: write the token to this file (0600) instead of printing it",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["list"]:
            for runner in Runner.objects.all():
                self.stdout.write(
                    f"{runner.name}\t{runner.state()}\t{runner.host or '-'}\t"
                    f"{runner.runtimes.count()} agents\t{runner.error or runner.tmux or ''}"
                )
            return
        if options["revoke"]:
            runner = Runner.objects.filter(name=options["revoke"]).first()
            if runner is None:
                raise CommandError(f"no runner {options['revoke']!r}")
            runner.revoke_token(by=None)
            self.stdout.write(self.style.SUCCESS(f"Revoked the token of runner {runner.name}."))
            return
        name = options["register"]
        with transaction.atomic():
            runner = Runner.objects.filter(name=name).first() or Runner(name=name)
            try:
                runner.full_clean(exclude=["token_hash"])
            except ValidationError as exc:
                if runner.pk is None:
                    problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
                    raise CommandError(problems) from exc
            runner.save()
            token = runner.issue_token(by=None)
        path = options.get("token_file")
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(token + "\n")
            os.chmod(path, 0o600)
            self.stdout.write(self.style.SUCCESS(f"Runner {name} registered; token in {path}."))
        else:
            self.stdout.write(self.style.SUCCESS(f"Runner {name} registered."))
            self.stdout.write(f"  token (shown once): {token}")
        self.stdout.write(
            f"Start it with: FLEET_RUNNER_TOKEN{'_FILE=' + str(path) if path else '=<token>'} "
            "python -m fleet.runner --url <Fleet's URL>"
        )
