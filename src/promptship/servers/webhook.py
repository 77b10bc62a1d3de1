"""The GitHub webhook receiver: an ASGI app serving ``POST /github/webhook``.

GitHub never talks to Prefect: this app verifies each delivery and only then starts work through a
``Starter`` (a Prefect event or ``run_deployment``). Order of checks, cheapest and safest first — nothing is
parsed before the size and the signature are known to be fine:

    Content-Length > limit → 413 · body read past the limit → 413 · X-Hub-Signature-256 missing/wrong → 401
    · Content-Type not JSON → 415 · no X-GitHub-Event / X-GitHub-Delivery → 400 · JSON malformed → 400
    · ``ping`` → 200 · event/action promptship does not act on → 204 · repository off the allowlist → 403
    · CI event → 202 ``ci`` (wakes CI waits and resumes the runs suspended waiting for that commit; not
      de-duplicated: a repeated wake-up or resume is harmless)
    · ``pull_request`` closed → 202 ``pull_request`` (resumes the runs suspended waiting for its merge)
    · ``installation`` / ``installation_repositories`` → 202 ``installation`` (the allowlist follows the
      GitHub App: a repository removed from it starts nothing; recorded in the store before the answer)
    · delivery id seen before → 200 ``duplicate`` · requester not allowed → 202 ``refused`` (polite comment)
    · trigger → 202 ``accepted`` (run started in the background)

The answer goes out as soon as the decision is made (a pure function and one insert into the store, made by a
single writer thread); the starter, the comment and the wake-up run after the response. Sockets get
TCP_NODELAY (``listening_socket``), or each JSON answer would wait ~40 ms for the client's delayed ACK.
``create_app(settings, starter, …)`` builds the app; more routes (``/metrics``) can be added to it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from promptship.domain.webhooks import (
    CISignal,
    PullRequestSignal,
    WebhookDecision,
    WebhookPolicy,
    WebhookTrigger,
    decide,
    signature_valid,
)
from promptship.errors import ConfigError, ServiceError
from promptship.ports import CIWakeups, IssueCommenter, RunController, RunResumer, Starter
from promptship.servers.resumer import PrefectRunResumer
from promptship.settings import Settings
from promptship.store.webhooks import InstalledRepositories, WebhookDeliveries

logger = logging.getLogger("promptship.webhook")

WEBHOOK_PATH = "/github/webhook"
EVENT_NAME = "promptship.request"
DEFAULT_DEPLOYMENT = "dev-cycle/dev-cycle"
# Event ids derive from delivery ids, so a re-sent delivery carries the same event id (a fixed namespace).
_EVENT_NAMESPACE = uuid.UUID("0f3c54c2-8a4e-4a55-9a43-3b1d8e5f7a10")


def event_resource_id(repository: str) -> str:
    """Resource id of a ``promptship.request`` event: ``github.repo.<owner>/<repo>``."""
    return f"github.repo.{repository}"


def event_id_for(delivery_id: str) -> uuid.UUID:
    return uuid.uuid5(_EVENT_NAMESPACE, delivery_id)


class PrefectEventStarter:
    """Sends the ``promptship.request`` event to the Prefect server; the ``github-event`` deployment's
    trigger starts the run.

    Sent synchronously on its own websocket and confirmed (a ping after the event), so a server that is down
    makes the start fail — recorded, and handled again when GitHub redelivers — instead of an event lost in a
    background queue. Needs ``PREFECT_API_URL``.
    """

    def start(self, trigger: WebhookTrigger) -> str:
        from prefect.events import Event
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            raise ServiceError(f"prefect: {EVENT_NAME} cannot be sent: set PREFECT_API_URL to the Prefect server")
        event = Event(
            event=EVENT_NAME,
            resource={  # type: ignore[arg-type]
                "prefect.resource.id": event_resource_id(trigger.repository),
                "prefect.resource.name": trigger.repository,
            },
            payload=trigger.model_dump(mode="json"),
            id=event_id_for(trigger.delivery_id),
        )
        try:
            asyncio.run(_send_confirmed(event))
        except Exception as exc:  # Prefect and websockets raise their own types; translate once, here
            raise ServiceError(
                f"prefect: sending {EVENT_NAME} failed: {type(exc).__name__}: {exc}", retryable=True
            ) from exc
        return str(event.id)


async def _send_confirmed(event: Any) -> None:
    from prefect.events.clients import get_events_client

    # checkpoint_every=1: after the event the client pings and waits for the pong, so the server has read it.
    async with get_events_client(reconnection_attempts=2, checkpoint_every=1) as client:
        await client.emit(event)


def default_parameters(trigger: WebhookTrigger) -> dict[str, Any]:
    """``dev-cycle``'s parameters for a trigger: ``{"request": DevRequest}`` as JSON."""
    return {"request": trigger.to_request().model_dump(mode="json")}


