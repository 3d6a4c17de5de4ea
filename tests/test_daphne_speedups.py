"""The content-type shortcut answers exactly as Twisted's own parser, for any header."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.web import http

from fleet import daphne_speedups

original = getattr(http._parseContentType, "original", http._parseContentType)
fast = daphne_speedups.fast_content_type(original)

token = st.text(alphabet="abcdefgABCXYZ0189-+.!_/ ", min_size=0, max_size=12)
headers = st.one_of(
    st.builds(lambda a, b: f"{a}/{b}", token, token),
    st.builds(lambda a, b, p: f"{a}/{b}; {p}", token, token, st.text(max_size=20)),
    st.text(max_size=40),
    st.sampled_from(
        [
            "application/json",
            "Application/JSON; charset=utf-8",
            "multipart/form-data; boundary=xyz",
            'text/plain; charset="utf-8"',
            "text/html (comment)",
            "nonsense",
            "",
            "a/b/c",
            "0/0;\x0cq",  # Twisted refuses control characters: so must the shortcut
            "a/b; q\x85",
        ]
    ),
)


@settings(max_examples=500)
@given(headers)
def test_the_shortcut_agrees_with_twisted(header):
    line = header.encode("utf-8", "surrogateescape")
    try:
        expected = original(line)
    except Exception as exc:  # noqa: BLE001 - the shortcut must fail the same way
        expected = type(exc)
    try:
        got = fast(line)
    except Exception as exc:  # noqa: BLE001
        got = type(exc)
    assert got == expected


def test_install_patches_once():
    assert daphne_speedups.install() is True
    patched = http._parseContentType
    assert daphne_speedups.install() is True and http._parseContentType is patched
    assert patched(b"application/json; charset=utf-8") == b"application/json"
