"""Helpers of the cluster tests. The control plane itself (one per session), the sample-app registry, the API
client and a namespace per test are fixtures of tests/conftest.py, shared with the write-back tests."""

from __future__ import annotations

import time

import httpx


def wait_for_version(url: str, want: str, wait_s: float = 15.0) -> str:
    """What /version answers once the service proxy routes to ``want`` (or the last answer after wait_s):
    endpoints follow a rollout with a short lag, as on a real cluster."""
    deadline = time.monotonic() + wait_s
    last = ""
    while time.monotonic() < deadline:
        try:
            last = httpx.get(f"{url}/version", timeout=2).text
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        if last == want:
            return last
        time.sleep(0.2)
    return last
