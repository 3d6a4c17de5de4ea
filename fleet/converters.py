"""The ``id`` path converter: a database id, and nothing a database id cannot be.

Django's ``int`` converter takes any run of digits; an id past the 64-bit range then
reaches the database (SQLite raises OverflowError: a 500). ``id`` matches only what
a primary key can hold, so a larger number is an unknown path: 404.
"""

from __future__ import annotations

from django.urls import register_converter

MAX_ID = 2**63 - 1


class IdConverter:
    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ID:
            raise ValueError(f"{value} is past the largest id")
        return number

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "id")
