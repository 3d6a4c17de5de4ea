"""The outgoing webhook: tasks that need a person are POSTed as JSON to the
repository's URL, retried with a growing delay, given up on after the last try."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from fleet import webhooks
from fleet.models import WebhookDelivery

from .conftest import make_repository, make_task

pytestmark = pytest.mark.django_db


@pytest.fixture
def receiver():
    """A real HTTP server on 127.0.0.1 that fails the first ``fail`` POSTs with 503."""
    state = {"fail": 0, "bodies": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if state["fail"] > 0:
                state["fail"] -= 1
                self.send_response(503)
            else:
                state["bodies"].append((self.headers["Content-Type"], json.loads(body)))
                self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_port}/hook"
    yield state
    server.shutdown()
    server.server_close()


def test_no_webhook_no_delivery():
    task = make_task(repository=make_repository())
    assert webhooks.notify(task, "gate_red", ["Review: 1 finding waiting"]) is None
    assert not WebhookDelivery.objects.exists()


def test_a_notification_is_retried_until_the_receiver_takes_it(receiver, settings):
    settings.FLEET_WEBHOOK_RETRY = 10
    task = make_task(repository=make_repository(webhook_url=receiver["url"]), key="T-9")
    receiver["fail"] = 2
    delivery = webhooks.notify(task, "gate_red", ["Checks: unit failed"])
    now = timezone.now()
    assert webhooks.deliver(now) == 0
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and delivery.last_error == "HTTP 503"
    assert delivery.next_attempt_at - now >= timedelta(seconds=9)
    assert webhooks.deliver(now) == 0  # not due yet: nothing sent
    assert receiver["fail"] == 1
    assert webhooks.deliver(now + timedelta(seconds=11)) == 0  # second try, fails
    assert webhooks.deliver(now + timedelta(seconds=11 + 21)) == 1
    delivery.refresh_from_db()
    assert delivery.attempts == 3 and delivery.delivered_at and not delivery.last_error
    content_type, body = receiver["bodies"][0]
    assert content_type == "application/json"
    assert body["event"] == "gate_red" and body["task"] == "T-9"
    assert body["reasons"] == ["Checks: unit failed"] and body["url"].endswith("/tasks/T-9/")
    assert webhooks.deliver(now + timedelta(hours=1)) == 0  # delivered once only


def test_a_dead_receiver_is_given_up_on_after_the_last_try(settings):
    settings.FLEET_WEBHOOK_ATTEMPTS = 2
    task = make_task(repository=make_repository(webhook_url="http://127.0.0.1:9/nobody"))
    delivery = webhooks.notify(task, "merge_failed", ["conflict"])
    later = timezone.now() + timedelta(days=1)
    webhooks.deliver(later)
    webhooks.deliver(later + timedelta(days=1))
    delivery.refresh_from_db()
    assert delivery.attempts == 2 and delivery.gave_up_at and delivery.last_error
    webhooks.deliver(later + timedelta(days=2))
    delivery.refresh_from_db()
    assert delivery.attempts == 2


@pytest.mark.parametrize(
    ("kind", "reasons", "says"),
    [
        ("findings_waiting", ["2 finding(s) from rev-1 wait for a verdict"], "has review findings"),
        ("gate_red", ["Checks: unit failed on 1a2b3c4d5e"], "has a red merge gate: Checks"),
        ("merge_failed", ["the merge check failed on 1a2b3c4d5e"], "failed to merge"),
    ],
)
def test_a_task_notification_carries_a_chat_ready_text_line(
    receiver, settings, kind, reasons, says
):
    settings.FLEET_PUBLIC_URL = "https://fleet.example"
    repository = make_repository(webhook_url=receiver["url"])
    task = make_task(repository=repository, key="T-12", title="Add tax to the cart")
    webhooks.notify(task, kind, reasons)
    assert webhooks.deliver() == 1
    text = receiver["bodies"][0][1]["text"]
    assert "\n" not in text
    assert text.startswith("T-12 “Add tax to the cart” " + says)
    assert reasons[0] in text and text.endswith("— https://fleet.example/tasks/T-12/")


def test_the_text_line_escapes_chat_markup_and_pings(receiver, settings):
    """A task title is anyone's words: no Slack markup, no @everyone ping in the channel."""
    settings.FLEET_PUBLIC_URL = "https://fleet.example"
    repository = make_repository(webhook_url=receiver["url"])
    task = make_task(repository=repository, key="T-13", title="<!channel> Tax & @everyone")
    webhooks.notify(task, "gate_red", ["Checks: <b>@here</b>"])
    assert webhooks.deliver() == 1
    text = receiver["bodies"][0][1]["text"]
    assert "“&lt;!channel&gt; Tax &amp; @\u200beveryone”" in text
    assert "&lt;b&gt;@\u200bhere&lt;/b&gt;" in text
    assert "<" not in text and "@everyone" not in text and "@here" not in text
    assert text.endswith("— https://fleet.example/tasks/T-13/")
    # the structured fields stay as written: they are data, not chat text
    assert receiver["bodies"][0][1]["title"] == "<!channel> Tax & @everyone"


def test_a_budget_notification_says_what_is_spent_of_what(receiver, settings):
    from decimal import Decimal

    from fleet.models import Budget

    settings.FLEET_PUBLIC_URL = "https://fleet.example"
    make_repository(webhook_url=receiver["url"])
    budget = Budget.objects.create(scope="fleet", limit_usd=Decimal("5.00"))
    Budget.objects.filter(pk=budget.pk).update(spent_usd=Decimal("5.00"))
    (delivery,) = webhooks.notify_budget(budget.pk, "budget_spent")
    text = delivery.payload["text"]
    assert "has spent its budget" in text and "($5.00 of $5.00)" in text
    assert text.endswith("— https://fleet.example/budget/") and text[0].isupper()
