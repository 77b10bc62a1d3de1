"""Benchmark of the chat app's backend (examples/chat-app), run as the sandbox kubelet runs it.

Prints: time from spawning `python -m app` to the first 200 on /health (readiness), against the baseline of
what readiness would cost with LiteLLM imported eagerly (`python -c "import litellm"` in the same run); the
first chat's latency (which may wait for the background LiteLLM import) and the steady-state chat latency,
both through the real LiteLLM client against the LLM stand-in on 127.0.0.1.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from promptship.bench.stats import summary

BACKEND_DIR = Path(__file__).resolve().parents[3] / "examples" / "chat-app" / "backend"
MODEL = "bench-model"


def _env(llm_base_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLM_", "PROMPTSHIP_", "OPENAI_"))}
    env.update(
        HOST="127.0.0.1",
        PORT=str(port),
        LLM_API_BASE=f"{llm_base_url}/v1",
        LLM_API_KEY="bench-key",
        LLM_MODEL=MODEL,
        LLM_MAX_RETRIES="0",
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    return env


def _start(llm_base_url: str) -> tuple[subprocess.Popen[bytes], str, float]:
    """Spawn the backend; return it, its URL and the seconds until /health answered 200."""
    from promptship_sandbox.net import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=BACKEND_DIR,
        env=_env(llm_base_url, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = t0 + 60
    while True:
        if proc.poll() is not None:
            raise OSError(f"backend exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        if time.perf_counter() > deadline:
            proc.kill()
            raise TimeoutError("backend not ready after 60 s")
        time.sleep(0.02)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run(starts: int = 3, chats: int = 30) -> None:
    from promptship_sandbox.llm_server import running_llm_stand_in

    eager: list[float] = []
    for _ in range(starts):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import fastapi, uvicorn, litellm"],
            check=True,
            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        )
        eager.append(time.perf_counter() - t0)

    ready: list[float] = []
    first: list[float] = []
    steady: list[float] = []
    with running_llm_stand_in() as llm:
        for i in range(starts):
            proc, url, seconds = _start(llm.base_url)
            ready.append(seconds)
            try:
                with httpx.Client(base_url=url, timeout=60) as client:
                    t0 = time.perf_counter()
                    r = client.post("/chat", json={"message": "hello"})
                    first.append(time.perf_counter() - t0)
                    if r.status_code != 200:
                        raise OSError(f"first chat answered {r.status_code}: {r.text[:200]}")
                    if i == 0:
                        for _ in range(chats):
                            t0 = time.perf_counter()
                            client.post("/chat", json={"message": "hello again"}).raise_for_status()
                            steady.append((time.perf_counter() - t0) * 1000)
            finally:
                _stop(proc)

    ready_med, eager_med = statistics.median(ready), statistics.median(eager)
    print(f"   backend readiness (spawn → /health 200): {summary(ready, 's')}")
    print(f"   baseline, LiteLLM imported eagerly (import fastapi+uvicorn+litellm): {summary(eager, 's')}")
    print(f"   readiness / eager-import baseline: {ready_med / eager_med:.2f}x")
    print(f"   first chat after ready (may wait for the background import): {summary(first, 's')}")
    print(f"   steady-state chat via LiteLLM → stand-in: {summary(steady, 'ms')}")


if __name__ == "__main__":
    run()
