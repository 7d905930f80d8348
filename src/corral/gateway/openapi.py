"""The OpenAPI description served at /openapi.json (the request shapes the gateway itself checks)."""

from __future__ import annotations

from typing import Any

ERROR = {
    "description": "OpenAI-style error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str, body: dict[str, Any] | None = None, params: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": "OK"},
            "400": ERROR,
            "401": ERROR,
            "403": ERROR,
            "404": ERROR,
            "429": ERROR,
        },
    }
    if body is not None:
        op["requestBody"] = _json_body(body)
    if params:
        op["parameters"] = params
    return op


def _created(op: dict[str, Any]) -> dict[str, Any]:
    op["responses"] = {
        "201": {"description": "Created"},
        **{k: v for k, v in op["responses"].items() if k != "200"},
    }
    return op


def _conflict(op: dict[str, Any]) -> dict[str, Any]:
    op["responses"]["409"] = ERROR  # a name several keys share: revoke by id
    return op


GROUP = "(day|key|model)"


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


MESSAGE = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant", "tool"]},
        "content": {"type": "string"},
    },
}
MODEL = {"type": "string", "minLength": 1, "description": "a deployment's name (GET /v1/models)"}
COMMON = {
    "model": MODEL,
    "max_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "stream": {"type": "boolean"},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    "user": {"type": "string"},
    "corral": {
        "type": "object",
        "description": "render a registered prompt template into the request",
        "required": ["prompt"],
        "properties": {"prompt": {"type": "string"}, "variables": {"type": "object"}},
    },
}
CHAT = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {**COMMON, "messages": {"type": "array", "items": MESSAGE, "minItems": 1}},
}
COMPLETION = {
    "type": "object",
    "required": ["model", "prompt"],
    "properties": {
        **COMMON,
        "prompt": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    },
}
EMBEDDING = {
    "type": "object",
    "required": ["model", "input"],
    "properties": {
        "model": MODEL,
        "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
    },
}
FEEDBACK = {
    "type": "object",
    "description": "one score: `score` from 0 to 1, or `thumbs`; not both",
    "oneOf": [{"required": ["trace_id", "score"]}, {"required": ["trace_id", "thumbs"]}],
    "properties": {
        "trace_id": {"type": "string", "pattern": "^[0-9a-f]{32}$", "description": "x-corral-trace-id"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "thumbs": {"type": "string", "enum": ["up", "down"]},
        "label": {"type": "string", "maxLength": 128},
        "comment": {"type": "string", "maxLength": 4096},
    },
}
NEW_KEY = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[^\\x00-\\x1f\\x7f]+$"},
        "models": {"type": "array", "items": {"type": "string"}},
        "rpm": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "tpm": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
        "budget_usd": {"type": "number", "minimum": 0},
        "admin": {"type": "boolean"},
    },
}
ROUTE_COMMON = {
    "weight": {"type": "number", "minimum": 0},
    "timeout_s": {"type": "number", "minimum": 0, "exclusiveMinimum": True},
    "price": {
        "type": "object",
        "properties": {
            "prompt_per_1k": {"type": "number", "minimum": 0},
            "completion_per_1k": {"type": "number", "minimum": 0},
        },
        "additionalProperties": False,
    },
}
URL = {"type": "string", "pattern": "^https?://[^/]+"}
ROUTE = {
    "description": "a registry reference (`target`) or an OpenAI-compatible `url` with its `model`",
    "oneOf": [
        {
            "type": "object",
            "required": ["target"],
            "properties": {
                "target": {
                    "type": "string",
                    "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(@([1-9][0-9]{0,8}|[A-Za-z][A-Za-z0-9._-]{0,63}))?$",
                    "description": "name, name@3 or name@production",
                },
                "replicas": {"type": "integer", "minimum": 1, "maximum": 64},
                **ROUTE_COMMON,
            },
            "additionalProperties": False,
        },
        {
            "type": "object",
            "required": ["url", "model"],
            "properties": {
                "url": URL,
                "model": {"type": "string", "minLength": 1},
                "instances": {"type": "array", "items": URL},
                "api_key_env": {"type": "string", "pattern": "^CORRAL_UPSTREAM_[A-Z0-9_]+$"},
                **ROUTE_COMMON,
            },
            "additionalProperties": False,
        },
    ],
}
DEPLOYMENT = {
    "type": "object",
    "required": ["routes"],
    "properties": {
        "mode": {"type": "string", "enum": ["weighted", "canary"]},
        "sticky_by": {"type": "string", "enum": ["user", "session", "key"]},
        "routes": {"type": "array", "items": ROUTE, "minItems": 1},
        "shadow": {"type": "array", "items": ROUTE},
        "fallbacks": {"type": "array", "items": ROUTE},
        "retries": {"type": "integer", "minimum": 0, "maximum": 10},
        "guard": {
            "type": "string",
            "minLength": 1,
            "description": "a policy under corral.yaml's guard.policies, or `off`; none: `default`",
        },
    },
    "additionalProperties": False,
}
# something to erase, and no control characters (PostgreSQL text refuses NUL)
USER_ID = {"type": "string", "pattern": "^[^\\x00-\\x1f\\x7f]*[^\\s\\x00-\\x1f\\x7f][^\\x00-\\x1f\\x7f]*$"}
TEXTS = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}
MODERATION = {
    "type": "object",
    "required": ["input"],
    "properties": {"input": TEXTS, "model": {"type": "string"}},
}


