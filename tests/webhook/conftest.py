"""The webhook receiver served by uvicorn on 127.0.0.1, fed GitHub's own example payloads, signed here."""

from __future__ import annotations

import copy
import functools
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from promptship.domain.webhooks import WebhookTrigger, sign
from promptship.servers.webhook import WebhookReceiver, create_app, running_asgi
from promptship.settings import GitHubSettings, Settings
from promptship.store import make_engine
from promptship.store.webhooks import InProcessCIWakeups, WebhookDeliveries
from promptship_sandbox import specs
from promptship_sandbox.specs import json_schema_of
from tests.conftest import require

SECRET = "test-webhook-secret-not-a-real-one"
REPO = "Codertocat/Hello-World"  # the repository of @octokit/webhooks-examples' payloads


class RecordingStarter:
    """A Starter that records what it was asked to start (and can fail on demand)."""

    def __init__(self) -> None:
        self.triggers: list[WebhookTrigger] = []
        self.fail_next = 0
        self._lock = threading.Lock()

    def start(self, trigger: WebhookTrigger) -> str:
        with self._lock:
            if self.fail_next:
                self.fail_next -= 1
                raise ConnectionError("orchestrator unavailable (scripted)")
            self.triggers.append(trigger)
            return f"run-{len(self.triggers)}"


@dataclass
class RecordingCommenter:
    comments: list[tuple[str, int, str]] = field(default_factory=list)

    def comment(self, repository: str, number: int, body: str) -> None:
        self.comments.append((repository, number, body))


@dataclass
class Receiver:
    url: str
    starter: RecordingStarter
    commenter: Any  # RecordingCommenter, or a real CodeHost
    wakeups: InProcessCIWakeups
    deliveries: WebhookDeliveries
    receiver: WebhookReceiver
    http: httpx.Client

    def post(
        self,
        event: str,
        payload: Any = None,
        *,
        body: bytes | None = None,
        delivery: str | None = None,
        secret: str | None = SECRET,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """POST a delivery the way GitHub does: the spec's required headers, signed over the raw body."""
        raw = body if body is not None else httpx.Request("POST", "http://x", json=payload).content
        sent = github_headers(event, delivery or str(uuid.uuid4()))
        sent["Content-Type"] = content_type
        if secret is not None:
            sent["X-Hub-Signature-256"] = sign(secret.encode(), raw)
        sent.update(headers or {})
        response = self.http.post(f"{self.url}/github/webhook", content=raw, headers=sent)
        assert self.receiver.wait_idle(10), "background work did not finish"
        return response


def github_headers(event: str, delivery: str) -> dict[str, str]:
    """The headers GitHub sends with every delivery (openapi-webhooks lists them as required)."""
    return {
        "User-Agent": "GitHub-Hookshot/123abc",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Hook-ID": "12312312",
        "X-GitHub-Hook-Installation-Target-ID": "123123",
        "X-GitHub-Hook-Installation-Target-Type": "repository",
    }


def make_settings(**github: Any) -> Settings:
    values: dict[str, Any] = {
        "webhook_secret": SecretStr(SECRET),
        "allowed_repositories": [REPO],
        "webhook_max_body_bytes": 64 * 1024,
    }
    values.update(github)
    return Settings(github=GitHubSettings(**values))


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def start_receiver(store_url: str) -> Iterator[Callable[..., Receiver]]:
    """Start a receiver (several may share one store, like a restarted one); all are stopped afterwards."""
    stack: list[Any] = []

    def start(
        settings: Settings | None = None,
        starter: RecordingStarter | None = None,
        commenter: Any = None,
        wakeups: InProcessCIWakeups | None = None,
    ) -> Receiver:
        deliveries = WebhookDeliveries(make_engine(store_url))
        rec = Receiver(
            url="",
            starter=starter or RecordingStarter(),
            commenter=commenter or RecordingCommenter(),
            wakeups=wakeups or InProcessCIWakeups(),
            deliveries=deliveries,
            receiver=None,  # type: ignore[arg-type]
            http=httpx.Client(timeout=10),
        )
        app = create_app(
            settings or make_settings(),
            rec.starter,
            deliveries=deliveries,
            commenter=rec.commenter,
            wakeups=rec.wakeups,
        )
        serving = running_asgi(app)
        rec.url = serving.__enter__()
        rec.receiver = app.state.receiver
        stack.append((serving, rec))
        return rec

    yield start
    for serving, rec in reversed(stack):
        rec.http.close()
        serving.__exit__(None, None, None)


@pytest.fixture
def receiver(start_receiver: Callable[..., Receiver]) -> Receiver:
    return start_receiver()


@pytest.fixture
def examples(webhook_validator: Callable[[str, dict[str, Any]], list[str]]) -> Callable[..., dict[str, Any]]:
    """``examples(event, action, schema=None)``: a fresh copy of GitHub's first example payload of that
    event/action — with ``schema``, the first one that is valid against openapi-webhooks' schema."""

    def first(event: str, action: str | None = None, schema: str | None = None) -> dict[str, Any]:
        found = specs.webhook_examples(event, action)
        assert found, f"no example for {event}.{action}"
        if schema is not None:
            found = [e for e in found if not webhook_validator(schema, e)]
            assert found, f"no example of {event}.{action} is valid against {schema}"
        return copy.deepcopy(found[0])

    return first


@pytest.fixture
def labeled(examples: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """issues.labeled with the trigger label, by the issue's OWNER."""
    payload = examples("issues", "labeled", "webhook-issues-labeled")
    payload["label"]["name"] = "promptship"
    payload["issue"]["title"] = "Add a /health endpoint"
    payload["issue"]["body"] = "It should answer 200 with the app's version."
    return payload


@pytest.fixture
def command_comment(examples: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """issue_comment.created holding `/promptship <prompt>`, by an OWNER."""
    payload = examples("issue_comment", "created", "webhook-issue-comment-created")
    payload["comment"]["body"] = "/promptship add a dark mode toggle to the chat page"
    return payload


@functools.lru_cache(maxsize=1)
def _openapi_as_json_schema() -> dict[str, Any]:
    return json_schema_of(specs.load_webhooks_openapi())


@pytest.fixture
def webhook_validator() -> Callable[[str, dict[str, Any]], list[str]]:
    """``validate(schema_name, payload)`` → the errors of ``payload`` against openapi-webhooks' schema."""
    import jsonschema

    require("github-specs", specs.specs_available(), "run `make specs` (npm @octokit/openapi-webhooks, -examples)")
    document = _openapi_as_json_schema()

    def validate(schema_name: str, payload: dict[str, Any]) -> list[str]:
        assert schema_name in document["components"]["schemas"], schema_name
        root = {"components": document["components"], "$ref": f"#/components/schemas/{schema_name}"}
        validator = jsonschema.Draft7Validator(root)
        return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(payload)]

    return validate
