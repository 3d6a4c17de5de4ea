"""No credential reaches a log: whatever scheme an Authorization header uses, through
the API's own routes and the lean ones, with DEBUG on or off."""

from __future__ import annotations

import base64
import logging
import secrets

import pytest

from ..conftest import make_task
from .conftest import AgentClient, LeanAgentClient, make_token_agent

pytestmark = pytest.mark.django_db


class Everything(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def every_log_record():
    """Every record of every logger, at every level, while the test runs."""
    handler = Everything()
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.disabled) for logger in loggers]
    disabled = logging.root.manager.disable
    logging.disable(logging.NOTSET)
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        logger.addHandler(handler)
    yield handler.records
    for logger, level, was_disabled in saved:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.disabled = was_disabled
    logging.disable(disabled)


def _written(record: logging.LogRecord) -> str:
    """All a handler could write of a record: the formatted line with its traceback, the
    message and its arguments, and any extra attributes."""
    line = logging.Formatter("%(name)s %(levelname)s %(message)s").format(record)
    return "\n".join([line, repr(record.msg), repr(record.args), repr(vars(record))])


def _headers(token: str, bogus: str) -> list[tuple[str, list[str]]]:
    """(Authorization header, the secrets it carries)."""
    basic = base64.b64encode(f"agent:{token}".encode()).decode()
    return [
        (f"Bearer {bogus}", [bogus]),
        (f"Token {token}", [token]),
        (token, [token]),
        (f"Basic {basic}", [basic, token]),
        (basic, [basic]),
        (f"bearer {bogus}", [bogus]),
        (f"bearer {token}", [token]),
        (f"Bearer  {token}", [token]),
        (f"  Bearer {token}", [token]),
        (f"Bearer {token} extra", [token]),
        (f"Bearer\t{token}", [token]),
    ]


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "no-debug"])
@pytest.mark.parametrize("route", [AgentClient, LeanAgentClient], ids=["api", "lean"])
def test_no_credential_is_logged_whatever_the_scheme(
    client, settings, every_log_record, debug, route
):
    settings.DEBUG = debug
    agent, token = make_token_agent()
    task = make_task(key="T-LOG")
    bogus = "flt_" + secrets.token_urlsafe(24)
    calls = [
        ("get", "boot", None),
        ("get", "inbox", None),
        ("post", "heartbeat", {"context_pct": 5}),
        ("post", "claims", {"task": task.key, "paths": ["src/a.py"]}),
        ("delete", "claims/1", None),
    ]
    sent = []
    for header, carried in _headers(token, bogus):
        for method, path, body in calls:
            response = route(client, None).call(method, path, body, HTTP_AUTHORIZATION=header)
            assert response.status_code < 500, (header, path, response.content)
            sent.append((header, carried))
    assert sent and every_log_record, "the capture saw nothing: the test would prove nothing"
    for record in every_log_record:
        text = _written(record)
        for header, carried in sent:
            for secret in carried:
                assert secret not in text, f"{header!r} leaked into {record.name}: {text[:300]}"
