from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from fleet import demo


class Command(BaseCommand):
    help = "Seed the demo fleet (a real git repository, a plan, agents, a review). Idempotent."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--logins-only",
            action="store_true",
            help="only the demo logins, no static fleet (make run's living demo brings its own)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        created, logins = demo.seed(fleet=not options["logins_only"])
        if options["logins_only"]:
            self.stdout.write("Demo logins ready (the living demo brings the fleet).")
        elif created:
            self.stdout.write(self.style.SUCCESS("Demo fleet created."))
        else:
            self.stdout.write("Demo fleet already present; nothing changed.")
        self.stdout.write("Demo logins (user / password → role):")
        for login in logins:
            self.stdout.write(f"  {login.username:<9} {login.password:<14} {login.role}")
