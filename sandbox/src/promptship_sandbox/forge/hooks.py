"""Signed webhook deliveries, sent in order from one background thread."""

from __future__ import annotations

import hashlib
import hmac
import json
import queue
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import httpx


def signature_256(secret: bytes, body: bytes) -> str:
    """GitHub's ``X-Hub-Signature-256`` value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Delivery:
    """One webhook delivery and how the receiver answered (status 0: not reachable)."""

    id: str
    event: str
    action: str | None
    status: int
    payload: dict[str, Any]


class WebhookSender:
    """Posts events to one receiver URL, signed with the shared secret; keeps a log of deliveries."""

    def __init__(self) -> None:
        self.url: str | None = None
        self._secret: bytes = b""
        self.deliveries: list[Delivery] = []
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue()
        self._pending = 0
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="forge-webhooks", daemon=True)
        self._thread.start()

    def configure(self, url: str | None, secret: str | None) -> None:
        self.url = url
        self._secret = (secret or "").encode()

    def send(self, event: str, payload: dict[str, Any]) -> None:
        if not self.url:
            return
        with self._cv:
            self._pending += 1
        self._queue.put((event, payload))

    def wait_idle(self, timeout_s: float) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: self._pending == 0, timeout=timeout_s)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                event, payload = item
                try:
                    self._deliver(client, event, payload)
                finally:
                    with self._cv:
                        self._pending -= 1
                        self._cv.notify_all()

    def _deliver(self, client: httpx.Client, event: str, payload: dict[str, Any]) -> None:
        url = self.url
        if not url:
            return
        body = json.dumps(payload).encode()
        delivery_id = str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/promptship-forge",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery_id,
            "X-GitHub-Hook-ID": "1",
            "X-GitHub-Hook-Installation-Target-ID": str((payload.get("repository") or {}).get("id", 0)),
            "X-GitHub-Hook-Installation-Target-Type": "repository",
            "X-Hub-Signature-256": signature_256(self._secret, body),
            "X-Hub-Signature": "sha1=" + hmac.new(self._secret, body, hashlib.sha1).hexdigest(),
        }
        try:
            status = client.post(url, content=body, headers=headers).status_code
        except httpx.HTTPError:
            status = 0
        self.deliveries.append(Delivery(delivery_id, event, payload.get("action"), status, payload))