class PrefectDeploymentStarter:
    """Creates a flow run of a deployment in its repository's work queue (``promptship.adapters.prefect_queues``:
    the queue's and the pool's limits are the per-repository and the global limit), with the delivery id as
    idempotency key: a redelivered delivery gets the same flow run back, never a second one."""

    def __init__(
        self,
        deployment: str = DEFAULT_DEPLOYMENT,
        parameters: Callable[[WebhookTrigger], dict[str, Any]] = default_parameters,
        *,
        per_repository_limit: int = 0,
        global_limit: int = 0,
    ):
        self.deployment = deployment
        self.parameters = parameters
        self.per_repository_limit = per_repository_limit
        self.global_limit = global_limit

    def start(self, trigger: WebhookTrigger) -> str:
        from prefect.client.orchestration import get_client

        from promptship.adapters.prefect_queues import submit_dev_cycle

        try:
            with get_client(sync_client=True) as client:
                deployment = client.read_deployment_by_name(self.deployment)
                run_id = submit_dev_cycle(
                    client,
                    deployment.id,
                    deployment.work_pool_name,
                    self.parameters(trigger),
                    trigger.repository,
                    per_repository_limit=self.per_repository_limit,
                    global_limit=self.global_limit,
                    idempotency_key=trigger.delivery_id,
                    tags=["github-webhook"],
                )
        except Exception as exc:
            raise ServiceError(
                f"prefect: starting a run of {self.deployment!r} failed: {type(exc).__name__}: {exc}", retryable=True
            ) from exc
        return str(run_id)


class SealingStarter:
    """Keeps each trigger's request, prompt included, encrypted in the store and starts the run with its sealed
    form: the Prefect event's payload and the flow run's parameters carry only the redacted prompt and the id."""

    def __init__(self, store: Any, starter: Starter):
        self.store = store
        self.starter = starter

    def start(self, trigger: WebhookTrigger) -> str:
        if trigger.sealed is None:
            trigger = trigger.sealed_as(self.store.seal(trigger.to_request()))
        return self.starter.start(trigger)


