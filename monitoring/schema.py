"""The OpenAPI 3.1 description of the API (drf-spectacular), kept beside the views, not in them.

The API views return ready JSON (orjson), so their shapes are declared here as JSON
Schema and attached with view extensions; ``tests/monitoring/test_schema.py`` validates
live responses against them and runs schemathesis against the served schema. Errors
everywhere have OpenAI's shape (component ``Error``).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme, TokenRefreshSerializerExtension
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiViewExtension
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(kind: str | list[str], **extra: Any) -> dict[str, Any]:
    kinds = [kind] if isinstance(kind, str) else list(kind)
    return {"type": [*kinds, "null"], **extra}


USD = {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$", "description": "USD amount, a decimal string"}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": _nullable("string"),
                    "code": _nullable("string"),
                },
            }
        },
    },
    "ChatMessage": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
            "content": {"type": ["string", "array", "null"]},
            "name": {"type": "string"},
        },
    },
    "ChatCompletionRequest": {
        "type": "object",
        "required": ["model", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
            "stream": {"type": "boolean"},
            "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
            "max_tokens": {"type": "integer", "minimum": 1},
            "max_completion_tokens": {"type": "integer", "minimum": 1},
            "temperature": {"type": "number", "minimum": 0, "maximum": 2},
            "top_p": {"type": "number", "minimum": 0, "maximum": 1},
            "n": {"type": "integer", "minimum": 1, "maximum": 1},
            "stop": {"type": ["string", "array", "null"]},
            "user": {"type": "string"},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "description": "OpenAI's chat completion body; other OpenAI fields are passed to the provider.",
    },
    "Usage": {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            "prompt_tokens": {"type": "integer"},
            "completion_tokens": {"type": "integer"},
            "total_tokens": {"type": "integer"},
        },
    },
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "model", "choices"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "chat.completion"},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "message"],
                    "properties": {
                        "index": {"type": "integer"},
                        "message": _ref("ChatMessage"),
                        "finish_reason": _nullable("string"),
                    },
                },
            },
            "usage": _ref("Usage"),
        },
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}},
    },
    "Price": {
        "type": "object",
        "required": ["id", "input_per_mtok", "output_per_mtok", "effective_from"],
        "properties": {
            "id": {"type": "integer"},
            "input_per_mtok": USD,
            "output_per_mtok": USD,
            "cached_input_per_mtok": USD,
            "cache_write_per_mtok": USD,
            "effective_from": {"type": "string", "format": "date-time"},
        },
    },
    "CostEstimate": {
        "type": "object",
        "required": ["object", "model", "currency", "strategy", "chosen", "estimated_cost_usd", "candidates"],
        "properties": {
            "object": {"const": "routing.cost_estimate"},
            "model": {"type": "string"},
            "currency": {"const": "USD"},
            "strategy": {"type": "string"},
            "route_reason": _nullable("string"),
            "chosen": _nullable("string"),
            "estimated_cost_usd": {**USD, "type": ["string", "null"]},
            "max_cost_usd": {**USD, "type": ["string", "null"]},
            "expected_output_tokens": {"type": "integer"},
            "expected_output_tokens_source": {"type": "string"},
            "default_expected_output_tokens": {"type": "integer"},
            "candidates": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["deployment", "provider", "rank", "chosen", "priced", "estimated_cost_usd"],
                    "properties": {
                        "deployment": {"type": "string"},
                        "provider": {"type": "string"},
                        "provider_model": {"type": "string"},
                        "rank": _nullable("integer"),
                        "chosen": {"type": "boolean"},
                        "excluded": _nullable("string"),
                        "input_tokens": {"type": "integer"},
                        "tokenizer": {"type": "string"},
                        "tokenizer_exact": {"type": "boolean"},
                        "expected_output_tokens": {"type": "integer"},
                        "priced": {"type": "boolean"},
                        "price": {"oneOf": [_ref("Price"), {"type": "null"}]},
                        "estimated_cost_usd": {**USD, "type": ["string", "null"]},
                    },
                },
            },
        },
    },
    "RouteExplanation": {
        "type": "object",
        "required": ["object", "model", "stream", "strategy", "strategy_source", "chosen", "candidates", "excluded"],
        "properties": {
            "object": {"const": "routing.explain"},
            "model": {"type": "string"},
            "stream": {"type": "boolean"},
            "strategy": {"type": "string"},
            "strategy_source": {"type": "string"},
            "reason": _nullable("string"),
            "rule": _nullable("object"),
            "chosen": _nullable("string"),
            "max_attempts": {"type": "integer"},
            "tokens": {"type": "object"},
            "candidates": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["rank", "deployment", "provider", "will_try", "cooling_down", "estimated_cost_usd"],
                    "properties": {
                        "rank": {"type": "integer"},
                        "deployment": {"type": "string"},
                        "provider": {"type": "string"},
                        "provider_model": {"type": "string"},
                        "will_try": {"type": "boolean"},
                        "cooling_down": {"type": "boolean"},
                        "estimated_cost_usd": {**USD, "type": ["string", "null"]},
                        "latency_ms": _nullable("number"),
                        "latency_samples": {"type": "integer"},
                        "weight": {"type": "integer"},
                        "priority": {"type": "integer"},
                        "score": {"type": "object"},
                    },
                },
            },
            "excluded": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["deployment", "provider", "reason"],
                    "properties": {
                        "deployment": {"type": "string"},
                        "provider": {"type": "string"},
                        "reason": {"type": "string"},
                    },
                },
            },
            "rules": {
                "type": ["array", "null"],
                "items": {"type": "object"},
                "description": "With the custom strategy: how each rule matched; otherwise null.",
            },
        },
    },
    "LatencyFigures": {
        "type": "object",
        "required": ["samples", "errors", "error_rate", "latency_ms", "ttft_ms"],
        "properties": {
            "samples": {"type": "integer"},
            "errors": {"type": "integer"},
            "error_rate": _nullable("number"),
            "latency_ms": {"type": "object"},
            "ttft_ms": {"type": "object"},
            "overhead_ms_avg": _nullable("number"),
        },
    },
    "LatencyReport": {
        "type": "object",
        "required": ["object", "window", "since", "until", "providers"],
        "properties": {
            "object": {"const": "usage.latency"},
            "window": {"type": "string"},
            "since": {"type": "string", "format": "date-time"},
            "until": {"type": "string", "format": "date-time"},
            "providers": {
                "type": "array",
                "items": {
                    "allOf": [_ref("LatencyFigures")],
                    "type": "object",
                    "required": ["provider", "deployments"],
                    "properties": {
                        "provider": {"type": "string"},
                        "deployments": {
                            "type": "array",
                            "items": {
                                "allOf": [_ref("LatencyFigures")],
                                "type": "object",
                                "required": ["deployment", "model", "live"],
                                "properties": {
                                    "deployment": {"type": "string"},
                                    "model": _nullable("string"),
                                    "live": _nullable("object"),
                                },
                            },
                        },
                    },
                },
            },
        },
    },
    "CostReport": {
        "type": "object",
        "required": ["start", "end", "group_by", "currency", "rows", "total"],
        "properties": {
            "start": {"type": "string", "format": "date-time"},
            "end": {"type": "string", "format": "date-time"},
            "group_by": {"type": "array", "items": {"type": "string"}},
            "currency": {"const": "USD"},
            "rows": {"type": "array", "items": {"type": "object"}},
            "total": {"type": "object"},
        },
    },
    "Strategy": {
        "type": "object",
        "required": ["strategy", "strategies"],
        "properties": {"strategy": {"type": "string"}, "strategies": {"type": "array", "items": {"type": "string"}}},
    },
    "StrategyChange": {
        "type": "object",
        "required": ["strategy"],
        "properties": {"strategy": {"type": "string"}},
    },
}


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=_ref("Error"), description=description)


KEY_ERRORS = {
    400: _error("Invalid request (OpenAI error shape)."),
    401: _error("Missing or invalid API key."),
    403: _error("The key may not use this model."),
}
ROUTED_ERRORS = {
    **KEY_ERRORS,
    404: _error("Unknown model."),
    413: _error("Request body too large."),
    429: _error("Rate limited or budget exceeded."),
}
UPSTREAM_ERRORS = {
    502: _error("Every upstream attempt failed."),
    504: _error("The upstream timed out."),
}
JWT_ERRORS = {
    400: _error("Invalid request."),
    401: _error("Missing or invalid JWT."),
    403: _error("Not a staff user."),
}


def _json(name: str, description: str = "") -> OpenApiResponse:
    return OpenApiResponse(response=_ref(name), description=description)


class ClientKeyScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ClientKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "description": "A client API key issued by an operator."}


def _replace(target: str, **methods: Any) -> type[OpenApiViewExtension]:
    class Extension(OpenApiViewExtension):
        target_class: str | type[object] | None = target

        def view_replacement(self) -> Any:
            view = self.target_class
            assert isinstance(view, type)  # drf-spectacular imported the dotted path when it loaded the extension
            return extend_schema_view(**methods)(view)

    Extension.__name__ = f"Schema_{target.rsplit('.', 1)[-1]}"
    return Extension


CHAT_BODY = {"application/json": _ref("ChatCompletionRequest")}
ROUTABLE_BODY = {"application/json": {"oneOf": [_ref("ChatCompletionRequest"), _ref("EmbeddingsRequest")]}}

_replace(
    "routing.views.completions.ChatCompletionsView",
    post=extend_schema(
        operation_id="chat_completions_create",
        summary="Create a chat completion (OpenAI wire format; streams with stream=true)",
        request=CHAT_BODY,
        responses={
            (200, "application/json"): _json("ChatCompletion", "The completion; cost in x-gateway-cost-usd."),
            (200, "text/event-stream"): OpenApiResponse(
                response={"type": "string"}, description="Server-sent events ending with data: [DONE]."
            ),
            **ROUTED_ERRORS,
            **UPSTREAM_ERRORS,
        },
        tags=["chat"],
    ),
)
_replace(
    "routing.views.completions.ModelsView",
    get=extend_schema(operation_id="models_list", responses={200: _json("ModelList"), **KEY_ERRORS}, tags=["models"]),
)
_replace(
    "routing.views.completions.ModelDetailView",
    get=extend_schema(
        operation_id="models_retrieve",
        responses={200: _json("Model"), **KEY_ERRORS, 404: _error("Unknown model.")},
        tags=["models"],
    ),
)


def _routing_preview(target: str, operation_id: str, summary: str, response: str) -> None:
    """A routing view that answers about a chat completion or embeddings body without calling a provider."""
    _replace(
        target,
        post=extend_schema(
            operation_id=operation_id,
            summary=f"{summary} (no provider is called)",
            request=ROUTABLE_BODY,
            responses={200: _json(response), **ROUTED_ERRORS},
            tags=["routing"],
        ),
    )


_routing_preview(
    "routing.views.estimate.EstimateCostView",
    "routing_estimate_cost",
    "What a chat completion or embeddings request would cost on each candidate",
    "CostEstimate",
)
_routing_preview(
    "routing.views.explain.ExplainView",
    "routing_explain",
    "Where a chat completion or embeddings request would be routed, and why",
    "RouteExplanation",
)
_replace(
    "routing.views.latency.LatencyView",
    get=extend_schema(
        operation_id="routing_latency",
        parameters=[
            OpenApiParameter(
                "window", str, description="How far back: a number and m, h or d (15m, 1h, 24h, 7d); at most 90d."
            )
        ],
        responses={200: _json("LatencyReport"), **KEY_ERRORS},
        tags=["routing"],
    ),
)
_replace(
    "usage.views.CostReportView",
    get=extend_schema(
        operation_id="reports_costs",
        summary="Finance's cost report for a period (staff JWT); format=csv for CSV",
        parameters=[
            OpenApiParameter("start", str, required=True, description="ISO date or date-time, inclusive."),
            OpenApiParameter("end", str, required=True, description="ISO date or date-time, exclusive."),
            OpenApiParameter("group_by", str, description="Comma-separated: day, key, team, provider, model."),
            OpenApiParameter("format", str, enum=["json", "csv"]),
            OpenApiParameter("detail", str, description="1: one row per usage record."),
        ],
        responses={
            (200, "application/json"): _json("CostReport"),
            (200, "text/csv"): OpenApiResponse(response={"type": "string"}),
            **JWT_ERRORS,
        },
        tags=["reports"],
    ),
)
_replace(
    "routing.views.strategy_admin.StrategyAdminView",
    get=extend_schema(operation_id="strategy_get", responses={200: _json("Strategy"), **JWT_ERRORS}, tags=["admin"]),
    post=extend_schema(
        operation_id="strategy_set",
        request={"application/json": _ref("StrategyChange")},
        responses={200: _json("Strategy"), **JWT_ERRORS},
        tags=["admin"],
    ),
)


def public_endpoints(endpoints: list[tuple[str, str, str, Any]]) -> list[tuple[str, str, str, Any]]:
    """Preprocessing hook: the API, not the schema views themselves."""
    return [e for e in endpoints if not e[0].startswith(("/api/schema", "/api/docs", "/api/redoc"))]


def openai_errors(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Postprocessing hook: the shared schemas, and the error shape on the JWT endpoints."""
    components = result.setdefault("components", {}).setdefault("schemas", {})
    components.update(SCHEMAS)
    for path, item in result.get("paths", {}).items():
        if not path.startswith("/api/token"):
            continue
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            for code, text in (("400", "Invalid request."), ("401", "Wrong credentials or token.")):
                responses.setdefault(
                    code, {"description": text, "content": {"application/json": {"schema": _ref("Error")}}}
                )
    return result


