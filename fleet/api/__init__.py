"""The agent API: JSON over HTTP at /api/v1/, bearer tokens, OpenAPI at /api/v1/openapi.json."""

from __future__ import annotations

from ninja import NinjaAPI

from fleet import converters  # noqa: F401 - registers the {id:…} path converter
from fleet.api import errors, idempotency, planner, runners
from fleet.api.auth import AgentToken, PerAgentThrottle
from fleet.api.endpoints import router

# OpenAPI links: what an agent does with an answer (boot → work/next → heartbeat,
# claim, journal, submit; a review → its findings; a plan → a wave → a task), so a
# stateful client (schemathesis) can walk the API as agents do.
TASK_KEY, EPOCH = "$response.body#/task/key", "$response.body#/task/lease_epoch"
LINKS = {
    ("get", "boot"): {200: {"PullWork": {"operationId": "work_next"}}},
    ("post", "work/next"): {
        200: {
            "Heartbeat": {
                "operationId": "heartbeat",
                "requestBody": {"context_pct": 20, "status_line": "working", "epoch": EPOCH},
            },
            "Claim": {
                "operationId": "claim",
                "requestBody": {"task": TASK_KEY, "paths": ["src/shop.py"]},
            },
            "Journal": {
                "operationId": "journal",
                "requestBody": {"kind": "next", "body": "write it", "task": TASK_KEY},
            },
            "Submit": {
                "operationId": "submit",
                "parameters": {"key": TASK_KEY},
                "requestBody": {"commit": "0" * 40, "epoch": EPOCH},
            },
            "Review": {
                "operationId": "review",
                "parameters": {"review_id": "$response.body#/review_id"},
            },
            "Findings": {
                "operationId": "findings",
                "parameters": {"review_id": "$response.body#/review_id"},
            },
        }
    },
    ("post", "claims"): {
        201: {
            "Release": {
                "operationId": "release",
                "parameters": {"claim_id": "$response.body#/0/id"},
            }
        }
    },
    ("get", "inbox"): {
        200: {"Ack": {"operationId": "ack", "parameters": {"message_id": "$response.body#/0/id"}}}
    },
    ("post", "plans"): {
        201: {
            "AddWave": {
                "operationId": "create_wave",
                "parameters": {"plan_id": "$response.body#/id"},
            }
        }
    },
    ("post", "plans/{plan_id}/waves"): {
        201: {
            "AddTask": {
                "operationId": "create_task",
                "parameters": {"wave_id": "$response.body#/id"},
            }
        }
    },
}


IDEMPOTENCY_KEY = {
    "name": idempotency.HEADER,
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": idempotency.PATTERN},
    "description": "one per logical call, the same on each retry of it: a retry gets the"
    " first answer again (Idempotent-Replayed: true) and changes nothing; the key used for"
    " another call is a 409 idempotency_key_reused; while the first call runs, a 503"
    " in_progress (retry after Retry-After)",
}


class FleetAPI(NinjaAPI):
    def get_openapi_schema(self, *args, **kwargs):
        schema = super().get_openapi_schema(*args, **kwargs)
        ids = {
            op["operationId"].rsplit("_endpoints_", 1)[-1].rsplit("_planner_", 1)[-1]: op[
                "operationId"
            ]
            for methods in schema["paths"].values()
            for op in methods.values()
        }
        for path, methods in schema["paths"].items():
            for method, operation in methods.items():
                if method == "post":
                    operation.setdefault("parameters", []).append(IDEMPOTENCY_KEY)
                for status, links in LINKS.get((method, path.split("/api/v1/", 1)[-1]), {}).items():
                    response = operation["responses"][status]
                    response["links"] = {
                        name: {**link, "operationId": ids[link["operationId"]]}
                        for name, link in links.items()
                    }
        return schema


api = FleetAPI(
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
api.add_router("", runners.router)
