"""``HttpHealthProbe``: the ``HealthProbe`` port over HTTP (httpx).

It probes a URL repeatedly and lets ``domain.rollout.health_verdict`` decide: healthy after ``consecutive``
successes in a row (2xx, within ``max_latency_ms`` if set), unhealthy once that can no longer happen within
``retries`` probes. A single failed probe only resets the streak.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import httpx

from promptship.domain.results import HealthResult
from promptship.domain.rollout import HealthGate, ProbeObservation, health_verdict, probe_passes, trailing_successes


class HttpHealthProbe:
    """Health gate against an HTTP endpoint (``GET``, 2xx = up)."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        consecutive: int = 3,
        retries: int = 10,
        timeout_s: float = 2.0,
        interval_s: float = 0.5,
        max_latency_ms: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """``http``: a ready client (``wiring.py`` builds it); the rest are the gate's bounds."""
        self.http = http
        self.gate = HealthGate(consecutive=consecutive, retries=retries, max_latency_ms=max_latency_ms)
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self.clock = clock
        self.sleep = sleep

    def probe_once(self, url: str) -> ProbeObservation:
        """One GET of ``url``; never raises (a failure is an observation)."""
        t0 = self.clock()
        try:
            r = self.http.get(url, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            return ProbeObservation(ok=False, error=f"{type(exc).__name__}")
        latency = (self.clock() - t0) * 1000
        return ProbeObservation(
            ok=200 <= r.status_code < 300,
            status=r.status_code,
            latency_ms=round(latency, 2),
            error="" if 200 <= r.status_code < 300 else f"HTTP {r.status_code}",
        )

    def check(self, url: str) -> HealthResult:
        """Probe ``url`` until the gate decides."""
        observations: list[ProbeObservation] = []
        while True:
            observations.append(self.probe_once(url))
            verdict = health_verdict(observations, self.gate)
            if verdict != "pending":
                break
            self.sleep(self.interval_s)
        failures = [o for o in observations if not probe_passes(o, self.gate)]
        latencies = [o.latency_ms for o in observations if o.ok and o.latency_ms is not None]
        detail = ""
        if failures:
            reasons = sorted({o.error or f"slower than {self.gate.max_latency_ms:g} ms" for o in failures})
            detail = f"{len(failures)} of {len(observations)} probes failed ({', '.join(reasons)})"
        return HealthResult(
            verdict=verdict,
            url=url,
            attempts=len(observations),
            consecutive_ok=trailing_successes(observations, self.gate),
            detail=detail,
            latency_ms_p50=round(statistics.median(latencies), 2) if latencies else None,
        )
