"""Gateway overhead, measured as it is deployed: the LLM stand-in, the gateway service (``promptship gateway
serve``, uvicorn) and the client each a process of their own, so that direct and service calls are the same client
against real processes (the stand-in's process is the provider of both paths).

Each round takes turns: direct (client → stand-in process), service (client → gateway process → stand-in
process), a bare relay (``bench/bare_relay.py``: the same stack forwarding bytes and doing nothing else, the
floor of any second hop in Python), and, on lines of their own labelled "in-process", the old arrangement —
stand-in and gateway service served by threads of the bench's own process, under its GIL — as it streams (the
provider's bytes relayed) and with LiteLLM parsing every chunk (``stream_passthrough=False``, what providers that
are not OpenAI-compatible get).
Streams: a short reply and a 256-chunk one (total, p99, ratio, first content chunk, SSE events); the paired ratio
is the median of each round's service/direct. The same two streams again with LiteLLM as the client of both
direct and service (what the code agent, a LiteLLM client, sees: its per-chunk parsing is paid on both paths).
Every call sends a prompt not sent before, so the gate's figures are real scans; its cache has its own line;
then what each layer of the gateway costs on its own."""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from promptship.bench.stats import percentile, summary

N = int(os.environ.get("BENCH_GATEWAY_N", "150"))
WARMUP = int(os.environ.get("BENCH_GATEWAY_WARMUP", "10"))
STREAMS = int(os.environ.get("BENCH_GATEWAY_STREAMS", "60"))
# A 256-chunk reply (the stand-in streams 16 characters a chunk): what per-chunk costs add up to. Varied text:
# LiteLLM ends a stream whose chunks repeat 100 times ("the model is repeating").
LONG_REPLY = "".join(f"line {i:05d}: ok.\n" for i in range(256))  # 16 characters a line
START_S = 120.0  # the gateway process loads LiteLLM and the scanner's models before it listens


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


