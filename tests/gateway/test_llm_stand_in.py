"""The LLM stand-in speaks the wire protocols the real clients expect (openai SDK, LiteLLM's providers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from promptship_sandbox.llm_server import LLMStandIn, ToolCall
from tests.gateway.helpers import validate_openai_exchange

pytestmark = pytest.mark.gateway


def test_openai_client_non_streaming_reports_openrouter_style_cost(llm: LLMStandIn) -> None:
    import openai

    client = openai.OpenAI(base_url=llm.base_url + "/v1", api_key="test-key", max_retries=0)
    llm.script("openai/gpt-4o", ["scripted answer"])
    cloud = client.chat.completions.create(model="openai/gpt-4o", messages=[{"role": "user", "content": "hi"}])
    local = client.chat.completions.create(model="mistral", messages=[{"role": "user", "content": "hello there"}])

    assert cloud.choices[0].message.content == "scripted answer"
    assert cloud.usage is not None and (cloud.usage.model_extra or {}).get("cost", 0) > 0
    assert local.choices[0].message.content == "[mistral] hello there"
    assert local.usage is not None and "cost" not in (local.usage.model_extra or {})
    assert [r.model for r in llm.completions()] == ["openai/gpt-4o", "mistral"]
    assert llm.completions()[0].headers["authorization"] == "Bearer test-key"


def test_openai_client_streams_tool_calls_in_openai_chunk_format(llm: LLMStandIn) -> None:
    import openai

    client = openai.OpenAI(base_url=llm.base_url + "/v1", api_key="k", max_retries=0)
    args = {"command": "create", "path": "/w/app.py", "file_text": "print('hello world, a long line')\n"}
    llm.script("agent-model", [[ToolCall("file_editor", args), ToolCall("finish", {"message": "done"})]])
    stream = client.chat.completions.create(
        model="agent-model",
        messages=[{"role": "user", "content": "write app.py"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, {"name": "", "arguments": "", "id": ""})
                if tc.id:
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
    assert finish == "tool_calls"
    assert [calls[i]["name"] for i in sorted(calls)] == ["file_editor", "finish"]
    assert json.loads(calls[0]["arguments"]) == args
    assert all(c["id"] for c in calls.values())
    assert usage is not None and usage.completion_tokens > 0


def test_litellm_providers_reach_both_protocols(llm: LLMStandIn) -> None:
    import litellm

    llm.script("openai/gpt-4o", ["cloud says hi"])
    llm.set_price("openai/gpt-4o", 1e-6, 2e-6)
    cloud = litellm.completion(
        model="openrouter/openai/gpt-4o",
        api_base=llm.base_url + "/v1",
        api_key="sk-or-test",
        messages=[{"role": "user", "content": "hello"}],
    )
    local = litellm.completion(
        model="ollama_chat/llama3", api_base=llm.base_url, messages=[{"role": "user", "content": "hello local"}]
    )
    local_stream = litellm.completion(
        model="ollama_chat/llama3",
        api_base=llm.base_url,
        messages=[{"role": "user", "content": "streamed local"}],
        stream=True,
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in local_stream)  # type: ignore[union-attr]

    assert cloud.choices[0].message.content == "cloud says hi"  # type: ignore[union-attr]
    usage = cloud.usage  # type: ignore[union-attr]
    expected = usage.prompt_tokens * 1e-6 + usage.completion_tokens * 2e-6
    assert cloud._hidden_params["response_cost"] == pytest.approx(expected)
    assert local.choices[0].message.content == "[llama3] hello local"  # type: ignore[union-attr]
    assert streamed == "[llama3] streamed local"
    paths = [r.path for r in llm.completions()]
    assert paths == ["/v1/chat/completions", "/api/chat", "/api/chat"]


def test_litellm_ollama_tool_calls(llm: LLMStandIn) -> None:
    import litellm

    llm.script("mistral", [[ToolCall("terminal", {"command": "ls"})]])
    reply = litellm.completion(
        model="ollama_chat/mistral",
        api_base=llm.base_url,
        messages=[{"role": "user", "content": "list files"}],
        tools=[{"type": "function", "function": {"name": "terminal", "parameters": {"type": "object"}}}],
    )
    call = reply.choices[0].message.tool_calls[0]  # type: ignore[union-attr]
    assert call.function.name == "terminal"
    assert json.loads(call.function.arguments) == {"command": "ls"}


def test_fail_next_and_unknown_local_model(llm: LLMStandIn) -> None:
    llm.fail_next(2, 503, model="openai/gpt-4o")
    body = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]}
    with httpx.Client(base_url=llm.base_url) as http:
        statuses = [http.post("/v1/chat/completions", json=body).status_code for _ in range(3)]
        other = http.post("/v1/chat/completions", json={**body, "model": "mistral"}).status_code
        missing = http.post("/api/chat", json={"model": "gpt-5", "messages": [], "stream": False})
        tags = http.get("/api/tags").json()
    assert statuses == [503, 503, 200]
    assert other == 200
    assert missing.status_code == 404
    assert {m["name"] for m in tags["models"]} == {"llama3:latest", "mistral:latest", "codellama:latest"}


def test_command_serves_a_script_to_other_processes(tmp_path) -> None:
    script = tmp_path / "script.json"
    replies = ["from the file", {"tool_calls": [{"name": "finish", "arguments": {}}]}]
    script.write_text(json.dumps({"scripted": replies}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "promptship_sandbox.llm_server", "--port", "0", "--script", str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        base = line.strip().rsplit(" ", 1)[-1]
        assert base.startswith("http://127.0.0.1:")
        body = {"model": "scripted", "messages": [{"role": "user", "content": "go"}]}
        with httpx.Client(base_url=base, timeout=10) as http:
            for _ in range(50):
                try:
                    first = http.post("/v1/chat/completions", json=body).json()
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            second = http.post("/v1/chat/completions", json=body).json()
            logged = http.get("/_stand_in/requests").json()
        assert first["choices"][0]["message"]["content"] == "from the file"
        assert second["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "finish"
        assert len(logged) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize("model", ["openai/gpt-4o", "mistral"])
def test_answers_validate_against_the_openai_types(llm: LLMStandIn, model: str) -> None:
    llm.script(model, ["plain text", [ToolCall("terminal", {"command": "ls"})], [ToolCall("finish")], "streamed text"])
    body = {"model": model, "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": True}}
    validate_openai_exchange(llm.base_url, "/v1/chat/completions", {}, body)  # text, then streamed tool call
    validate_openai_exchange(llm.base_url, "/v1/chat/completions", {}, body)  # tool call, then streamed text


def test_conversation_scripts_go_to_the_conversation_that_names_their_marker(llm: LLMStandIn) -> None:
    """Two agents share the stand-in (the demo's concurrent runs): each tool-using conversation gets the replies
    scripted for the marker its messages carry, whatever the model; a request without tools takes none."""
    tools = [{"type": "function", "function": {"name": "finish", "parameters": {"type": "object"}}}]
    llm.script_conversation("promptship/aaaa", [[ToolCall("finish", {"message": "run a"})]])
    llm.script_conversation("promptship/bbbb", [[ToolCall("finish", {"message": "run b"})], "b again"])

    def ask(model: str, text: str, with_tools: bool = True) -> dict:
        body: dict = {"model": model, "messages": [{"role": "user", "content": text}]}
        if with_tools:
            body["tools"] = tools
        return httpx.post(f"{llm.base_url}/v1/chat/completions", json=body, timeout=30).json()["choices"][0]

    pr_text = ask("openai/gpt-4o", "Write the PR text for branch promptship/bbbb", with_tools=False)
    b1 = ask("mistral", "You work on the branch `promptship/bbbb`.")
    a1 = ask("openai/gpt-4o", "You work on the branch `promptship/aaaa`.")
    b2 = ask("llama3", "You work on the branch `promptship/bbbb`. Go on.")
    other = ask("mistral", "no marker here")

    def finish_message(choice: dict) -> str:
        return json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])["message"]

    assert pr_text["message"]["content"].startswith("[openai/gpt-4o] Write the PR text")
    assert (finish_message(b1), finish_message(a1)) == ("run b", "run a")
    assert b2["message"]["content"] == "b again"
    assert other["message"]["content"] == "[mistral] no marker here"