# --- embeddings and Anthropic's Messages API ---------------------------------------------------

_TOKENS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}
_CONTENT = {
    "type": ["string", "array"],
    "items": {"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}},
}
_MESSAGES_FIELDS: dict[str, Any] = {
    "model": {"type": "string", "minLength": 1},
    "messages": {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {"role": {"type": "string", "enum": ["user", "assistant"]}, "content": _CONTENT},
        },
    },
    "system": _CONTENT,
    "max_tokens": {"type": "integer", "minimum": 1},
    "stream": {"type": "boolean"},
    "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "stop_sequences": {"type": "array", "items": {"type": "string"}},
    "tools": {
        "type": "array",
        "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
    },
    "tool_choice": {"type": "object"},
    "metadata": {"type": "object"},
    "thinking": {"type": "object"},
}
SCHEMAS.update(
    {
        "EmbeddingsRequest": {
            "type": "object",
            "required": ["model", "input"],
            "properties": {
                "model": {"type": "string", "minLength": 1},
                "input": {
                    "oneOf": [
                        {"type": "string", "minLength": 1},
                        {"type": "array", "minItems": 1, "maxItems": 2048, "items": {"type": "string", "minLength": 1}},
                        _TOKENS,
                        {"type": "array", "minItems": 1, "maxItems": 2048, "items": _TOKENS},
                    ]
                },
                "dimensions": {"type": "integer", "minimum": 1},
                "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                "user": {"type": "string"},
            },
            "description": "OpenAI's embeddings body; other OpenAI fields are passed to OpenAI-compatible providers.",
        },
        "EmbeddingList": {
            "type": "object",
            "required": ["object", "data", "model", "usage"],
            "properties": {
                "object": {"const": "list"},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["object", "index", "embedding"],
                        "properties": {
                            "object": {"const": "embedding"},
                            "index": {"type": "integer"},
                            "embedding": {"type": ["array", "string"], "items": {"type": "number"}},
                        },
                    },
                },
                "model": {"type": "string"},
                "usage": {
                    "type": "object",
                    "required": ["prompt_tokens", "total_tokens"],
                    "properties": {"prompt_tokens": {"type": "integer"}, "total_tokens": {"type": "integer"}},
                },
            },
        },
        "MessagesRequest": {
            "type": "object",
            "required": ["model", "max_tokens", "messages"],
            "properties": _MESSAGES_FIELDS,
            "description": "Anthropic's Messages body.",
        },
        "CountTokensRequest": {
            "type": "object",
            "required": ["model", "messages"],
            "properties": _MESSAGES_FIELDS,
        },
        "Message": {
            "type": "object",
            "required": ["id", "type", "role", "model", "content", "usage"],
            "properties": {
                "id": {"type": "string"},
                "type": {"const": "message"},
                "role": {"const": "assistant"},
                "model": {"type": "string"},
                "content": {"type": "array", "items": {"type": "object", "required": ["type"]}},
                "stop_reason": _nullable("string"),
                "stop_sequence": _nullable("string"),
                "usage": {
                    "type": "object",
                    "required": ["input_tokens", "output_tokens"],
                    "properties": {"input_tokens": {"type": "integer"}, "output_tokens": {"type": "integer"}},
                },
            },
        },
        "TokenCount": {
            "type": "object",
            "required": ["input_tokens"],
            "properties": {"input_tokens": {"type": "integer"}},
        },
        "AnthropicError": {
            "type": "object",
            "required": ["type", "error"],
            "properties": {
                "type": {"const": "error"},
                "error": {
                    "type": "object",
                    "required": ["type", "message"],
                    "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    }
)


class AnthropicKeyScheme(OpenApiAuthenticationExtension):
    """The same client key; ``/v1/messages`` takes it as ``x-api-key`` (the anthropic SDK's way) or a bearer token."""

    target_class = "routing.views.messages.AnthropicKeyAuthentication"
    name = "XApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "x-api-key",
            "description": "A client API key issued by an operator (or as 'Authorization: Bearer <key>').",
        }


def _anthropic_error(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=_ref("AnthropicError"), description=description)


ANTHROPIC_ERRORS = {
    400: _anthropic_error("Invalid request (Anthropic error shape)."),
    401: _anthropic_error("Missing or invalid API key."),
    403: _anthropic_error("The key may not use this model."),
    404: _anthropic_error("Unknown model."),
    413: _anthropic_error("Request body too large."),
}
_replace(
    "routing.views.embeddings.EmbeddingsView",
    post=extend_schema(
        operation_id="embeddings_create",
        summary="Create embeddings (OpenAI wire format)",
        request={"application/json": _ref("EmbeddingsRequest")},
        responses={
            200: _json("EmbeddingList", "The embeddings; cost in x-gateway-cost-usd."),
            **ROUTED_ERRORS,
            **UPSTREAM_ERRORS,
        },
        tags=["embeddings"],
    ),
)
_replace(
    "routing.views.messages.MessagesView",
    post=extend_schema(
        operation_id="messages_create",
        summary="Create a message (Anthropic's Messages API; streams with stream=true)",
        request={"application/json": _ref("MessagesRequest")},
        responses={
            (200, "application/json"): _json("Message", "The message; cost in x-gateway-cost-usd."),
            (200, "text/event-stream"): OpenApiResponse(
                response={"type": "string"}, description="Anthropic's server-sent events, ending with message_stop."
            ),
            **ANTHROPIC_ERRORS,
            429: _anthropic_error("Rate limited or budget exceeded."),
            502: _anthropic_error("Every upstream attempt failed."),
            504: _anthropic_error("The upstream timed out."),
        },
        tags=["messages"],
    ),
)
_replace(
    "routing.views.messages.CountTokensView",
    post=extend_schema(
        operation_id="messages_count_tokens",
        summary="Count a Messages request's input tokens (the gateway's own count)",
        request={"application/json": _ref("CountTokensRequest")},
        responses={200: _json("TokenCount"), **ANTHROPIC_ERRORS},
        tags=["messages"],
    ),
)


class StaffJWTScheme(SimpleJWTScheme):
    """The staff JWT (``accounts.jwt``): simplejwt's bearer scheme with stricter claim checks."""

    target_class = "accounts.jwt.StaffJWTAuthentication"


class CheckedTokenRefreshSerializerExtension(TokenRefreshSerializerExtension):
    """``/api/token/refresh/``: the refresh token goes in, an access token comes out."""

    target_class = "accounts.jwt.CheckedTokenRefreshSerializer"


# --- keys and teams over HTTP (accounts/apis.py) ---------------------------------------------------

_LIMIT = _nullable("integer", minimum=1)
_BUDGET_FIELDS: dict[str, Any] = {
    "budget_usd": {"oneOf": [USD, {"type": "null"}]},
    "budget_period": {"type": "string", "enum": ["day", "month"]},
    "budget_when_redis_down": {"type": "string", "enum": ["closed", "open"]},
    "rpm_limit": _LIMIT,
    "tpm_limit": _LIMIT,
}
_KEY_WRITABLE: dict[str, Any] = {
    "name": {"type": "string", "minLength": 1},
    "owner": {"type": "string"},
    "team": {"type": ["string", "integer", "null"], "description": "A team's name or id."},
    "allowed_models": {"type": "array", "items": {"type": "string"}},
    "strategy": {"type": "string"},
    **_BUDGET_FIELDS,
    "expires_at": _nullable("string", format="date-time"),
    "metadata": {"type": "object"},
}
_TEAM_WRITABLE: dict[str, Any] = {"name": {"type": "string", "minLength": 1}, **_BUDGET_FIELDS}
SCHEMAS.update(
    {
        "ClientKey": {
            "type": "object",
            "required": ["object", "id", "prefix", "name", "status", "created_at"],
            "properties": {
                "object": {"const": "client_key"},
                "id": {"type": "integer"},
                "prefix": {"type": "string"},
                "display_prefix": {"type": "string"},
                **_KEY_WRITABLE,
                "team": {
                    "oneOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "properties": {"id": {"type": "integer"}, "name": {"type": "string"}},
                        },
                    ]
                },
                "status": {"type": "string", "enum": ["active", "revoked", "expired"]},
                "revoked_at": _nullable("string"),
                "rotated_at": _nullable("string"),
                "previous_secret_valid_until": _nullable("string"),
                "created_at": {"type": "string"},
                "expires_at": _nullable("string"),
                "secret": {"type": "string", "description": "Only in the answers to create and rotate."},
            },
        },
        "ClientKeyList": {
            "type": "object",
            "required": ["object", "data", "has_more"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": _ref("ClientKey")},
                "has_more": {"type": "boolean"},
            },
        },
        "ClientKeyCreate": {"type": "object", "required": ["name"], "properties": _KEY_WRITABLE},
        "ClientKeyUpdate": {"type": "object", "properties": _KEY_WRITABLE},
        "KeyRotation": {
            "type": "object",
            "properties": {"grace_seconds": {"type": "integer", "minimum": 0, "maximum": 2592000}},
        },
        "Team": {
            "type": "object",
            "required": ["object", "id", "name", "key_count", "created_at"],
            "properties": {
                "object": {"const": "team"},
                "id": {"type": "integer"},
                **_TEAM_WRITABLE,
                "key_count": {"type": "integer", "minimum": 0},
                "created_at": {"type": "string"},
            },
        },
        "TeamList": {
            "type": "object",
            "required": ["object", "data", "has_more"],
            "properties": {
                "object": {"const": "list"},
                "data": {"type": "array", "items": _ref("Team")},
                "has_more": {"type": "boolean"},
            },
        },
        "TeamCreate": {"type": "object", "required": ["name"], "properties": _TEAM_WRITABLE},
        "TeamUpdate": {"type": "object", "properties": _TEAM_WRITABLE},
    }
)
ADMIN_API_ERRORS = {
    400: _error("Invalid field (param names it)."),
    401: _error("Missing or invalid staff JWT."),
    403: _error("The staff user lacks the model permission."),
}
_PAGING = [
    OpenApiParameter("limit", int, description="1 to 1000 (default 100)."),
    OpenApiParameter("offset", int, description="At least 0."),
]
_PREFIX = [
    OpenApiParameter("prefix", str, OpenApiParameter.PATH, description="The key's prefix, with or without gwk_.")
]
_TEAM_ID = [OpenApiParameter("team_id", int, OpenApiParameter.PATH)]
_KEY_NOT_FOUND = {404: _error("No key with this prefix.")}
_TEAM_NOT_FOUND = {404: _error("No team with this id.")}