@contextmanager
def server_process(
    args: list[str], env: Mapping[str, str], ready_url: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``args`` as a process of its own (output to ``log``), once ``ready_url`` answers; stopped by its PID."""
    import httpx

    with log.open("wb") as out:
        proc = subprocess.Popen(args, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_S
        while True:
            if proc.poll() is not None:
                raise OSError(f"{args[2:5]} exited with {proc.returncode}: {log.read_text()[-800:]}")
            try:
                if httpx.get(ready_url, timeout=2).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise OSError(f"{args[2:5]} did not answer {ready_url} in {START_S:.0f} s")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux ``/proc``; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def print_paired(
    label: str, name: str, unit: str, direct: list[tuple[float, float, int]], side: list[tuple[float, float, int]]
) -> None:
    """One path's streams against direct's, taken in turns: totals, ratios (median, paired, p99), first chunk."""
    d_total, d_first, _ = zip(*direct, strict=True)
    s_total, s_first, s_events = zip(*side, strict=True)
    paired = statistics.median(s / d for s, d in zip(s_total, d_total, strict=True))
    first = statistics.median(s - d for s, d in zip(s_first, d_first, strict=True))
    print(f"   streaming {label} {name} ({statistics.median(s_events):.0f} {unit}): {summary(list(s_total))}")
    ratio = statistics.median(s_total) / statistics.median(d_total)
    print(
        f"   streaming {label} {name}: ratio median x{ratio:.2f}"
        f" (paired x{paired:.2f}), p99 x{percentile(list(s_total), 99) / percentile(list(d_total), 99):.2f}"
        f" (goal <= 1.3); first chunk median {statistics.median(s_first):.2f} ms vs "
        f"{statistics.median(d_first):.2f} ms direct (paired {first:+.2f} ms, goal <= +20)"
    )


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def run() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    import httpx
    from pydantic import SecretStr

    from promptship.adapters.detectors import SensitiveDataScanner
    from promptship.adapters.llm import LiteLLMGateway, ProviderEndpoints
    from promptship.domain.results import LLMCall, LLMMessage
    from promptship.domain.routing import RoutingPolicy
    from promptship.servers.gateway import create_gateway_app, uvicorn_stack
    from promptship.store import make_engine
    from promptship.store.ledger import CostLedger
    from promptship_sandbox.llm_server import running_llm_stand_in, serve_asgi
    from promptship_sandbox.net import free_port

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

    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp, running_llm_stand_in() as llm, SensitiveDataScanner() as scanner:
        db = Path(tmp) / "bench.db"
        ledger = CostLedger(make_engine(f"sqlite:///{db}"), cloud_daily_usd=None)
        ledger.create_schema()
        stand_in_port, service_port, relay_port = free_port(), free_port(), free_port()
        stand_in_url = f"http://127.0.0.1:{stand_in_port}"
        service_env = {
            "PROMPTSHIP_DATABASE_URL": f"sqlite:///{db}",  # the ledger the bench mints the run's key in
            "PROMPTSHIP_LLM__OLLAMA_BASE_URL": stand_in_url,
            "PROMPTSHIP_LLM__OPENROUTER_BASE_URL": stand_in_url + "/v1",
            "PROMPTSHIP_LLM__OPENROUTER_API_KEY": "sk-or-v1-bench",
            "PROMPTSHIP_BUDGET__CLOUD_DAILY_USD": "1000000",
        }

        def gateway_for(endpoint: str, *, passthrough: bool = True) -> LiteLLMGateway:
            return LiteLLMGateway(
                policy=RoutingPolicy.default(),
                scanner=scanner,
                ledger=ledger,
                endpoints=ProviderEndpoints(endpoint, endpoint + "/v1", SecretStr("sk-or-v1-bench")),
                gateway_url="http://127.0.0.1:9",
                stream_passthrough=passthrough,
            )

        gateway = gateway_for(llm.base_url)
        litellm_streaming_gateway = gateway_for(llm.base_url, passthrough=False)
        python = sys.executable
        with (
            server_process(
                [python, "-m", "promptship_sandbox.llm_server", "--port", str(stand_in_port)],
                {},
                f"{stand_in_url}/v1/models",
                Path(tmp) / "stand-in.log",
            ) as stand_in_proc,
            server_process(
                [python, "-m", "promptship.cli", "gateway", "serve", "--port", str(service_port)],
                service_env,
                f"http://127.0.0.1:{service_port}/health",
                Path(tmp) / "gateway.log",
            ) as service_proc,
            server_process(
                [python, "-m", "promptship.bench.bare_relay", "--port", str(relay_port), "--upstream", stand_in_url],
                {},
                f"http://127.0.0.1:{relay_port}/health",
                Path(tmp) / "relay.log",
            ),
            serve_asgi(create_gateway_app(gateway, gateway.ledger)) as inproc_url,
            serve_asgi(create_gateway_app(litellm_streaming_gateway, ledger)) as litellm_url,
        ):
            service_url = f"http://127.0.0.1:{service_port}"
            decision = gateway.route(base, task_class="complex_code")
            access = gateway.agent_access("bench", decision, 1e9)
            key = access.api_key.get_secret_value()
            auth = {"authorization": f"Bearer {key}"}

            def body(stream: bool = False) -> dict[str, object]:
                out: dict[str, object] = {"model": "openai/gpt-4o", "messages": fresh_messages()}
                return {**out, "stream": True} if stream else out

            with httpx.Client(timeout=30) as http:
                calls: dict[str, list[float]] = {"direct": [], "service": [], "direct_inproc": [], "inproc": []}
                sides = (
                    ("direct", f"{stand_in_url}/v1/chat/completions", {}),
                    ("service", f"{service_url}/v1/chat/completions", auth),
                    ("direct_inproc", f"{llm.base_url}/v1/chat/completions", {}),
                    ("inproc", f"{inproc_url}/v1/chat/completions", auth),
                )
                for i in range(WARMUP + N):
                    for side, url, headers in sides:
                        t0 = time.perf_counter()
                        http.post(url, json=body(), headers=headers).raise_for_status()
                        if i >= WARMUP:
                            calls[side].append((time.perf_counter() - t0) * 1000)

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

                def script(where: str, reply: str | None) -> None:
                    if reply is None:
                        return
                    if where == "process":
                        http.post(f"{stand_in_url}/_stand_in/script", json={"model": "*", "replies": [reply]})
                    else:
                        llm.script("*", [reply])

                stream_sides = (
                    ("direct", "process", f"{stand_in_url}/v1/chat/completions", {}),
                    ("service", "process", f"{service_url}/v1/chat/completions", auth),
                    ("bare", "process", f"http://127.0.0.1:{relay_port}/v1/chat/completions", {}),
                    ("direct_inproc", "inproc", f"{llm.base_url}/v1/chat/completions", {}),
                    ("inproc", "inproc", f"{inproc_url}/v1/chat/completions", auth),
                    ("litellm", "inproc", f"{litellm_url}/v1/chat/completions", auth),
                )
                streams: dict[str, dict[str, list[tuple[float, float, int]]]] = {}
                service_cpu: dict[str, float] = {}
                for label, reply in (("short", None), ("long", LONG_REPLY)):
                    runs: dict[str, list[tuple[float, float, int]]] = {s[0]: [] for s in stream_sides}
                    cpu = 0.0
                    for i in range(WARMUP + STREAMS):
                        # take turns, so that all see the same moments of a shared machine
                        for side, where, url, headers in stream_sides:
                            script(where, reply)
                            before = cpu_seconds(service_proc.pid) if side == "service" else 0.0
                            sample = stream(url, headers)
                            if i >= WARMUP:
                                runs[side].append(sample)
                                if side == "service":
                                    cpu += cpu_seconds(service_proc.pid) - before
                    streams[label] = runs
                    service_cpu[label] = cpu / STREAMS * 1000
                # What a caller that streams through LiteLLM (as the code agent does) sees: LiteLLM as the client of
                # both paths, so its own per-chunk parsing is paid on each side, as it is in use.
                import litellm

                def litellm_client_stream(api_base: str, model: str, api_key: str) -> tuple[float, float, int]:
                    t0 = time.perf_counter()
                    first, chunks = float("nan"), 0
                    reply_stream: Any = litellm.completion(
                        model=model,
                        api_base=api_base,
                        api_key=api_key,
                        messages=fresh_messages(),
                        num_retries=0,
                        max_retries=0,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                    for chunk in reply_stream:
                        chunks += 1
                        if first != first and chunk.choices and chunk.choices[0].delta.content:
                            first = (time.perf_counter() - t0) * 1000
                    return (time.perf_counter() - t0) * 1000, first, chunks

                client_sides = (
                    ("direct", f"{stand_in_url}/v1", "openai/gpt-4o", "sk-or-v1-bench"),
                    ("service", f"{service_url}/v1", access.model, key),
                )
                via_litellm: dict[str, dict[str, list[tuple[float, float, int]]]] = {}
                for label, reply in (("short", None), ("long", LONG_REPLY)):
                    runs = {side[0]: [] for side in client_sides}
                    for i in range(WARMUP + STREAMS):
                        for side, api_base, model, api_key in client_sides:
                            script("process", reply)
                            sample = litellm_client_stream(api_base, model, api_key)
                            if i >= WARMUP:
                                runs[side].append(sample)
                    via_litellm[label] = runs
                stand_in_cpu = cpu_seconds(stand_in_proc.pid)
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
            litellm_streaming = _time(
                lambda: litellm_client_stream(llm.base_url + "/v1", "openrouter/openai/gpt-4o", "sk-or-v1-bench"),
                STREAMS,
            )
            gate = _time(lambda: scanner.scan_messages(fresh_messages()), N)
            repeated = fresh_messages()
            gate_hit = _time(lambda: scanner.scan_messages(repeated), N)

            def ledger_round() -> None:
                r = ledger.reserve("bench-ledger", "cloud", 0.01)
                ledger.release(r)

            ledger_ms = _time(ledger_round, N)

    print(
        f"   (load average {load_before:.1f} → {_load():.1f} on {os.cpu_count()} CPUs; every call sends a prompt not"
        " sent before; stand-in and gateway service are processes of their own unless a line says in-process)"
    )
    print(f"   (stand-in, service and bare relay served by uvicorn on {uvicorn_stack()})")
    d_calls, s_calls = calls["direct"], calls["service"]
    print(f"   provider direct (stand-in process, no gateway): {summary(d_calls)}")
    print(f"   gateway service process over HTTP:             {summary(s_calls)}")
    print(f"   in-process: provider direct:                   {summary(calls['direct_inproc'])}")
    print(f"   in-process: gateway service over HTTP:         {summary(calls['inproc'])}")
    print(f"   LiteLLM client alone (no gate, no ledger):     {summary(litellm_alone)}")
    print(f"   adapter in-process (gate+budget+LiteLLM):      {summary(adapter)}")
    print(f"   layer: gate scan of the request:               {summary(gate)}")
    print(f"   layer: gate, cache hit (same request again):   {summary(gate_hit)}")
    print(f"   layer: ledger reserve+release (SQLite):        {summary(ledger_ms)}")
    paired_call = statistics.median(s - d for s, d in zip(s_calls, d_calls, strict=True))
    print(
        f"   overhead per call (processes): median +{statistics.median(s_calls) - statistics.median(d_calls):.2f} ms "
        f"(paired +{paired_call:.2f} ms), p99 +{percentile(s_calls, 99) - percentile(d_calls, 99):.2f} ms"
    )
    print(f"   LiteLLM client alone, streaming (short):       {summary(litellm_streaming)}")
    names = {
        "service": ("direct", "service process"),
        "bare": ("direct", "bare relay process (no gateway work: the floor of a Python hop)"),
        "inproc": ("direct_inproc", "in-process service"),
        "litellm": ("direct_inproc", "in-process service, LiteLLM parsing every chunk"),
    }
    for label, runs in streams.items():
        for direct_side, name in (("direct", "direct"), ("direct_inproc", "in-process direct")):
            d_total, _, d_events = zip(*runs[direct_side], strict=True)
            print(
                f"   streaming {label} {name} ({statistics.median(d_events):.0f} SSE events): {summary(list(d_total))}"
            )
        for side, (direct_side, name) in names.items():
            print_paired(label, name, "SSE events", runs[direct_side], runs[side])
        print(f"   streaming {label}: gateway process CPU per stream {service_cpu[label]:.2f} ms")
    for label, runs in via_litellm.items():
        name = "LiteLLM as the client of both"
        d_total, _, d_chunks = zip(*runs["direct"], strict=True)
        print(
            f"   streaming {label} {name}, direct ({statistics.median(d_chunks):.0f} chunks): {summary(list(d_total))}"
        )
        print_paired(label, f"{name}, service process", "chunks", runs["direct"], runs["service"])
    print(f"   (stand-in process CPU in all: {stand_in_cpu:.1f} s)")
