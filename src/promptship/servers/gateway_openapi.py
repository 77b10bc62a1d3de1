"""The gateway service's OpenAPI description (``GET /openapi.json``): what ``servers/gateway.py`` really serves.

Written by hand from the handlers, not generated: the service is a few Starlette routes, and the description is
the contract clients (and ``tests/gateway/test_gateway_openapi.py``, schemathesis) hold it to. The chat request is
described as loosely as the service accepts it (OpenAI's fields pass through to the provider; only what
``domain.gate.chat_request_problem`` checks is required), the answers as tightly as the service makes them.
"""

from __future__ import annotations

from typing import Any

from promptship.domain.gate import CONTENT_PART_TYPES

_ERROR = {"$ref": "#/components/schemas/Error"}


def _errors(*codes: int) -> dict[str, Any]:
    why = {
        400: "The body is not JSON, not an object, or not a chat request (the message names the field).",
        401: "No per-run API key, an unknown one, or the key of an attempt that ended.",
        402: "The run's budget is spent (not 429: clients would retry).",
        403: "Sensitive data in the request and no local model to send it to.",
        502: "The provider failed (not retryable).",
        503: "The provider failed (retryable).",
        504: "The provider did not answer in time.",
    }
    return {str(c): {"description": why[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _chat_operation(operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": "Chat completion (OpenAI-compatible), routed, gated, budgeted and charged to the key's run.",
        "security": [{"runKey": []}],
        "parameters": [
            {
                "name": "x-promptship-step",
                "in": "header",
                "required": False,
                "description": "The step the call is charged to in the ledger (default `agent`; first 64 characters).",
                "schema": {"type": "string"},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
        },
        "responses": {
            "200": {
                "description": "The completion; with `stream: true` a server-sent event stream of chunks ending "
                "`data: [DONE]` (a failure after the headers is an `error` event in the stream).",
                "headers": {
                    "x-litellm-response-cost": {
                        "description": "The call's cost in USD (non-streaming answers).",
                        "schema": {"type": "string"},
                    }
                },
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ChatCompletion"}},
                    # one server-sent event (schemathesis checks each event of a stream against it)
                    "text/event-stream": {"schema": {"$ref": "#/components/schemas/ChatCompletionEvent"}},
                },
            },
            **_errors(400, 401, 402, 403, 502, 503, 504),
        },
    }


def _models_operation(operation_id: str) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": "The routing policy's model groups (the names a client may ask for).",
        "security": [{"runKey": []}],
        "responses": {
            "200": {
                "description": "The model groups.",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ModelList"}}},
            },
            **_errors(401),
        },
    }


def gateway_openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the gateway service."""
    from promptship import __version__

    message = {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string", "enum": ["system", "user", "assistant", "tool", "function", "developer"]},
            "content": {
                "type": ["string", "array", "null"],
                "items": {
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "required": ["type"],
                            "properties": {"type": {"type": "string", "enum": list(CONTENT_PART_TYPES)}},
                        },
                    ]
                },
            },
            "tool_calls": {
                "type": ["array", "null"],
                "items": {"type": "object", "properties": {"function": {"type": "object"}}},
            },
            "function_call": {"type": ["object", "null"]},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "promptship LLM gateway",
            "version": __version__,
            "description": "OpenAI-compatible chat completions for a run's code agent: every call routed by "
            "promptship's policy, through the sensitive-data gate, within the run's budget, charged to the run "
            "its key belongs to. Keys are per run attempt (`psk-run-…`) and stop working when the attempt ends.",
        },
        "paths": {
            "/v1/chat/completions": {"post": _chat_operation("createChatCompletion")},
            "/chat/completions": {"post": _chat_operation("createChatCompletionUnversioned")},
            "/v1/models": {"get": _models_operation("listModels")},
            "/models": {"get": _models_operation("listModelsUnversioned")},
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This description (no key needed).",
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness of the service (no key needed).",
                    "responses": {
                        "200": {
                            "description": "Up.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["status"],
                                        "properties": {"status": {"type": "string", "enum": ["ok"]}},
                                    }
                                }
                            },
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "runKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The per-run key promptship gives the run's agent (`psk-run-…`).",
                }
            },
            "schemas": {
                "ChatRequest": {
                    "type": "object",
                    "required": ["messages"],
                    "additionalProperties": True,
                    "properties": {
                        "model": {"type": "string", "description": "A model group (`GET /v1/models`)."},
                        "messages": {"type": "array", "minItems": 1, "items": message},
                        "stream": {"type": "boolean"},
                        "tools": {
                            "type": ["array", "null"],
                            "items": {
                                "type": "object",
                                "required": ["type", "function"],
                                "properties": {
                                    "type": {"type": "string", "enum": ["function"]},
                                    "function": {
                                        "type": "object",
                                        "required": ["name"],
                                        "properties": {"name": {"type": "string"}},
                                    },
                                },
                            },
                        },
                        "max_tokens": {"type": "integer", "minimum": 1},
                        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                    },
                },
                "ChatCompletion": {
                    "type": "object",
                    "required": ["id", "object", "created", "model", "choices"],
                    "properties": {
                        "id": {"type": "string"},
                        "object": {"type": "string", "enum": ["chat.completion"]},
                        "created": {"type": "integer"},
                        "model": {"type": "string"},
                        "choices": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["index", "message"],
                                "properties": {
                                    "index": {"type": "integer"},
                                    "message": {
                                        "type": "object",
                                        "required": ["role"],
                                        "properties": {
                                            "role": {"type": "string"},
                                            "content": {"type": ["string", "null"]},
                                            "tool_calls": {"type": ["array", "null"], "items": {"type": "object"}},
                                        },
                                    },
                                    "finish_reason": {"type": ["string", "null"]},
                                },
                            },
                        },
                        "usage": {
                            "type": "object",
                            "properties": {
                                "prompt_tokens": {"type": "integer"},
                                "completion_tokens": {"type": "integer"},
                                "total_tokens": {"type": "integer"},
                                "cost": {"type": "number"},
                            },
                        },
                    },
                },
                "ChatCompletionEvent": {
                    "type": "object",
                    "required": ["data"],
                    "properties": {
                        "data": {
                            "type": "string",
                            "description": "A `chat.completion.chunk` as JSON (the last chunk carries `usage`), an "
                            "`error` object when the provider fails mid-stream, or `[DONE]` last.",
                        },
                        "event": {"type": "string"},
                        "id": {"type": "string"},
                    },
                },
                "ModelList": {
                    "type": "object",
                    "required": ["object", "data"],
                    "properties": {
                        "object": {"type": "string", "enum": ["list"]},
                        "data": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["id", "object", "created", "owned_by"],
                                "properties": {
                                    "id": {"type": "string"},
                                    "object": {"type": "string", "enum": ["model"]},
                                    "created": {"type": "integer"},
                                    "owned_by": {"type": "string"},
                                },
                            },
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type"],
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "code": {"type": ["string", "null"]},
                            },
                        }
                    },
                },
            },
        },
    }