_replace(
    "accounts.apis.KeyListView",
    get=extend_schema(
        operation_id="admin_keys_list",
        parameters=[
            OpenApiParameter("team", str, description="A team's name or id."),
            OpenApiParameter("status", str, enum=["active", "revoked", "expired"]),
            *_PAGING,
        ],
        responses={200: _json("ClientKeyList"), **ADMIN_API_ERRORS},
        tags=["keys"],
    ),
    post=extend_schema(
        operation_id="admin_keys_create",
        request={"application/json": _ref("ClientKeyCreate")},
        responses={201: _json("ClientKey", "The key, with its secret (shown once)."), **ADMIN_API_ERRORS},
        tags=["keys"],
    ),
)
_replace(
    "accounts.apis.KeyDetailView",
    get=extend_schema(
        operation_id="admin_keys_retrieve",
        parameters=_PREFIX,
        responses={200: _json("ClientKey"), **ADMIN_API_ERRORS, **_KEY_NOT_FOUND},
        tags=["keys"],
    ),
    patch=extend_schema(
        operation_id="admin_keys_update",
        parameters=_PREFIX,
        request={"application/json": _ref("ClientKeyUpdate")},
        responses={200: _json("ClientKey"), **ADMIN_API_ERRORS, **_KEY_NOT_FOUND},
        tags=["keys"],
    ),
)
_replace(
    "accounts.apis.KeyRevokeView",
    post=extend_schema(
        operation_id="admin_keys_revoke",
        parameters=_PREFIX,
        request=None,
        responses={200: _json("ClientKey"), **ADMIN_API_ERRORS, **_KEY_NOT_FOUND},
        tags=["keys"],
    ),
)
_replace(
    "accounts.apis.KeyRotateView",
    post=extend_schema(
        operation_id="admin_keys_rotate",
        parameters=_PREFIX,
        request={"application/json": _ref("KeyRotation")},
        responses={
            200: _json("ClientKey", "The key, with its new secret (shown once)."),
            **ADMIN_API_ERRORS,
            **_KEY_NOT_FOUND,
            409: _error("A revoked key cannot be rotated."),
        },
        tags=["keys"],
    ),
)
_replace(
    "accounts.apis.TeamListView",
    get=extend_schema(
        operation_id="admin_teams_list",
        parameters=_PAGING,
        responses={200: _json("TeamList"), **ADMIN_API_ERRORS},
        tags=["keys"],
    ),
    post=extend_schema(
        operation_id="admin_teams_create",
        request={"application/json": _ref("TeamCreate")},
        responses={201: _json("Team"), **ADMIN_API_ERRORS, 409: _error("A team with this name exists.")},
        tags=["keys"],
    ),
)
_replace(
    "accounts.apis.TeamDetailView",
    get=extend_schema(
        operation_id="admin_teams_retrieve",
        parameters=_TEAM_ID,
        responses={200: _json("Team"), **ADMIN_API_ERRORS, **_TEAM_NOT_FOUND},
        tags=["keys"],
    ),
    patch=extend_schema(
        operation_id="admin_teams_update",
        parameters=_TEAM_ID,
        request={"application/json": _ref("TeamUpdate")},
        responses={200: _json("Team"), **ADMIN_API_ERRORS, **_TEAM_NOT_FOUND, 409: _error("The name is taken.")},
        tags=["keys"],
    ),
    delete=extend_schema(
        operation_id="admin_teams_delete",
        parameters=_TEAM_ID,
        responses={
            204: OpenApiResponse(description="Deleted."),
            **ADMIN_API_ERRORS,
            **_TEAM_NOT_FOUND,
            409: _error("The team still has keys."),
        },
        tags=["keys"],
    ),
)
