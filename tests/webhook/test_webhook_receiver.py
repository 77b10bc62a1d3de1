"""The receiver over real HTTP (uvicorn on 127.0.0.1), with GitHub's example payloads signed by the tests."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from promptship.domain.webhooks import sign, signature_valid
from tests.webhook.conftest import REPO, SECRET, Receiver, RecordingStarter, make_settings

pytestmark = pytest.mark.webhook


def test_githubs_published_hmac_vector_passes() -> None:
    secret, body = b"It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign(secret, body) == expected
    assert signature_valid(secret, body, expected)
    assert not signature_valid(secret, body + b" ", expected)
    assert not signature_valid(b"another secret", body, expected)
    assert not signature_valid(secret, body, expected.removeprefix("sha256="))
    assert not signature_valid(secret, body, "sha1=" + expected.removeprefix("sha256="))
    assert not signature_valid(secret, body, None)
    assert not signature_valid(b"", body, sign(b"", body))


def test_the_vector_is_accepted_over_http(start_receiver: Callable[..., Receiver]) -> None:
    rec = start_receiver(make_settings(webhook_secret="It's a Secret to Everybody"))
    response = rec.http.post(
        f"{rec.url}/github/webhook",
        content=b"Hello, World!",
        headers={
            "X-Hub-Signature-256": "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "Content-Type": "application/json",
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": "vector",
        },
    )
    # The signature is right, so the receiver goes on to parse: "Hello, World!" is not JSON.
    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]


def test_labelled_issue_starts_one_run_even_when_delivered_twice(receiver: Receiver, labeled: dict[str, Any]) -> None:
    delivery = str(uuid.uuid4())
    first = receiver.post("issues", labeled, delivery=delivery)
    again = receiver.post("issues", labeled, delivery=delivery)

    assert (first.status_code, first.json()["outcome"]) == (202, "accepted")
    assert (again.status_code, again.json()["outcome"]) == (200, "duplicate")
    assert len(receiver.starter.triggers) == 1
    trigger = receiver.starter.triggers[0]
    assert trigger.repository == REPO
    assert trigger.issue_number == labeled["issue"]["number"]
    assert trigger.requester == labeled["issue"]["user"]["login"]
    assert trigger.delivery_id == delivery
    assert trigger.prompt == "Add a /health endpoint\n\nIt should answer 200 with the app's version."
    assert trigger.to_request().delivery_id == delivery
    assert receiver.deliveries.outcome(delivery) == "started"
    assert receiver.commenter.comments == []


def test_concurrent_redeliveries_start_one_run(receiver: Receiver, labeled: dict[str, Any]) -> None:
    delivery = str(uuid.uuid4())
    statuses: list[int] = []

    def send() -> None:
        statuses.append(receiver.post("issues", labeled, delivery=delivery).status_code)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert receiver.receiver.wait_idle(10)
    assert sorted(statuses) == [200] * 5 + [202]
    assert len(receiver.starter.triggers) == 1


def test_a_restarted_receiver_remembers_deliveries(
    start_receiver: Callable[..., Receiver], labeled: dict[str, Any]
) -> None:
    delivery = str(uuid.uuid4())
    before = start_receiver()
    assert before.post("issues", labeled, delivery=delivery).status_code == 202
    after = start_receiver()  # a new process would see the same store
    assert after.post("issues", labeled, delivery=delivery).json()["outcome"] == "duplicate"
    assert len(before.starter.triggers) + len(after.starter.triggers) == 1


def test_a_failed_start_is_retried_on_redelivery(receiver: Receiver, labeled: dict[str, Any]) -> None:
    delivery = str(uuid.uuid4())
    receiver.starter.fail_next = 1
    assert receiver.post("issues", labeled, delivery=delivery).status_code == 202
    assert receiver.deliveries.outcome(delivery) == "failed"
    assert receiver.starter.triggers == []

    assert receiver.post("issues", labeled, delivery=delivery).status_code == 202  # GitHub's "Redeliver"
    assert receiver.deliveries.outcome(delivery) == "started"
    assert len(receiver.starter.triggers) == 1
    assert receiver.post("issues", labeled, delivery=delivery).json()["outcome"] == "duplicate"
    assert len(receiver.starter.triggers) == 1


def test_slash_command_comment_starts_a_run_with_its_prompt(
    receiver: Receiver, command_comment: dict[str, Any]
) -> None:
    response = receiver.post("issue_comment", command_comment)
    assert response.status_code == 202
    (trigger,) = receiver.starter.triggers
    assert trigger.prompt == "add a dark mode toggle to the chat page"
    assert trigger.requester == command_comment["comment"]["user"]["login"]
    assert trigger.issue_number == command_comment["issue"]["number"]


def _signed_headers(event: str, body: bytes, content_type: str = "application/json") -> dict[str, str]:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "Content-Type": content_type,
        "X-Hub-Signature-256": sign(SECRET.encode(), body),
    }


@pytest.mark.parametrize(
    ("case", "expected_status"),
    [
        ("missing signature", 401),
        ("signature of another secret", 401),
        ("signature of another body", 401),
        ("sha1 signature only", 401),
        ("form-encoded body", 415),
        ("malformed JSON", 400),
        ("JSON that is not an object", 400),
        ("no delivery id", 400),
        ("oversized, declared", 413),
        ("oversized, streamed without Content-Length", 413),
        ("repository off the allowlist", 403),
    ],
)
def test_rejected_deliveries_start_nothing(
    receiver: Receiver, labeled: dict[str, Any], case: str, expected_status: int
) -> None:
    body = json.dumps(labeled).encode()
    url = f"{receiver.url}/github/webhook"
    if case == "missing signature":
        response = receiver.post("issues", labeled, secret=None)
    elif case == "signature of another secret":
        response = receiver.post("issues", labeled, secret="guessed")
    elif case == "signature of another body":
        response = receiver.post("issues", body=body, headers={"X-Hub-Signature-256": sign(SECRET.encode(), b"{}")})
    elif case == "sha1 signature only":
        response = receiver.post("issues", labeled, secret=None, headers={"X-Hub-Signature": "sha1=" + "0" * 40})
    elif case == "form-encoded body":
        form = b"payload=" + httpx.QueryParams({"p": body.decode()}).get("p", "").encode()
        response = receiver.post("issues", body=form, content_type="application/x-www-form-urlencoded")
    elif case == "malformed JSON":
        response = receiver.post("issues", body=body[:-1])
    elif case == "JSON that is not an object":
        response = receiver.post("issues", body=b"[1, 2, 3]")
    elif case == "no delivery id":
        headers = _signed_headers("issues", body)
        del headers["X-GitHub-Delivery"]
        response = receiver.http.post(url, content=body, headers=headers)
    elif case == "oversized, declared":
        labeled["issue"]["body"] = "x" * 70_000  # the fixture's limit is 64 KiB
        response = receiver.post("issues", labeled)
    elif case == "oversized, streamed without Content-Length":
        labeled["issue"]["body"] = "x" * 70_000
        big = json.dumps(labeled).encode()

        def chunks() -> Any:
            for i in range(0, len(big), 8192):
                yield big[i : i + 8192]

        response = receiver.http.post(url, content=chunks(), headers=_signed_headers("issues", big))
    else:  # repository off the allowlist
        labeled["repository"]["full_name"] = "someone-else/their-repo"
        response = receiver.post("issues", labeled)

    assert response.status_code == expected_status, response.text
    assert receiver.receiver.wait_idle(10)
    assert receiver.starter.triggers == []
    assert receiver.commenter.comments == []
    assert receiver.deliveries.outcomes() == {}


@pytest.mark.parametrize("association", ["CONTRIBUTOR", "FIRST_TIME_CONTRIBUTOR", "NONE", "MANNEQUIN"])
def test_requester_without_write_access_gets_a_polite_comment_and_nothing_else(
    receiver: Receiver, command_comment: dict[str, Any], association: str
) -> None:
    command_comment["comment"]["author_association"] = association
    response = receiver.post("issue_comment", command_comment)
    assert (response.status_code, response.json()["outcome"]) == (202, "refused")
    assert receiver.starter.triggers == []
    ((repository, number, text),) = receiver.commenter.comments
    assert (repository, number) == (REPO, command_comment["issue"]["number"])
    assert association in text and "write access" in text


def test_issue_written_by_an_outsider_is_refused_even_when_labelled(
    receiver: Receiver, labeled: dict[str, Any]
) -> None:
    labeled["issue"]["author_association"] = "NONE"
    assert receiver.post("issues", labeled).json()["outcome"] == "refused"
    assert receiver.starter.triggers == []
    assert len(receiver.commenter.comments) == 1


def test_allowed_associations_are_configurable(
    start_receiver: Callable[..., Receiver], command_comment: dict[str, Any]
) -> None:
    rec = start_receiver(make_settings(allowed_associations=["OWNER"]))
    command_comment["comment"]["author_association"] = "MEMBER"
    assert rec.post("issue_comment", command_comment).json()["outcome"] == "refused"
    command_comment["comment"]["author_association"] = "OWNER"
    assert rec.post("issue_comment", command_comment).json()["outcome"] == "accepted"
    assert len(rec.starter.triggers) == 1


def test_a_bare_command_is_refused_with_a_hint(receiver: Receiver, command_comment: dict[str, Any]) -> None:
    command_comment["comment"]["body"] = "/promptship"
    assert receiver.post("issue_comment", command_comment).json()["outcome"] == "refused"
    assert receiver.starter.triggers == []
    assert "/promptship add a /health endpoint" in receiver.commenter.comments[0][2]


@pytest.mark.parametrize(
    ("event", "action", "change"),
    [
        ("star", "created", None),
        ("push", None, None),
        ("issues", "edited", None),
        ("issues", "labeled", "other label"),
        ("issue_comment", "created", "no command"),
        ("issue_comment", "edited", "command"),
        ("issue_comment", "created", "bot"),
    ],
)
def test_events_promptship_does_not_act_on_get_204(
    receiver: Receiver, examples: Callable[..., dict[str, Any]], event: str, action: str | None, change: str | None
) -> None:
    payload = examples(event, action)
    if change == "command":
        payload["comment"]["body"] = "/promptship edited afterwards"
    if change == "bot":
        payload["comment"]["body"] = "/promptship do it"
        payload["sender"]["type"] = "Bot"
    response = receiver.post(event, payload)
    assert response.status_code == 204
    assert receiver.starter.triggers == [] and receiver.commenter.comments == []
    assert receiver.deliveries.outcomes() == {}


def test_ping_is_answered(receiver: Receiver, examples: Callable[..., dict[str, Any]]) -> None:
    response = receiver.post("ping", examples("ping"))
    assert (response.status_code, response.json()["outcome"]) == (200, "pong")


@pytest.mark.parametrize(
    ("event", "action"), [("check_suite", "completed"), ("check_run", "completed"), ("status", None)]
)
def test_ci_events_wake_a_waiting_ci_wait(
    receiver: Receiver, examples: Callable[..., dict[str, Any]], event: str, action: str | None
) -> None:
    payload = examples(event, action)
    sha = payload["sha"] if event == "status" else payload[event]["head_sha"]
    seen = receiver.wakeups.generation(REPO, sha)
    woke: list[int] = []
    waiter = threading.Thread(target=lambda: woke.append(receiver.wakeups.wait(REPO, sha, after=seen, timeout_s=30)))
    waiter.start()

    response = receiver.post(event, payload)
    waiter.join(timeout=30)

    assert (response.status_code, response.json()["outcome"]) == (202, "ci")
    assert woke == [seen + 1]
    (signal,) = receiver.wakeups.signals
    assert (signal.repository, signal.sha, signal.event) == (REPO, sha, event)
    assert receiver.starter.triggers == []


def test_ci_events_of_repositories_off_the_allowlist_wake_nothing(
    receiver: Receiver, examples: Callable[..., dict[str, Any]]
) -> None:
    payload = examples("check_suite", "completed")
    payload["repository"]["full_name"] = "someone-else/their-repo"
    assert receiver.post("check_suite", payload).status_code == 403
    assert receiver.wakeups.signals == []


def test_another_trigger_label_can_be_configured(
    start_receiver: Callable[..., Receiver], labeled: dict[str, Any]
) -> None:
    rec = start_receiver(make_settings(trigger_label="ai-please"), RecordingStarter())
    assert rec.post("issues", labeled).status_code == 204
    labeled["label"]["name"] = "ai-please"
    assert rec.post("issues", labeled).status_code == 202
    assert len(rec.starter.triggers) == 1


@pytest.mark.parametrize(
    ("schema", "fixture"),
    [
        ("webhook-issues-labeled", "labeled"),
        ("webhook-issue-comment-created", "command_comment"),
    ],
)
def test_the_payloads_sent_here_are_valid_github_payloads(
    request: pytest.FixtureRequest,
    webhook_validator: Callable[[str, dict[str, Any]], list[str]],
    schema: str,
    fixture: str,
) -> None:
    payload = request.getfixturevalue(fixture)
    assert webhook_validator(schema, payload) == []
    broken = json.loads(json.dumps(payload))
    del broken["repository"]
    assert webhook_validator(schema, broken) != []  # the validation can fail


# Where the pinned examples are older than the pinned schema (fields added to GitHub's payloads since).
KNOWN_EXAMPLE_GAPS = {"webhook-status": {"['commit', 'commit', 'verification']: 'verified_at' is a required property"}}


@pytest.mark.parametrize(
    ("schema", "event", "action"),
    [
        ("webhook-check-suite-completed", "check_suite", "completed"),
        ("webhook-check-run-completed", "check_run", "completed"),
        ("webhook-status", "status", None),
        ("webhook-ping", "ping", None),
    ],
)
def test_the_ci_examples_are_valid_github_payloads(
    examples: Callable[..., dict[str, Any]],
    webhook_validator: Callable[[str, dict[str, Any]], list[str]],
    schema: str,
    event: str,
    action: str | None,
) -> None:
    errors = set(webhook_validator(schema, examples(event, action)))
    assert errors <= KNOWN_EXAMPLE_GAPS.get(schema, set())


def test_healthz(receiver: Receiver) -> None:
    assert receiver.http.get(f"{receiver.url}/healthz").json() == {"status": "ok"}


def test_the_receiver_never_forwards_to_prefect_paths(receiver: Receiver) -> None:
    for path in ("/api/events", "/api/deployments/filter", "/api/health"):
        assert receiver.http.get(f"{receiver.url}{path}").status_code == 404
        assert receiver.http.post(f"{receiver.url}{path}", json={}).status_code in (404, 405)


def test_a_secret_in_the_issue_reaches_neither_the_prefect_event_nor_the_run_parameters(
    receiver: Receiver, labeled: dict[str, Any], store_url: str
) -> None:
    """The trigger the starter gets is the Prefect event's payload (``PrefectEventStarter``) and becomes the flow
    run's parameters: it carries the redacted prompt and the sealed id; the store gives the real request back."""
    import secrets
    import string

    from promptship.store import Store, make_engine
    from promptship.store.sealing import prompt_cipher

    token = "ghp_" + "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(36))
    labeled["issue"]["body"] = f"Deploy with the token {token} please."

    assert receiver.post("issues", labeled).status_code == 202

    (trigger,) = receiver.starter.triggers
    assert token not in trigger.model_dump_json() and trigger.sealed
    held = trigger.to_request()
    store = Store(make_engine(store_url), cipher=prompt_cipher(store_url, None))
    real = store.unseal(held)
    assert token in real.prompt and real.run_key == held.run_key
