"""The agent API: JSON over HTTP at /api/v1/, bearer tokens, OpenAPI at /api/v1/openapi.json."""

from __future__ import annotations

from ninja import NinjaAPI

from fleet.api import errors, planner
from fleet.api.auth import AgentToken, PerAgentThrottle
from fleet.api.endpoints import router

api = NinjaAPI(
    title="Fleet agent API",
    version="1",
    description=(
        "What agents call: boot, heartbeat, pull work, claim files, submit, review, "
        "journal, inbox; orchestrators draft plans. Errors are JSON {error, detail}."
    ),
    urls_namespace="fleet-api",
    auth=AgentToken(),
    throttle=[PerAgentThrottle()],
)
errors.install(api)
api.add_router("", router)
api.add_router("", planner.router)