def openapi_spec() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "corral gateway",
            "version": "1",
            "description": "OpenAI-compatible gateway with keys, limits, costs and tracing",
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type"],
                            "properties": {"message": {"type": "string"}, "type": {"type": "string"}},
                        }
                    },
                }
            },
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/chat/completions": {"post": _op("Chat completion (streaming with stream: true)", CHAT)},
            "/v1/completions": {"post": _op("Text completion", COMPLETION)},
            "/v1/embeddings": {"post": _op("Embeddings", EMBEDDING)},
            "/v1/models": {"get": _op("Models (deployments) this key may use")},
            "/v1/feedback": {"post": _op("Feedback on a trace", FEEDBACK)},
            "/v1/moderations": {
                "post": _op("Moderation by the default guard policy's checks (OpenAI's API)", MODERATION)
            },
            "/health": {
                "get": {"summary": "Liveness", "security": [], "responses": {"200": {"description": "alive"}}}
            },
            "/ready": {
                "get": {
                    "summary": "Readiness",
                    "security": [],
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
                }
            },
            "/admin/keys": {
                "get": _op("List keys"),
                "post": _created(_op("Create a key (shown once)", NEW_KEY)),
            },
            "/admin/keys/{key}": {
                "delete": _conflict(_op("Revoke a key by id, name or prefix", params=[_path_param("key")]))
            },
            "/admin/deployments": {"get": _op("Deployments and their live routes")},
            "/admin/deployments/{name}": {
                "get": _op("One deployment", params=[_path_param("name")]),
                "put": _op("Create or replace a deployment", DEPLOYMENT, [_path_param("name")]),
                "delete": _op("Delete a deployment", params=[_path_param("name")]),
            },
            "/admin/costs": {
                "get": _op(
                    "Requests, tokens and cost by day, key and model",
                    params=[
                        _query("group_by", {"type": "string", "pattern": f"^{GROUP}(,{GROUP})*$"}),
                        _query("since", {"type": "string", "format": "date"}),
                        _query("until", {"type": "string", "format": "date"}),
                    ],
                )
            },
            "/admin/traces": {
                "get": _op(
                    "Recent traces",
                    params=[
                        _query("limit", {"type": "integer"}),
                        # no NUL: PostgreSQL text cannot hold one, so such a filter is a 400 there
                        _query("deployment", {"type": "string", "pattern": "^[^\\x00]*$"}),
                    ],
                )
            },
            "/admin/status": {"get": _op("Routes, breakers, workers, Redis and spool")},
            "/admin/users/{id}": {
                "delete": _op(
                    "Erase an end user's traces, feedback and derived data (GDPR); dry_run only counts",
                    params=[
                        {**_path_param("id"), "schema": USER_ID},
                        _query("dry_run", {"type": "string", "enum": ["true", "false"]}),
                    ],
                )
            },
        },
    }
