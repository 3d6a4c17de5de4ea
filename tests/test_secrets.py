"""No secret in the repository or in the logs."""

from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

import pytest

from .conftest import make_agent

ROOT = Path(__file__).resolve().parents[1]
SECRET_SHAPES = [
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"AKIA[0-9A-Z]{16}"),  # an AWS access key id
    re.compile(r"ghp_[A-Za-z0-9]{36}"),  # a GitHub token
    re.compile(r"""SECRET_KEY\s*=\s*["'][^"']{20,}["']"""),  # a hard-coded Django key
    re.compile(r"(?m)^SECRET_KEY=(?!change-me)\S{20,}"),  # one in an env file
    re.compile(r"flt_[A-Za-z0-9_-]{40,}"),  # an agent token
]


def test_no_secret_is_committed():
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    found = []
    for name in files:
        path = ROOT / name
        if path.suffix in {".png", ".ico", ".woff2"} or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        found += [f"{name}: {p.pattern}" for p in SECRET_SHAPES if p.search(text)]
    assert found == []


@pytest.mark.django_db
def test_agent_tokens_never_reach_the_logs(client, caplog):
    agent = make_agent(name="ada")
    token = agent.issue_token()
    caplog.set_level(logging.DEBUG)
    for path in ("boot", "nope/404", "claims"):
        client.post(
            f"/api/v1/{path}",
            "{}",
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
    client.get("/api/v1/boot", HTTP_AUTHORIZATION=f"Bearer {token}x")  # a wrong one too
    assert caplog.records  # the calls did log (the 404, the refusals)
    assert token not in caplog.text and token[:20] not in caplog.text
