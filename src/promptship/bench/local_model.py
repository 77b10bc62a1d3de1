"""The real local model (llama.cpp serving SmolLM2-135M-Instruct, ``make local-model-install``): first-token
latency and generation speed, and what the gateway adds on real generations beside the same calls sent
straight to the server.

The gateway service runs as it is deployed: ``promptship gateway serve`` as a process of its own (uvicorn), with
the llama.cpp routing policy, in front of the llama.cpp server's process; the bench is the client of both paths.
Streams of two lengths (``MAX_TOKENS``: a PR title's 16 tokens and a description's 64) are compared at the same
chunk count: the paired ratio is the median of each round's service/direct, as in ``bench gateway``, whose
stand-in streams instant chunks (the gateway's fixed work per call against a stream that takes 4 ms); here the
chunks come at the model's own pace. Every sample is a distinct prompt (a fresh nonce first), so neither
llama.cpp's prompt-prefix reuse nor the gate's result cache turns a sample into a cache hit; all samples ask for
the same ``max_tokens`` at temperature 0, and the paths take turns within each round, so slow drifts of the load
on the shared cores hit them alike. ``LiteLLMGateway.complete`` (the library path the flow's steps use) is
compared with a direct non-streamed call.

    python -m promptship.bench local_model      # PROMPTSHIP_BENCH_LOCAL_MODEL_N rounds per length (default 30)
"""

from __future__ import annotations

import os
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from promptship.bench.stats import percentile, summary

MAX_TOKENS = (16, 64)
WARMUP = 2
SYSTEM = "Write a pull request title on the first line, then a short description."


def _prompt() -> str:
    nonce = secrets.token_hex(4)
    return f"[{nonce}] Request: add a GET /version endpoint to the chat backend. Changed files: app/main.py"


