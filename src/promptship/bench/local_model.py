"""The real local model (llama.cpp serving SmolLM2-135M-Instruct, ``make local-model-install``): first-token
latency and generation speed, and what the gateway adds on real generations beside the same calls sent
straight to the server.

Every sample is a distinct prompt (a fresh nonce first), so neither llama.cpp's prompt-prefix reuse nor the
gate's result cache turns a sample into a cache hit; all samples ask for the same ``max_tokens`` at
temperature 0, and the paths take turns within each round, so slow drifts of the load on the shared cores hit
them alike; the paired differences (gateway minus direct, per round) are printed beside the medians. On a busy
machine the generation's own spread (p95 ≈ 3× median) is far larger than the gateway's few milliseconds: the
gateway's per-layer overhead is measured on the stand-in by ``bench gateway``.

    python -m promptship.bench local_model      # PROMPTSHIP_BENCH_LOCAL_MODEL_N samples per path (default 20)
"""

from __future__ import annotations

import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from promptship.bench.stats import percentile, summary

MAX_TOKENS = 16
WARMUP = 2
SYSTEM = "Write a pull request title on the first line, then a short description."


def _prompt() -> str:
    nonce = secrets.token_hex(4)
    return f"[{nonce}] Request: add a GET /version endpoint to the chat backend. Changed files: app/main.py"


def _stream(http: Any, url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[float, float, int]:
    """(first content chunk ms, whole answer ms, content chunks) of one streamed chat completion."""
    import json

    t0 = time.perf_counter()
    first: float | None = None
    chunks = 0
    with http.stream("POST", url, json={**body, "stream": True}, headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line.removeprefix("data: "))
            for choice in data.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    chunks += 1
                    if first is None:
                        first = (time.perf_counter() - t0) * 1000
    total = (time.perf_counter() - t0) * 1000
    return (first if first is not None else total), total, chunks


def run() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    import httpx

    from promptship.domain.request import DevRequest
    from promptship.domain.results import LLMCall, LLMMessage, RouteDecision
    from promptship.servers.gateway import create_gateway_app
    from promptship.settings import Settings
    from promptship.wiring import build_llm_gateway
    from promptship_sandbox.llm_server import serve_asgi
    from promptship_sandbox.local_model import (
        MODEL_NAME,
        local_model_installed,
        local_model_settings,
        running_local_model,
    )

    ok, why = local_model_installed()
    if not ok:
        raise RuntimeError(why)
    n = int(os.environ.get("PROMPTSHIP_BENCH_LOCAL_MODEL_N", "20"))
    with tempfile.TemporaryDirectory() as tmp, running_local_model(Path(tmp) / "local-model") as server:
        settings = local_model_settings(Settings(database_url=f"sqlite:///{Path(tmp) / 'bench.db'}"), server)
        gateway = build_llm_gateway(settings)
        request = DevRequest(prompt="bench", sensitive=True)
        pinned = RouteDecision(task_class="docs", model="smollm2", mode="local", reason="bench", sensitive=False)
        key = gateway.agent_access("bench-local", pinned, 1e9).api_key.get_secret_value()
        auth = {"authorization": f"Bearer {key}"}
        body_of: Callable[[str], dict[str, Any]] = lambda prompt: {  # noqa: E731
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
        }
        with serve_asgi(create_gateway_app(gateway, gateway.ledger)) as gateway_url, httpx.Client(timeout=120) as http:
            direct_url = f"{server.base_url}/chat/completions"
            service_url = f"{gateway_url}/v1/chat/completions"
            direct_first: list[float] = []
            direct_total: list[float] = []
            direct_tps: list[float] = []
            service_first: list[float] = []
            service_total: list[float] = []
            complete_direct: list[float] = []
            complete_gateway: list[float] = []
            tokens: list[int] = []
            for i in range(WARMUP + n):
                d_first, d_total, d_chunks = _stream(
                    http, direct_url, {"model": server.alias, **body_of(_prompt())}, {}
                )
                s_first, s_total, _ = _stream(
                    http, service_url, {"model": "openai/smollm2", **body_of(_prompt())}, auth
                )
                t0 = time.perf_counter()
                whole = http.post(direct_url, json={"model": server.alias, **body_of(_prompt())})
                whole.raise_for_status()
                c_direct = (time.perf_counter() - t0) * 1000
                call = LLMCall(
                    run_key="bench-local",
                    step="open_pull_request",
                    task_class="docs",
                    force_local=request.sensitive,
                    messages=(LLMMessage(role="system", content=SYSTEM), LLMMessage(role="user", content=_prompt())),
                    max_tokens=MAX_TOKENS,
                )
                t0 = time.perf_counter()
                reply = gateway.complete(call)
                c_gateway = (time.perf_counter() - t0) * 1000
                if reply.decision.model != "smollm2":
                    raise RuntimeError(f"the gateway routed the bench call to {reply.decision.model}, not smollm2")
                if i < WARMUP:
                    continue
                direct_first.append(d_first)
                direct_total.append(d_total)
                if d_chunks > 1 and d_total > d_first:
                    direct_tps.append((d_chunks - 1) / ((d_total - d_first) / 1000))
                service_first.append(s_first)
                service_total.append(s_total)
                complete_direct.append(c_direct)
                complete_gateway.append(c_gateway)
                tokens.append(reply.usage.completion_tokens)
        close = getattr(gateway.scanner, "close", None)
        if close is not None:
            close()

    med = statistics.median
    print(
        f"   local model {MODEL_NAME} on llama.cpp: first token {med(direct_first):.0f} ms, "
        f"{med(direct_tps):.1f} tokens/s (medians of {n} direct streamed generations, {MAX_TOKENS} tokens max)"
    )
    print(f"   direct stream, first token: {summary(direct_first)}")
    print(f"   direct stream, whole answer: {summary(direct_total)}")
    print(f"   via gateway service stream, first token: {summary(service_first)}")
    print(f"   via gateway service stream, whole answer: {summary(service_total)}")
    print(f"   direct non-streamed: {summary(complete_direct)}")
    print(f"   LiteLLMGateway.complete (gate, route, ledger, LiteLLM): {summary(complete_gateway)}")
    pairs = {
        "service stream first token": [s - d for s, d in zip(service_first, direct_first, strict=True)],
        "service stream whole answer": [s - d for s, d in zip(service_total, direct_total, strict=True)],
        "complete() vs direct non-streamed": [g - d for g, d in zip(complete_gateway, complete_direct, strict=True)],
    }
    for what, diffs in pairs.items():
        print(f"   gateway minus direct, paired per round, {what}: {summary(diffs)}")
    print(
        f"   gateway overhead (median minus median): service stream first token "
        f"{med(service_first) - med(direct_first):+.0f} ms, whole {med(service_total) - med(direct_total):+.0f} ms "
        f"({med(service_total) / med(direct_total):.2f}x); "
        f"complete() {med(complete_gateway) - med(complete_direct):+.0f} ms "
        f"({med(complete_gateway) / med(complete_direct):.2f}x); p99 ratio complete "
        f"{percentile(complete_gateway, 99) / percentile(complete_direct, 99):.2f}x"
    )
    print(f"   completion tokens per gateway call: median {med(tokens):.0f} (ledger: real usage from the server)")