class PrefectRunController:
    """``/promptship stop`` / ``retry``: the request comes from the store (``requests``, by the PR's marker or
    the issue/PR number), its active flow run from the request's lease; stop asks Prefect to cancel that flow
    run (the flow's cancel hook tells the agent and the PR), retry starts the stored request again."""

    def __init__(self, store: Any, starter: Starter):
        self.store = store
        self.starter = starter

    def stop(self, repository: str, number: int, request_key: str | None) -> str:
        found = self.store.request_of(repository, number, request_key)
        if found is None:
            return f"promptship: no request of promptship belongs to #{number}, so there is nothing to stop."
        key, _request = found
        holder = self.store.lease_holder(key)
        if holder is None:
            return f"promptship: nothing of request `{key}` is running now."
        from prefect.client.orchestration import get_client
        from prefect.states import Cancelling

        try:
            with get_client(sync_client=True) as client:
                client.set_flow_run_state(uuid.UUID(holder), Cancelling(message="/promptship stop"), force=True)
        except Exception as exc:
            raise ServiceError(
                f"prefect: cancelling flow run {holder} failed: {type(exc).__name__}", retryable=True
            ) from None
        return f"promptship: stopping request `{key}` — its flow run {holder} was asked to cancel."

    def retry(self, repository: str, number: int, request_key: str | None, requester: str, delivery_id: str) -> str:
        found = self.store.request_of(repository, number, request_key)
        if found is None:
            return f"promptship: no request of promptship belongs to #{number}, so there is nothing to retry."
        key, request = found
        trigger = WebhookTrigger.again(request, number=number, requester=requester, delivery_id=delivery_id)
        run_id = self.starter.start(trigger)
        return f"promptship: retrying request `{key}` ({run_id}): a new attempt starts once the last one ended."


