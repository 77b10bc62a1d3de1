"""The gateway's door check of an OpenAI chat request (``domain.gate.chat_request_problem``): a table."""

from __future__ import annotations

from typing import Any

import pytest

from promptship.domain.gate import chat_request_problem


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"messages": [{"role": "user", "content": "hi"}]}, None),
        ({"messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f"}}]}]}, None),
        ({"messages": [{"role": "assistant", "content": None}]}, None),
        # a bare string as a part: OpenAI refuses it, and LiteLLM failed on it inside its prompt code for every
        # provider (a 502 after every group of the chain; tests/gateway/test_llm_failures.py)
        ({"messages": [{"role": "developer", "content": ["part"]}]}, "messages[0].content parts must be objects"),
        ({"messages": []}, "messages must be a non-empty array"),
        ({"messages": [{"role": "developer"}]}, "messages[0].content is required for a developer message"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": None}]},
            "messages[1].content is required for a system message",
        ),
        ({"messages": [{"role": "user"}]}, "messages[0].content is required for a user message"),
        ({"messages": [{"role": "tool", "tool_call_id": "x"}]}, "messages[0].content is required for a tool message"),
        ({"messages": [{"role": "nobody", "content": "x"}]}, "messages[0].role must be one of "),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, "plain"]}]},
            "messages[0].content parts must be objects",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]}, None),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "data:,"}]}]}, None),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "image_url"}]}]},
            "messages[0].content[1] is an image_url part: it needs ",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": 5}]}]},
            "messages[0].content[0] is an image_url part: it needs ",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}
                ]
            },
            None,
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0] is an input_audio part: it needs ",
        ),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
            },
            None,
        ),
        ({"messages": [{"role": "user", "content": "x"}], "tools": [{"d": []}]}, "tools[0] must be "),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function", "function": {}}]},
            "tools[0] must be ",
        ),
        (
            {"messages": [{"role": "user", "content": [{"text": "no type"}]}]},
            "messages[0].content parts need a type: one of ",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_use"}]}]},
            "messages[0].content parts need a type: one of ",
        ),
    ],
)
def test_chat_request_problem(body: dict[str, Any], problem: str | None) -> None:
    found = chat_request_problem(body)
    if problem is None or problem.endswith(" "):
        assert found == problem or (problem is not None and found is not None and found.startswith(problem))
    else:
        assert found == problem
