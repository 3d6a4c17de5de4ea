"""The client sends one Idempotency-Key per logical call and the same one on every retry,
so a POST retried after its response was lost is replayed by Fleet, not done twice."""

from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fleet.agent import ops
from fleet.agent.client import Client, Identity


class LossyFleet(ThreadingHTTPServer):
    """Answers every request with ``{"id": 1}``, except that it reads the first request
    of each path in full and then hangs up without answering: a lost response."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path, key)
        self.dropped: set[str] = set()


class Handler(BaseHTTPRequestHandler):
    server: LossyFleet

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.command, self.path, self.headers.get("Idempotency-Key")))
        if self.path not in self.server.dropped:
            self.server.dropped.add(self.path)
            self.close_connection = True
            return  # the work was done; the answer never arrives
        body = json.dumps({"id": 1, "path": "a.py"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer


@pytest.fixture
def lossy():
    server = LossyFleet()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def client_for(server: LossyFleet, tmp_path) -> Client:
    identity = Identity(
        url=f"http://127.0.0.1:{server.server_address[1]}", token="t", role="builder"
    )
    return Client(identity, retries=2, backoff=0.01)


def test_a_retried_post_carries_the_key_of_its_first_try(lossy, tmp_path):
    client = client_for(lossy, tmp_path)
    assert ops.learn(client, title="t", body="b") == {"id": 1, "path": "a.py"}
    assert ops.learn(client, title="t", body="b")  # a second logical call (answered at once)
    (m1, p1, first), (m2, p2, retry), (_, _, second) = lossy.seen
    assert (m1, p1) == (m2, p2) == ("POST", "/api/v1/learnings")
    assert first and retry == first  # the retry is the same call: Fleet replays it
    assert second and second != first  # a new call is new work


@pytest.mark.parametrize(
    ("operation", "kwargs", "method", "path"),
    [
        (ops.journal, {"kind": "note", "body": "x", "task": "T-1"}, "POST", "journal"),
        (ops.ack, {"message_id": 3}, "POST", "inbox/3/ack"),
        (ops.draft_plan, {"name": "P", "slug": "p"}, "POST", "plans"),
        (ops.add_wave, {"plan_id": 5}, "POST", "plans/5/waves"),
        (
            ops.post_findings,
            {"review_id": 6, "findings": []},
            "POST",
            "reviews/6/findings",
        ),
    ],
)
def test_every_changing_call_reuses_its_key_on_retry(
    lossy, tmp_path, operation, kwargs, method, path
):
    operation(client_for(lossy, tmp_path), **kwargs)
    (m1, p1, first), (m2, p2, retry) = lossy.seen
    assert (m1, p1) == (m2, p2) == (method, f"/api/v1/{path}")
    assert first and retry == first


@pytest.mark.parametrize(
    ("operation", "kwargs"),
    [
        (ops.inbox, {}),
        (ops.release, {"claim_id": 4}),  # retry-safe: released again is released
        (ops.claim, {"paths": ["a.py"], "task": "T-1"}),  # the lean route answers it
        (ops.heartbeat, {"context_pct": 5}),  # the lean route answers it
        (ops.work, {}),  # a pull hands the same task back to a retry
    ],
)
def test_reads_and_retry_safe_calls_send_no_key(lossy, tmp_path, operation, kwargs):
    # The stand-in's answer is not this call's shape; the requests are what count.
    with contextlib.suppress(KeyError, TypeError):
        operation(client_for(lossy, tmp_path), **kwargs)
    assert [key for _, _, key in lossy.seen] == [None, None]