class WebhookReceiver:
    """The receiver's state and its work after the answer: start, comment, wake. ``create_app`` wraps it."""

    def __init__(
        self,
        *,
        secret: bytes,
        policy: WebhookPolicy,
        starter: Starter,
        deliveries: WebhookDeliveries,
        commenter: IssueCommenter | None = None,
        wakeups: CIWakeups | None = None,
        max_body_bytes: int = 1024 * 1024,
        installations: InstalledRepositories | None = None,
        controller: RunController | None = None,
        resumer: RunResumer | None = None,
    ):
        if not secret:
            raise ConfigError("the webhook secret is empty: set PROMPTSHIP_GITHUB__WEBHOOK_SECRET")
        self._secret = secret
        self.policy = policy
        self.starter = starter
        self.deliveries = deliveries
        self.commenter = commenter
        self.wakeups = wakeups
        self.max_body_bytes = max_body_bytes
        self.installations = installations
        self.controller = controller
        self.resumer = resumer
        self._busy = threading.Condition()
        self._inflight = 0
        # One thread writes the delivery log: SQLite serialises writers anyway, and a writer that finds the
        # database locked sleeps in its busy handler for milliseconds — the acknowledgement would wait.
        self._store_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-store")

    # ---- the answer -------------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return _problem(400, "Content-Length is not a number")
            if size > self.max_body_bytes:
                return _problem(413, f"body larger than {self.max_body_bytes} bytes")
        chunks: list[bytes] = []
        received = 0
        async for chunk in request.stream():
            received += len(chunk)
            if received > self.max_body_bytes:
                return _problem(413, f"body larger than {self.max_body_bytes} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)

        if not signature_valid(self._secret, body, request.headers.get("x-hub-signature-256")):
            return _problem(401, "missing or invalid X-Hub-Signature-256")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            return _problem(415, "Content-Type must be application/json (set the webhook's content type to JSON)")
        event = request.headers.get("x-github-event", "").strip()
        delivery_id = request.headers.get("x-github-delivery", "").strip()
        if not event or not delivery_id or len(delivery_id) > 100:
            return _problem(400, "X-GitHub-Event and X-GitHub-Delivery (at most 100 characters) are required")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _problem(400, "body is not valid JSON")
        except RecursionError:  # nesting deeper than the parser recurses: no webhook payload looks like that
            return _problem(400, "body is nested too deeply")
        if not isinstance(payload, dict):
            return _problem(400, "body is not a JSON object")
        if event == "ping":
            return JSONResponse({"outcome": "pong"})

        decision = decide(event, payload, delivery_id, self.policy)
        log = {"delivery": delivery_id, "event": event, "repository": decision.repository}
        if decision.kind == "ignore":
            logger.debug("ignored %s: %s", log, decision.reason)
            return Response(status_code=204)
        if decision.kind == "forbidden":
            logger.warning("forbidden %s: %s", log, decision.reason)
            return _problem(403, decision.reason, outcome="forbidden")
        if decision.kind == "ci" and decision.ci is not None:
            # A repeated wake-up only makes a CI wait look once more: no need to record the delivery.
            logger.info("ci %s: %s", log, decision.reason)
            self._begin()
            return JSONResponse(
                {"outcome": "ci", "delivery": delivery_id},
                status_code=202,
                background=BackgroundTask(self._wake, decision.ci),
            )
        if decision.kind == "pull_request" and decision.pull_request is not None:
            logger.info("pull_request %s: %s", log, decision.reason)
            self._begin()
            return JSONResponse(
                {"outcome": "pull_request", "delivery": delivery_id},
                status_code=202,
                background=BackgroundTask(self._resume_merge_waits, decision.pull_request),
            )
        claim = self._store_writer.submit(self.deliveries.claim, delivery_id, event, decision.repository)
        if not await asyncio.wrap_future(claim):
            logger.info("duplicate %s", log)
            return JSONResponse({"outcome": "duplicate", "delivery": delivery_id})
        if decision.kind == "installation" and decision.installation is not None:
            # the policy changes before the answer: a trigger delivered right after it already sees it
            self.policy = self.policy.after(decision.installation)
            if self.installations is not None:
                await asyncio.wrap_future(
                    self._store_writer.submit(self.installations.record, decision.installation, delivery_id)
                )
            await asyncio.wrap_future(
                self._store_writer.submit(self.deliveries.finish, delivery_id, "installation", decision.reason)
            )
            logger.info("installation %s: %s", log, decision.reason)
            return JSONResponse({"outcome": "installation", "delivery": delivery_id}, status_code=202)

        outcome = {"trigger": "accepted", "control": "control"}.get(decision.kind, "refused")
        logger.info("%s %s: %s", outcome, log, decision.reason)
        self._begin()
        return JSONResponse(
            {"outcome": outcome, "delivery": delivery_id},
            status_code=202,
            background=BackgroundTask(self._act, decision, delivery_id),
        )

    # ---- after the answer -------------------------------------------------------------------------------

    def _act(self, decision: WebhookDecision, delivery_id: str) -> None:
        try:
            if decision.kind == "trigger" and decision.trigger is not None:
                run_id = self.starter.start(decision.trigger)
                self._finish(delivery_id, "started", run_id)
            elif decision.kind == "control" and decision.control and decision.comment_on is not None:
                if self.controller is None or not decision.repository:
                    self._finish(delivery_id, "refused", "no run controller wired")
                    return
                if decision.control == "stop":
                    said = self.controller.stop(decision.repository, decision.comment_on, decision.request_key)
                else:
                    said = self.controller.retry(
                        decision.repository,
                        decision.comment_on,
                        decision.request_key,
                        decision.requester or "",
                        delivery_id,
                    )
                if self.commenter is not None:
                    self.commenter.comment(decision.repository, decision.comment_on, said)
                self._finish(delivery_id, decision.control, said[:500])
            elif decision.kind == "refuse" and decision.comment_on is not None:
                if self.commenter is not None and decision.repository and decision.comment:
                    self.commenter.comment(decision.repository, decision.comment_on, decision.comment)
                self._finish(delivery_id, "refused", decision.reason)
        except Exception as exc:  # recorded, so a redelivery of this id is handled again
            logger.exception("delivery %s failed", delivery_id)
            try:
                self._finish(delivery_id, "failed", f"{type(exc).__name__}: {exc}")
            except Exception:
                logger.exception("recording the failure of delivery %s failed", delivery_id)
        finally:
            self._end()

    def _wake(self, signal: CISignal) -> None:
        try:
            if self.wakeups is not None:
                self.wakeups.notify(signal)
        except Exception:
            logger.exception("waking the CI waits of %s failed", signal.sha)
        try:
            if self.resumer is not None:
                self.resumer.resume_waiting(signal.repository, sha=signal.sha)
        except Exception:
            logger.exception("resuming the runs waiting for CI of %s failed", signal.sha)
        finally:
            self._end()

    def _resume_merge_waits(self, signal: PullRequestSignal) -> None:
        try:
            if self.resumer is not None:
                self.resumer.resume_waiting(signal.repository, pr_number=signal.number)
        except Exception:
            logger.exception("resuming the runs waiting for a merge of #%s failed", signal.number)
        finally:
            self._end()

    def _finish(self, delivery_id: str, outcome: str, detail: str | None) -> None:
        self._store_writer.submit(self.deliveries.finish, delivery_id, outcome, detail).result()

    def _begin(self) -> None:
        with self._busy:
            self._inflight += 1

    def _end(self) -> None:
        with self._busy:
            self._inflight -= 1
            self._busy.notify_all()

    def wait_idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until no background work is left (tests and the benchmark); True if idle."""
        with self._busy:
            return self._busy.wait_for(lambda: self._inflight == 0, timeout_s)


def _problem(status: int, detail: str, *, outcome: str = "rejected") -> JSONResponse:
    return JSONResponse({"outcome": outcome, "detail": detail}, status_code=status)


def create_app(
    settings: Settings,
    starter: Starter,
    *,
    deliveries: WebhookDeliveries,
    commenter: IssueCommenter | None = None,
    wakeups: CIWakeups | None = None,
    controller: RunController | None = None,
    resumer: RunResumer | None = None,
) -> Starlette:
    """The receiver app. Raises ConfigError without a webhook secret or an allowlist. ``controller`` (default: on
    the store the deliveries live in, and ``starter``) answers ``/promptship stop`` and ``retry``; ``resumer``
    (default: Prefect's ``resume_flow_run`` for the waits in that store) resumes suspended runs on CI and
    ``pull_request`` events."""
    gh = settings.github
    if gh.webhook_secret is None or not gh.webhook_secret.get_secret_value():
        raise ConfigError(
            "no webhook secret: set PROMPTSHIP_GITHUB_WEBHOOK_SECRET (the secret configured on the GitHub webhook)"
        )
    if not gh.allowed_repositories:
        logger.warning(
            "no repository is on the allowlist (PROMPTSHIP_GITHUB__ALLOWED_REPOSITORIES): nothing will start"
        )
    deliveries.create_schema()
    from promptship.store import Store
    from promptship.store.sealing import prompt_cipher

    url = deliveries.engine.url.render_as_string(hide_password=False)
    store = Store(deliveries.engine, cipher=prompt_cipher(url, settings.store_key))
    store.create_schema()
    starter = SealingStarter(store, starter)
    installations = InstalledRepositories(deliveries.engine)
    policy = WebhookPolicy.of(gh.allowed_repositories, gh.allowed_associations, gh.trigger_label)
    receiver = WebhookReceiver(
        secret=gh.webhook_secret.get_secret_value().encode(),
        policy=policy.model_copy(update={"uninstalled": installations.uninstalled()}),
        installations=installations,
        starter=starter,
        deliveries=deliveries,
        commenter=commenter,
        wakeups=wakeups,
        max_body_bytes=gh.webhook_max_body_bytes,
        controller=controller or PrefectRunController(store, starter),
        resumer=resumer or PrefectRunResumer(store.waits()),
    )

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route(WEBHOOK_PATH, receiver.handle, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )
    app.state.receiver = receiver
    return app


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound socket for uvicorn with TCP_NODELAY (inherited by accepted connections): without it, a
    response written as headers + body waits ~40 ms for the client's delayed ACK (Nagle)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    return sock


@contextmanager
def running_asgi(app: Any, *, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve ``app`` with uvicorn on ``host`` and a free port in a thread; yield its base URL; stop it after."""
    import uvicorn

    sock = listening_socket(host, 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"asgi-{port}", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise OSError(f"the ASGI server on {host}:{port} stopped before it started")
            threading.Event().wait(0.01)
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
