"""Gateway overhead: one chat completion through the gateway service vs straight to the provider (the LLM
stand-in), measured in the same run, plus what each layer of the gateway costs on its own; streams through the
service vs direct (a short reply and a 256-chunk one: total, p99, ratio, first content chunk, SSE events), the
service both as it streams (OpenAI-compatible SSE relayed as the provider's bytes) and with LiteLLM parsing every
chunk (``stream_passthrough=False``, what providers that are not OpenAI-compatible get). The three sides take
turns, so that they see the same moments of a shared machine; the paired ratio is the median of each round's
service/direct. Every call sends a prompt not sent before, so the gate's figures are real scans; its cache has
its own line."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from promptship.bench.stats import percentile, summary

N = 150
WARMUP = 10
STREAMS = 60
# A 256-chunk reply (the stand-in streams 16 characters a chunk): what per-chunk costs add up to. Varied text:
# LiteLLM ends a stream whose chunks repeat 100 times ("the model is repeating").
LONG_REPLY = "".join(f"line {i:05d}: ok.\n" for i in range(256))  # 16 characters a line


def _time(fn: Callable[[], object], n: int) -> list[float]:
    for _ in range(WARMUP):
        fn()
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _has_content(line: str) -> bool:
    payload = line.removeprefix("data: ")
    if payload == "[DONE]":
        return False
    choices = json.loads(payload).get("choices") or [{}]
    return bool((choices[0].get("delta") or {}).get("content"))


def run() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    import httpx
    from pydantic import SecretStr

    from promptship.adapters.detectors import SensitiveDataScanner
    from promptship.adapters.llm import LiteLLMGateway, ProviderEndpoints
    from promptship.domain.results import LLMCall, LLMMessage
    from promptship.domain.routing import RoutingPolicy
    from promptship.servers.gateway import create_gateway_app
    from promptship.store import make_engine
    from promptship.store.ledger import CostLedger
    from promptship_sandbox.llm_server import running_llm_stand_in, serve_asgi

    base = "Implement a retry helper with exponential backoff for the chat backend's LiteLLM client. " * 3
    serial = itertools.count(1)

    def fresh_messages() -> list[dict[str, str]]:
        # A distinct prompt for every call: the gate remembers texts by digest, and one prompt sent over and
        # over would measure its cache, not the gate (the cache is measured on its own line below).
        n = next(serial)
        return [
            {"role": "system", "content": "You are a coding agent."},
            {"role": "user", "content": f"{base}Ticket {n}: the client of service {n % 97} times out."},
        ]

    with tempfile.TemporaryDirectory() as tmp, running_llm_stand_in() as llm, SensitiveDataScanner() as scanner:
        ledger = CostLedger(make_engine(f"sqlite:///{Path(tmp) / 'bench.db'}"), cloud_daily_usd=None)
        ledger.create_schema()
        gateway = LiteLLMGateway(
            policy=RoutingPolicy.default(),
            scanner=scanner,
            ledger=ledger,
            endpoints=ProviderEndpoints(llm.base_url, llm.base_url + "/v1", SecretStr("sk-or-v1-bench")),
            gateway_url="http://127.0.0.1:9",
        )
        litellm_streaming_gateway = LiteLLMGateway(
            policy=RoutingPolicy.default(),
            scanner=scanner,
            ledger=ledger,
            endpoints=ProviderEndpoints(llm.base_url, llm.base_url + "/v1", SecretStr("sk-or-v1-bench")),
            gateway_url="http://127.0.0.1:9",
            stream_passthrough=False,
        )
        with (
            serve_asgi(create_gateway_app(gateway, gateway.ledger)) as gateway_url,
            serve_asgi(create_gateway_app(litellm_streaming_gateway, ledger)) as litellm_gateway_url,
        ):
            decision = gateway.route(base, task_class="complex_code")
            key = gateway.agent_access("bench", decision, 1e9).api_key.get_secret_value()
            auth = {"authorization": f"Bearer {key}"}

            def body(stream: bool = False) -> dict[str, object]:
                out: dict[str, object] = {"model": "openai/gpt-4o", "messages": fresh_messages()}
                return {**out, "stream": True} if stream else out

            with httpx.Client(timeout=30) as http:
                direct = _time(lambda: http.post(f"{llm.base_url}/v1/chat/completions", json=body()).json(), N)
                service = _time(
                    lambda: http.post(f"{gateway_url}/v1/chat/completions", json=body(), headers=auth).json(), N
                )

                def stream(url: str, headers: dict[str, str]) -> tuple[float, float, int]:
                    """(total ms, first content chunk ms, SSE data events) of one streamed completion."""
                    t0 = time.perf_counter()
                    first, events = float("nan"), 0
                    with http.stream("POST", url, json=body(stream=True), headers=headers) as r:
                        for line in r.iter_lines():
                            if not line.startswith("data: "):
                                continue
                            events += 1
                            if first != first and _has_content(line):  # NaN until the first content chunk
                                first = (time.perf_counter() - t0) * 1000
                    return (time.perf_counter() - t0) * 1000, first, events

                streams: dict[str, dict[str, list[tuple[float, float, int]]]] = {}
                for label, reply in (("short", None), ("long", LONG_REPLY)):
                    runs: dict[str, list[tuple[float, float, int]]] = {"direct": [], "service": [], "litellm": []}
                    for i in range(WARMUP + STREAMS):
                        # take turns, so that all see the same moments of a shared machine
                        for side, url, headers in (
                            ("direct", f"{llm.base_url}/v1/chat/completions", {}),
                            ("service", f"{gateway_url}/v1/chat/completions", auth),
                            ("litellm", f"{litellm_gateway_url}/v1/chat/completions", auth),
                        ):
                            if reply is not None:
                                llm.script("*", [reply])
                            sample = stream(url, headers)
                            if i >= WARMUP:
                                runs[side].append(sample)
                    streams[label] = runs
            call = LLMCall(
                run_key="bench",
                step="bench",
                messages=(LLMMessage(role="user", content=base),),
                task_class="complex_code",
            )
            adapter = _time(
                lambda: gateway.complete(
                    call.model_copy(
                        update={"messages": (LLMMessage(role="user", content=fresh_messages()[1]["content"]),)}
                    )
                ),
                N,
            )
            import litellm

            litellm_alone = _time(
                lambda: litellm.completion(
                    model="openrouter/openai/gpt-4o",
                    api_base=llm.base_url + "/v1",
                    api_key="sk-or-v1-bench",
                    messages=fresh_messages(),
                    num_retries=0,
                    max_retries=0,
                ),
                N,
            )

            def litellm_stream() -> None:
                chunks: Any = litellm.completion(
                    model="openrouter/openai/gpt-4o",
                    api_base=llm.base_url + "/v1",
                    api_key="sk-or-v1-bench",
                    messages=fresh_messages(),
                    num_retries=0,
                    max_retries=0,
                    stream=True,
                    stream_options={"include_usage": True},
                )
                for _ in chunks:
                    pass

            litellm_streaming = _time(litellm_stream, STREAMS)
            gate = _time(lambda: scanner.scan_messages(fresh_messages()), N)
            repeated = fresh_messages()
            gate_hit = _time(lambda: scanner.scan_messages(repeated), N)

            def ledger_round() -> None:
                r = ledger.reserve("bench-ledger", "cloud", 0.01)
                ledger.release(r)

            ledger_ms = _time(ledger_round, N)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"   (load average {load:.1f} on {os.cpu_count()} CPUs; every call sends a prompt not sent before)")
    print(f"   provider direct (stand-in, no gateway):      {summary(direct)}")
    print(f"   LiteLLM client alone (no gate, no ledger):   {summary(litellm_alone)}")
    print(f"   adapter in-process (gate+budget+LiteLLM):    {summary(adapter)}")
    print(f"   gateway service over HTTP:                   {summary(service)}")
    print(f"   layer: gate scan of the request:             {summary(gate)}")
    print(f"   layer: gate, cache hit (same request again): {summary(gate_hit)}")
    print(f"   layer: ledger reserve+release (SQLite):      {summary(ledger_ms)}")
    med_direct, med_service = statistics.median(direct), statistics.median(service)
    print(
        f"   overhead per call: median +{med_service - med_direct:.2f} ms "
        f"(x{med_service / med_direct:.1f}), p99 +{percentile(service, 99) - percentile(direct, 99):.2f} ms"
    )
    print(f"   LiteLLM client alone, streaming (short):     {summary(litellm_streaming)}")
    for label, runs in streams.items():
        d_total, d_first, d_events = zip(*runs["direct"], strict=True)
        print(f"   streaming {label} direct  ({statistics.median(d_events):.0f} SSE events): {summary(list(d_total))}")
        for side, name in (("service", "service"), ("litellm", "service, LiteLLM parsing every chunk")):
            s_total, s_first, s_events = zip(*runs[side], strict=True)
            paired = statistics.median(s / d for s, d in zip(s_total, d_total, strict=True))
            first = statistics.median(s - d for s, d in zip(s_first, d_first, strict=True))
            print(
                f"   streaming {label} {name} ({statistics.median(s_events):.0f} SSE events): {summary(list(s_total))}"
            )
            ratio = statistics.median(s_total) / statistics.median(d_total)
            print(
                f"   streaming {label} {name}: ratio median x{ratio:.2f}"
                f" (paired x{paired:.2f}), p99 x{percentile(list(s_total), 99) / percentile(list(d_total), 99):.2f}"
                f" (goal <= 1.3); first chunk median {statistics.median(s_first):.2f} ms vs "
                f"{statistics.median(d_first):.2f} ms direct (paired +{first:.2f} ms, goal <= +20)"
            )
