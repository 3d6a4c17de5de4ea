"""A closed-loop HTTP/1.1 load generator: one keep-alive connection per simulated
client, each sending its next request as soon as the previous answer arrived.

Written on asyncio streams rather than an HTTP library so that the generator costs
little CPU next to the server it measures (both share this machine's cores).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

# (method, path, headers, body) -> one request; a factory is called per request
RequestFactory = Callable[[int], tuple[str, str, dict[str, str], bytes]]


@dataclass
class LoadResult:
    requests: int = 0  # measured (after the warm-up)
    errors: int = 0
    accepted: int = 0  # every answer below 400, warm-up included: what the server stored
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def percentile(self, pct: float) -> float:
        return percentile_ms(self.latencies, pct)

    def summary(self) -> dict:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.elapsed, 3),
            "per_second": round(self.rate, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p99_ms": round(self.percentile(99), 2),
            "max_ms": round(max(self.latencies, default=0) * 1000, 2),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "error_samples": self.error_samples[:5],
        }


def percentile_ms(seconds: list[float], pct: float) -> float:
    """A latency percentile in milliseconds (nearest rank) of latencies in seconds."""
    if not seconds:
        return 0.0
    ordered = sorted(seconds)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered)) - 1))
    return ordered[rank] * 1000


def encode(method: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """Status, body and whether the server keeps the connection open."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ", 2)[1])
    headers = {}
    for line in header_lines:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await reader.read()
        return status, body, False
    keep = headers.get("connection", "").lower() != "close"
    return status, body, keep


async def _client(
    index: int,
    port: int,
    make_request: RequestFactory,
    deadline: float,
    measure_from: float,
    result: LoadResult,
    max_requests: int,
    check: Callable[[int, bytes], str | None] | None,
) -> None:
    reader = writer = None
    sent = 0
    while time.monotonic() < deadline and sent < max_requests:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            started = time.monotonic()
            writer.write(encode(*make_request(index)))
            status, body, keep = await asyncio.wait_for(read_response(reader), 30)
            finished = time.monotonic()
            sent += 1
            if status < 400:
                result.accepted += 1
            if not keep:
                writer.close()
                writer = None
            if started < measure_from:
                continue  # warm-up: connections open, caches filled, not counted
            problem = f"HTTP {status}: {body[:200]!r}" if status >= 400 else None
            if problem is None and check is not None:
                problem = check(status, body)
            result.requests += 1
            result.statuses[status] += 1
            result.latencies.append(finished - started)
            if problem:
                result.errors += 1
                result.error_samples.append(problem)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            result.requests += 1
            result.errors += 1
            result.error_samples.append(f"{type(exc).__name__}: {exc}")
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.05)
    if writer is not None:
        writer.close()


async def _run(clients, port, make_request, seconds, warmup, max_requests, check) -> LoadResult:
    result = LoadResult()
    start = time.monotonic()
    measure_from = start + warmup
    deadline = measure_from + seconds
    await asyncio.gather(
        *(
            _client(
                i,
                port[i % len(port)] if isinstance(port, list | tuple) else port,
                make_request,
                deadline,
                measure_from,
                result,
                max_requests,
                check,
            )
            for i in range(clients)
        )
    )
    result.elapsed = max(1e-9, min(time.monotonic(), deadline + 30) - measure_from)
    return result


def run_load(
    *,
    port: int | list[int],
    clients: int,
    make_request: RequestFactory,
    seconds: float,
    warmup: float = 1.0,
    max_requests_per_client: int = 1_000_000,
    check: Callable[[int, bytes], str | None] | None = None,
) -> LoadResult:
    """Drive 127.0.0.1:port with ``clients`` closed-loop clients for ``seconds`` (a
    list of ports: the clients are dealt over them, as a proxy would)."""
    return asyncio.run(
        _run(clients, port, make_request, seconds, warmup, max_requests_per_client, check)
    )


def json_request(
    path: str, payload: dict, token: str | None = None
) -> tuple[str, str, dict[str, str], bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return "POST", path, headers, json.dumps(payload).encode()
