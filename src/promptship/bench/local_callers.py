"""The real local model's callers end to end (``make local-model-install``): the chat app's ``/chat`` through its
backend process and the gateway service (an app's key, caller ``chat``), and the CI-log summary of repair
prompts (``complete(ci_summary_call(...))``, caller ``summarize_ci_log``) on real failing pytest logs.

Every sample is distinct (its own message or its own failing test), so llama.cpp's prompt-prefix reuse does not
turn one into a cache hit. Latency and tokens are the ledger's (``llm_calls.latency_ms``). For the summaries it
also counts how many quote the log's failing assertion exactly — what a hint is worth, not a quality score.

    python -m promptship.bench local_callers    # PROMPTSHIP_BENCH_LOCAL_CALLERS_N samples per caller (default 5)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHATS = (
    "Say hello to the team.",
    "What is a good name for a cat?",
    "Tell me a fun fact about owls.",
    "How do I boil an egg?",
    "Suggest a title for a blog post about gardens.",
    "Name three colours of the sea.",
    "What should I pack for a picnic?",
    "Give me a tip for writing clear e-mails.",
)


def _failing_log(work: Path, i: int) -> tuple[str, str]:
    """A real red pytest run (one failing test) and the assertion it reports."""
    d = work / f"red-{i}"
    d.mkdir()
    factor = i + 3  # f(3) == 6 holds only for factor 2: every run fails
    (d / f"test_mod{i}.py").write_text(
        f"def f{i}(x):\n    return x * {factor}\n\n\ndef test_f{i}_doubles():\n    assert f{i}(3) == 6\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"test_mod{i}.py"],
        cwd=d,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return run.stdout, f"assert {3 * factor} == 6"


def run() -> None:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    import httpx
    from sqlalchemy import select

    from promptship.domain.instructions import CI_SUMMARY_CALLER, ci_summary_call
    from promptship.domain.results import CheckOutcome, CIResult
    from promptship.servers.gateway import create_gateway_app
    from promptship.settings import Settings
    from promptship.store.ledger import LLMCallRow
    from promptship.wiring import build_llm_gateway
    from promptship_sandbox.chatapp import running_backend
    from promptship_sandbox.llm_server import serve_asgi
    from promptship_sandbox.local_model import (
        local_model_installed,
        local_model_settings,
        running_local_model,
        warm_up,
    )

    ok, why = local_model_installed()
    if not ok:
        raise RuntimeError(why)
    n = int(os.environ.get("PROMPTSHIP_BENCH_LOCAL_CALLERS_N", "5"))
    load_before = os.getloadavg()[0]
    quoted = 0
    with tempfile.TemporaryDirectory() as tmp, running_local_model(Path(tmp) / "local-model") as server:
        work = Path(tmp)
        warm_up(server)
        gateway = build_llm_gateway(local_model_settings(Settings(database_url=f"sqlite:///{work / 'b.db'}"), server))
        with serve_asgi(create_gateway_app(gateway, gateway.ledger)) as url:
            gateway.gateway_url = url
            access = gateway.app_access("chat")
            env = {"LLM_MAX_TOKENS": "48", "LLM_TIMEOUT_SECONDS": "300"}
            key = access.api_key.get_secret_value()
            with running_backend(
                access.base_url, work / "logs", model="promptship-policy", api_key=key, extra_env=env
            ) as backend:
                for i in range(n):
                    message = f"{CHATS[i % len(CHATS)]} ({i})"
                    answer = httpx.post(f"{backend.url}/chat", json={"message": message}, timeout=330)
                    answer.raise_for_status()
        for i in range(n):
            log, assertion = _failing_log(work, i)
            check = CheckOutcome(name="test", state="failure", log_excerpt=log)
            call = ci_summary_call("bench-summaries", CIResult(verdict="failed", sha="0" * 40, checks=(check,)))
            assert call is not None
            reply = gateway.complete(call)
            quoted += assertion in reply.content
        with gateway.ledger.engine.connect() as conn:
            rows = conn.execute(select(LLMCallRow.__table__)).all()
        close = getattr(gateway.scanner, "close", None)
        if close is not None:
            close()
    for step, what in (("chat", "chat app /chat via gateway"), (CI_SUMMARY_CALLER, "CI-log summary")):
        mine = [r for r in rows if r.step == step]
        latency = [r.latency_ms or 0.0 for r in mine]
        prompt = [r.prompt_tokens for r in mine]
        completion = [r.completion_tokens for r in mine]
        print(
            f"   {what} ({step}): {len(mine)} calls, latency median {statistics.median(latency):.0f} ms, "
            f"max {max(latency):.0f} ms; prompt tokens {min(prompt)}-{max(prompt)}, "
            f"completion tokens {min(completion)}-{max(completion)}"
        )
    print(f"   summaries quoting the log's failing assertion exactly: {quoted} of {n}")
    print(f"   load average before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f} (2 cores)")
