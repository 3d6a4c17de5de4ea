"""The MCP SDK's own client launches our bridge and drives it against a live Fleet."""

from __future__ import annotations

import json
import os
import sys

import pytest
from asgiref.sync import sync_to_async
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from fleet.models import Agent, JournalEntry

from .conftest import ROOT
from .test_cli import builder  # noqa: F401 - the shared fixture

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def bridge(cwd) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO", "FLEET_"))}
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "fleet.agent", "mcp"],
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=str(cwd),
    )


def payload(result) -> dict:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


async def drive(client_session: ClientSession) -> None:
    async with client_session as session:
        await session.initialize()
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert {"boot", "heartbeat", "work_next", "journal", "claim", "submit", "inbox"} <= set(
            tools
        )
        assert "python -m fleet.agent" in tools["heartbeat"].description
        assert "context_pct" in tools["heartbeat"].input_schema["properties"]

        booted = payload(await session.call_tool("boot", {}))
        assert booted["agent"]["name"] == "ada" and booted["task"]["key"] == "T-1"

        beat = payload(
            await session.call_tool("heartbeat", {"context_pct": 61, "status_line": "via mcp"})
        )
        assert beat["rotate"] is True and beat["stop"] is False

        entry = payload(await session.call_tool("journal", {"kind": "next", "body": "totals"}))
        assert entry["id"]

        refused = await session.call_tool("heartbeat", {"context_pct": 500})
        assert refused.is_error and "context_pct" in refused.content[0].text


async def test_mcp_client_lists_tools_and_calls_boot_heartbeat_and_journal(builder):  # noqa: F811
    async with stdio_client(bridge(builder.directory)) as (read, write):
        await drive(ClientSession(read, write))

    ada = await sync_to_async(Agent.objects.get)(name="ada")
    assert ada.status_line == "via mcp" and ada.context_pct == 61
    body = await sync_to_async(lambda: JournalEntry.objects.get(agent=ada, kind="next").body)()
    assert body == "totals"