def _stream(http: Any, url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[float, float, int]:
    """(whole answer ms, first content chunk ms, content chunks) of one streamed chat completion."""
    import json

    t0 = time.perf_counter()
    first: float | None = None
    chunks = 0
    with http.stream("POST", url, json={**body, "stream": True}, headers=headers) as response:
        if response.status_code >= 400:
            raise RuntimeError(f"{url} answered {response.status_code}: {response.read().decode()[:500]}")
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
    return total, (first if first is not None else total), chunks


def run() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    import httpx

    from promptship.bench.gateway import cpu_seconds, print_paired, server_process
    from promptship.domain.request import DevRequest
    from promptship.domain.results import LLMCall, LLMMessage, RouteDecision
    from promptship.settings import Settings
    from promptship.wiring import build_llm_gateway
    from promptship_sandbox.local_model import (
        MODEL_NAME,
        POLICY_FILE,
        local_model_installed,
        local_model_settings,
        running_local_model,
    )
    from promptship_sandbox.net import free_port

    ok, why = local_model_installed()
    if not ok:
        raise RuntimeError(why)
    n = int(os.environ.get("PROMPTSHIP_BENCH_LOCAL_MODEL_N", "30"))
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp, running_local_model(Path(tmp) / "local-model") as server:
        db = Path(tmp) / "bench.db"
        settings = local_model_settings(Settings(database_url=f"sqlite:///{db}"), server)
        gateway = build_llm_gateway(settings)
        request = DevRequest(prompt="bench", sensitive=True)
        pinned = RouteDecision(task_class="docs", model="smollm2", mode="local", reason="bench", sensitive=False)
        key = gateway.agent_access("bench-local", pinned, 1e9).api_key.get_secret_value()
        auth = {"authorization": f"Bearer {key}"}
        port = free_port()
        service_env = {  # the ledger the bench minted the key in; the same policy and server as the bench's gateway
            "PROMPTSHIP_DATABASE_URL": f"sqlite:///{db}",
            "PROMPTSHIP_LLM__POLICY_FILE": str(POLICY_FILE),
            "PROMPTSHIP_LLM__LLAMACPP_BASE_URL": server.base_url,
        }
        args = [sys.executable, "-m", "promptship.cli", "gateway", "serve", "--port", str(port)]
        ready = f"http://127.0.0.1:{port}/health"

        def body_of(prompt: str, max_tokens: int) -> dict[str, Any]:
            messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
            return {"messages": messages, "max_tokens": max_tokens, "temperature": 0}

        streams: dict[int, dict[str, list[tuple[float, float, int]]]] = {}
        service_cpu: dict[int, float] = {}
        complete_direct: list[float] = []
        complete_gateway: list[float] = []
        tokens: list[int] = []
        with (
            server_process(args, service_env, ready, Path(tmp) / "gateway.log") as service,
            httpx.Client(timeout=120) as http,
        ):
            direct_url = f"{server.base_url}/chat/completions"
            service_url = f"http://127.0.0.1:{port}/v1/chat/completions"
            for max_tokens in MAX_TOKENS:
                runs: dict[str, list[tuple[float, float, int]]] = {"direct": [], "service": []}
                cpu = 0.0
                for i in range(WARMUP + n):
                    direct = _stream(http, direct_url, {"model": server.alias, **body_of(_prompt(), max_tokens)}, {})
                    before = cpu_seconds(service.pid)
                    through = _stream(
                        http, service_url, {"model": "openai/smollm2", **body_of(_prompt(), max_tokens)}, auth
                    )
                    if i >= WARMUP:
                        cpu += cpu_seconds(service.pid) - before
                        runs["direct"].append(direct)
                        runs["service"].append(through)
                streams[max_tokens] = runs
                service_cpu[max_tokens] = cpu / n * 1000
            for i in range(WARMUP + n):
                t0 = time.perf_counter()
                whole = http.post(direct_url, json={"model": server.alias, **body_of(_prompt(), MAX_TOKENS[0])})
                whole.raise_for_status()
                c_direct = (time.perf_counter() - t0) * 1000
                call = LLMCall(
                    run_key="bench-local",
                    step="open_pull_request",
                    task_class="docs",
                    force_local=request.sensitive,
                    messages=(LLMMessage(role="system", content=SYSTEM), LLMMessage(role="user", content=_prompt())),
                    max_tokens=MAX_TOKENS[0],
                )
                t0 = time.perf_counter()
                reply = gateway.complete(call)
                c_gateway = (time.perf_counter() - t0) * 1000
                if reply.decision.model != "smollm2":
                    raise RuntimeError(f"the gateway routed the bench call to {reply.decision.model}, not smollm2")
                if i >= WARMUP:
                    complete_direct.append(c_direct)
                    complete_gateway.append(c_gateway)
                    tokens.append(reply.usage.completion_tokens)
        close = getattr(gateway.scanner, "close", None)
        if close is not None:
            close()

    med = statistics.median
    short = streams[MAX_TOKENS[0]]["direct"]
    tps = [(c - 1) / ((t - f) / 1000) for t, f, c in short if c > 1 and t > f]
    print(
        f"   local model {MODEL_NAME} on llama.cpp: first token {med(f for _, f, _ in short):.0f} ms, "
        f"{med(tps):.1f} tokens/s (medians of {n} direct streamed generations, {MAX_TOKENS[0]} tokens max; "
        f"load average {load_before:.1f} → {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    for max_tokens, runs in streams.items():
        label = f"real model, {max_tokens} tokens max,"
        d_total, d_first, d_chunks = zip(*runs["direct"], strict=True)
        print(f"   streaming {label} direct ({med(d_chunks):.0f} chunks): {summary(list(d_total))}")
        print(f"   streaming {label} direct, first token: {summary(list(d_first))}")
        print_paired(label, "gateway service process", "chunks", runs["direct"], runs["service"])
        # A generation may end early (end of sequence) on one path: the ratio at the same chunk count is taken
        # over the rounds whose two streams had as many chunks.
        same = [s[0] / d[0] for d, s in zip(runs["direct"], runs["service"], strict=True) if d[2] == s[2]]
        paired_same = f"paired x{med(same):.2f}" if same else "none"
        print(
            f"   streaming {label} rounds with the same chunk count on both paths: {len(same)}/{n} ({paired_same}); "
            f"gateway process CPU per stream {service_cpu[max_tokens]:.2f} ms"
        )
    print(f"   direct non-streamed: {summary(complete_direct)}")
    print(f"   LiteLLMGateway.complete (gate, route, ledger, LiteLLM): {summary(complete_gateway)}")
    diffs = [g - d for g, d in zip(complete_gateway, complete_direct, strict=True)]
    print(f"   gateway minus direct, paired per round, complete() vs direct non-streamed: {summary(diffs)}")
    print(
        f"   complete() overhead (median minus median) {med(complete_gateway) - med(complete_direct):+.0f} ms "
        f"({med(complete_gateway) / med(complete_direct):.2f}x); p99 ratio "
        f"{percentile(complete_gateway, 99) / percentile(complete_direct, 99):.2f}x"
    )
    print(f"   completion tokens per gateway call: median {med(tokens):.0f} (ledger: real usage from the server)")
