"""Gateway overhead: one chat completion through the gateway service vs straight to the provider (the LLM
stand-in), measured in the same run, plus what each layer of the gateway costs on its own."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from promptship.bench.stats import percentile, summary

N = 150
WARMUP = 10


def _time(fn: Callable[[], object], n: int) -> list[float]:
    for _ in range(WARMUP):
        fn()
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


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

    prompt = "Implement a retry helper with exponential backoff for the chat backend's LiteLLM client. " * 3
    messages = [{"role": "system", "content": "You are a coding agent."}, {"role": "user", "content": prompt}]
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
        with serve_asgi(create_gateway_app(gateway, gateway.ledger)) as gateway_url:
            decision = gateway.route(prompt, task_class="complex_code")
            key = gateway.agent_access("bench", decision, 1e9).api_key.get_secret_value()
            body = {"model": "openai/gpt-4o", "messages": messages}
            with httpx.Client(timeout=30) as http:
                direct = _time(lambda: http.post(f"{llm.base_url}/v1/chat/completions", json=body).json(), N)
                service = _time(
                    lambda: http.post(
                        f"{gateway_url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}
                    ).json(),
                    N,
                )
                stream_body = {**body, "stream": True}

                def streamed() -> None:
                    with http.stream(
                        "POST",
                        f"{gateway_url}/v1/chat/completions",
                        json=stream_body,
                        headers={"authorization": f"Bearer {key}"},
                    ) as r:
                        for _ in r.iter_lines():
                            pass

                def streamed_direct() -> None:
                    with http.stream("POST", f"{llm.base_url}/v1/chat/completions", json=stream_body) as r:
                        for _ in r.iter_lines():
                            pass

                direct_stream = _time(streamed_direct, N // 2)
                service_stream = _time(streamed, N // 2)
            call = LLMCall(
                run_key="bench",
                step="bench",
                messages=tuple(LLMMessage(role=m["role"], content=m["content"]) for m in messages),  # type: ignore[arg-type]
                task_class="complex_code",
            )
            adapter = _time(lambda: gateway.complete(call), N)
            import litellm

            litellm_alone = _time(
                lambda: litellm.completion(
                    model="openrouter/openai/gpt-4o",
                    api_base=llm.base_url + "/v1",
                    api_key="sk-or-v1-bench",
                    messages=messages,
                    num_retries=0,
                    max_retries=0,
                ),
                N,
            )
            gate = _time(lambda: scanner.scan_messages(messages), N)

            def ledger_round() -> None:
                r = ledger.reserve("bench-ledger", "cloud", 0.01)
                ledger.release(r)

            ledger_ms = _time(ledger_round, N)

    print(f"   provider direct (stand-in, no gateway):      {summary(direct)}")
    print(f"   LiteLLM client alone (no gate, no ledger):   {summary(litellm_alone)}")
    print(f"   adapter in-process (gate+budget+LiteLLM):    {summary(adapter)}")
    print(f"   gateway service over HTTP:                   {summary(service)}")
    print(f"   streaming direct:                            {summary(direct_stream)}")
    print(f"   streaming through the gateway service:       {summary(service_stream)}")
    print(f"   layer: gate scan of the request:             {summary(gate)}")
    print(f"   layer: ledger reserve+release (SQLite):      {summary(ledger_ms)}")
    med_direct, med_service = statistics.median(direct), statistics.median(service)
    print(
        f"   overhead per call: median +{med_service - med_direct:.2f} ms "
        f"(x{med_service / med_direct:.1f}), p99 +{percentile(service, 99) - percentile(direct, 99):.2f} ms; "
        f"streaming median x{statistics.median(service_stream) / statistics.median(direct_stream):.1f}"
    )
