"""The backend's contract: POST /chat, GET /health, error bodies and status codes, CORS, no key leaks."""

from __future__ import annotations

import logging
import socket

import pytest
from fastapi.testclient import TestClient

from app.config import Config, ConfigError
from app.main import create_app

KEY = "sk-test-0123456789abcdef-never-show-me"


def make_client(base_url: str | None, **overrides: object) -> TestClient:
    values: dict[str, object] = {
        "llm_model": "test-model",
        "llm_api_base": base_url,
        "llm_api_key": KEY,
        "llm_timeout_seconds": 5.0,
        "llm_max_retries": 0,
    }
    values.update(overrides)
    return TestClient(create_app(Config(**values)), raise_server_exceptions=False)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_health_answers_ok() -> None:
    with make_client(None) as client:
        r = client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


def test_chat_returns_the_model_answer(fake_llm) -> None:
    with make_client(fake_llm.base_url) as client:
        r = client.post("/chat", json={"message": "Hello, how are you?"})
    assert r.status_code == 200, r.text
    assert r.json() == {"response": "Hello from the model"}
    [request] = fake_llm.requests
    assert request["body"]["model"] == "test-model"
    assert request["body"]["messages"] == [{"role": "user", "content": "Hello, how are you?"}]
    assert request["auth"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    "payload",
    [
        {"json": {"message": ""}},
        {"json": {"message": "   "}},
        {"json": {}},
        {"json": {"message": 42}},
        {"json": ["message"]},
        {"content": b"not json", "headers": {"Content-Type": "application/json"}},
        {"content": b""},
    ],
    ids=["empty", "blank", "missing", "not-a-string", "not-an-object", "not-json", "no-body"],
)
def test_invalid_body_is_400_with_error(fake_llm, payload: dict) -> None:
    with make_client(fake_llm.base_url) as client:
        r = client.post("/chat", **payload)
    assert r.status_code == 400
    assert set(r.json()) == {"error"} and r.json()["error"]
    assert fake_llm.requests == []


def test_too_long_message_is_400(fake_llm) -> None:
    with make_client(fake_llm.base_url, max_message_chars=10) as client:
        r = client.post("/chat", json={"message": "x" * 11})
    assert r.status_code == 400
    assert "too long" in r.json()["error"]


@pytest.mark.parametrize("status", [500, 503, 401, 429])
def test_llm_error_is_502_and_never_shows_the_key(fake_llm, caplog, status: int) -> None:
    fake_llm.mode, fake_llm.status = "fail", status
    caplog.set_level(logging.DEBUG)
    with make_client(fake_llm.base_url) as client:
        r = client.post("/chat", json={"message": "hi"})
    assert r.status_code == 502
    assert set(r.json()) == {"error"}
    assert KEY not in r.text
    assert KEY not in caplog.text
    assert "LLM call failed" in caplog.text


def test_llm_down_is_502() -> None:
    with make_client(f"http://127.0.0.1:{free_port()}/v1") as client:
        r = client.post("/chat", json={"message": "hi"})
    assert r.status_code == 502
    assert r.json()["error"] == "Could not reach the language model."


def test_llm_timeout_is_502(fake_llm) -> None:
    fake_llm.mode, fake_llm.delay = "slow", 2.0
    with make_client(fake_llm.base_url, llm_timeout_seconds=0.3) as client:
        r = client.post("/chat", json={"message": "hi"})
    assert r.status_code == 502
    assert "in time" in r.json()["error"]


def test_empty_llm_answer_is_502(fake_llm) -> None:
    fake_llm.mode = "empty"
    with make_client(fake_llm.base_url) as client:
        r = client.post("/chat", json={"message": "hi"})
    assert r.status_code == 502


def test_missing_model_is_500() -> None:
    with make_client("http://127.0.0.1:9/v1", llm_model=None) as client:
        r = client.post("/chat", json={"message": "hi"})
    assert r.status_code == 500
    assert set(r.json()) == {"error"}


def test_unknown_route_has_error_body() -> None:
    with make_client(None) as client:
        r = client.get("/no-such-page")
    assert r.status_code == 404
    assert "error" in r.json()


def test_cors_allows_only_the_frontend_origin(fake_llm) -> None:
    with make_client(fake_llm.base_url, frontend_origins=("https://chat.example",)) as client:
        ok = client.options(
            "/chat", headers={"Origin": "https://chat.example", "Access-Control-Request-Method": "POST"}
        )
        other = client.options(
            "/chat", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
    assert ok.headers.get("access-control-allow-origin") == "https://chat.example"
    assert "access-control-allow-origin" not in other.headers


def test_config_from_env_reads_the_seed_variables() -> None:
    cfg = Config.from_env(
        {
            "LLM_API_BASE": "https://llm.example/v1",
            "LLM_API_KEY": KEY,
            "LLM_MODEL": "gpt-4o-mini",
            "FRONTEND_ORIGIN": "https://a.example/, https://b.example",
            "PORT": "9000",
        }
    )
    assert cfg.litellm_model == "openai/gpt-4o-mini"
    assert cfg.llm_max_tokens is None and Config.from_env({"LLM_MAX_TOKENS": "64"}).llm_max_tokens == 64
    assert cfg.frontend_origins == ("https://a.example", "https://b.example")
    assert (cfg.host, cfg.port) == ("0.0.0.0", 9000)
    assert KEY not in repr(cfg)


def test_max_tokens_is_sent_only_when_configured(fake_llm) -> None:
    with make_client(fake_llm.base_url) as client:
        assert client.post("/chat", json={"message": "Hello"}).status_code == 200
    with make_client(fake_llm.base_url, llm_max_tokens=64) as client:
        assert client.post("/chat", json={"message": "Hello"}).status_code == 200
    first, second = fake_llm.requests
    assert "max_tokens" not in first["body"]
    assert second["body"]["max_tokens"] == 64


def test_config_rejects_a_bad_number_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match="LLM_TIMEOUT_SECONDS"):
        Config.from_env({"LLM_TIMEOUT_SECONDS": "soon"})
