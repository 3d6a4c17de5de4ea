"""Logging for people reading a terminal: an expected refusal (a 4xx: a 403 for a role
that may not, a 404, a 409) is one line, not a traceback. Django logs some of them
with the exception attached (a PermissionDenied is logged with its traceback); the
status code says they are answers, not failures. 5xx keep their tracebacks."""

from __future__ import annotations

import logging


class ExpectedRefusals(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        status = getattr(record, "status_code", None)
        if isinstance(status, int) and 400 <= status < 500 and record.exc_info:
            exc = record.exc_info[1]
            message = record.getMessage()
            if exc is not None and str(exc):
                message += f" ({type(exc).__name__}: {exc})"
            record.msg, record.args = message, ()
            record.exc_info, record.exc_text = None, None
        return True
