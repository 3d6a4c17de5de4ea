"""One measured speed-up for daphne's HTTP layer (Twisted).

For every request that carries a ``Content-Type`` header, Twisted parses that header
by building an ``email.message.EmailMessage`` — about a sixth of daphne's time per
heartbeat in a profile. The answer is needed only to spot form bodies (which daphne
does not use). ``install`` swaps in a parser that answers the common, well-formed
case (``type/subtype`` plus parameters) directly and hands anything else to
Twisted's own function, so the result is always the same (a property test compares
the two).
"""

from __future__ import annotations

import re

_TOKEN = rb"[!#$%&'*+.^_`|~0-9a-z-]+"
_SIMPLE = re.compile(rb"^(" + _TOKEN + rb"/" + _TOKEN + rb")$")
_PLAIN = re.compile(rb"[\t\x20-\x7e]*")  # anything else (controls, non-ASCII): Twisted decides


def fast_content_type(original):
    def parse(line: bytes) -> bytes:
        if not _PLAIN.fullmatch(line):
            return original(line)
        head, _, params = line.partition(b";")
        match = _SIMPLE.match(head.strip().lower())
        if match and b'"' not in params and b"(" not in line:
            return match.group(1)
        return original(line)

    parse.original = original
    return parse


def install() -> bool:
    """Patch ``twisted.web.http._parseContentType`` if Twisted is in use (idempotent)."""
    try:
        from twisted.web import http
    except ImportError:  # served by uvicorn without Twisted installed
        return False
    current = getattr(http, "_parseContentType", None)
    if current is None or hasattr(current, "original"):
        return current is not None
    http._parseContentType = fast_content_type(current)
    return True
