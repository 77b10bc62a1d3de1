"""``LiteLLMGateway``: the ``LLMGateway`` port on LiteLLM — policy, sensitive-data gate, budgets, ledger.

For every call, in this order:

1. the gate scans everything that would leave the machine (all messages, the system prompt, tool-call
   arguments, tool results, tool schemas);
2. the routing policy (``promptship.domain.routing``) picks a model *group* — not LiteLLM's tag routing,
   which leaks (RESEARCH.md). Sensitive ⇒ local only, or ``SensitiveDataBlocked``;
3. the ledger reserves the call's most possible cost before it is sent (run cap; daily cap for cloud).
   Over budget, a cloud call is rerouted to a local model or refused (``budget.over_budget``);
4. LiteLLM sends it — ``ollama_chat/…`` to Ollama, ``openai/<alias>`` to a llama.cpp server's OpenAI-compatible
   ``api_base``, ``openrouter/…`` to OpenRouter (the model group's ``backend``) — with the header
   ``x-llm-mode: local|cloud``, the timeout, and our own retries (5xx, 408/429, timeouts, connection errors;
   ``1 + max_retries`` attempts per model group, backoff and Retry-After from ``domain.retrying``; LiteLLM's
   and the OpenAI SDK's own retries are off);
5. on failure the policy's fallback chain is tried: cloud → cloud or local, never local → cloud for a
   sensitive call (every target is checked against the gate's verdict again). When every group failed
   after more than one attempt in all, the error is final (``retryable=False``, "after N attempts"): the
   step layer does not multiply these attempts (docs/CONTRACTS.md, "Retries");
6. the cost is recorded with the provider's token counts and the call's latency: OpenRouter's ``usage.cost``;
   local calls priced by settings; a cloud call without a reported cost is recorded at list price and flagged
   ``cost_missing``.

Exploration (the policy's ``exploration``, off by default): after step 2, a clean call that the policy routed by
itself (``complete``, an app's calls; never the code agent's calls, which keep their run's route) may go to a
candidate of its class instead (``routing.explore_route``: a draw from the call's key). Its reservation also has to
fit the day's exploration budget; when it does not, or the candidate fails, the call goes as the policy decided it.
The ledger row says ``decided_by: exploration``, the policy's own choice and the call's number in the draw's key.

Streams to OpenAI-compatible backends (OpenRouter, llama.cpp) are sent as the request LiteLLM builds, by an
httpx client on the gateway service's event loop, and relayed as the provider's SSE bytes (``_pass_through``:
LiteLLM's per-chunk parsing was most of a stream's cost through the service); Ollama's keep LiteLLM's stream.

LiteLLM is imported lazily (~3–6 s). Its exceptions become ``LLMError`` here and nowhere else, by where they were
raised (``vendor_failure``): the provider's or the network's failures as ``to_llm_error`` translates them;
LiteLLM failing inside its own code (an exception it labels ``APIConnectionError`` without a connection having
failed) as a described, non-retryable error, tried once per group and recorded as failed; an exception raised
in promptship's own code is never translated. Its response objects never leave this module (the gateway
service gets plain OpenAI-format dicts).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import secrets
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from promptship.adapters import sse
from promptship.domain.costs import OverBudget, estimate_cost_usd, estimate_tokens, priced_cost_usd
from promptship.domain.gate import GateResult, is_not_a_secret, outbound_texts
from promptship.domain.redaction import redact
from promptship.domain.replay import PriceSource, RecordedDecision
from promptship.domain.request import TaskClass, branch_for, conversation_id_for
from promptship.domain.results import LLMCall, LLMReply, RouteDecision, RunAccess, Usage
from promptship.domain.retrying import after_attempts, backoff_delay, retry_after_s
from promptship.domain.routing import (
    ModelSpec,
    RoutingPolicy,
    allowed_fallbacks,
    decide_route,
    exploration_candidates,
    exploration_key,
    explore_route,
)
from promptship.errors import BudgetExceeded, ConfigError, LLMError, SensitiveDataBlocked
from promptship.ports import AgentLLMAccess, AppLLMAccess, Scanner
from promptship.store.ledger import CostLedger, Reservation

if TYPE_CHECKING:
    import httpx

MODE_HEADER = "x-llm-mode"
# Backends that speak OpenAI's chat-completions SSE. Their streams are relayed as the provider's bytes (LiteLLM
# builds the request; ``_pass_through``); Ollama's native NDJSON stream keeps LiteLLM's own streaming.
PASS_THROUGH_BACKENDS = frozenset({"llamacpp", "openrouter"})
_PASS_THROUGH_PROVIDERS = frozenset({"openai", "openrouter"})  # LiteLLM providers whose request is plain OpenAI
_CALLER = re.compile(r"[a-z][a-z0-9_]{0,63}")


@dataclass(frozen=True)
class ProviderEndpoints:
    """Where the providers are. In the sandbox Ollama and OpenRouter point at the LLM stand-in, llama.cpp at
    the real local model server (``scripts/local-model.sh``) when it runs."""

    ollama_base_url: str
    openrouter_base_url: str
    openrouter_api_key: SecretStr | None = None
    llamacpp_base_url: str | None = None  # OpenAI-compatible, e.g. http://127.0.0.1:8081/v1


# Backoff between attempts on one model group; a Retry-After above the cap ends the group's attempts instead
# (the next group in the fallback chain is tried rather than calling the limited one too soon).
RETRY_BASE_S = 0.5
RETRY_CAP_S = 10.0
# A call with a deadline starts no request (no retry, no fallback) with less than this left of it.
MIN_REQUEST_S = 0.5


# LiteLLM's own loggers. Their DEBUG records carry whole requests and replies (the messages, the curl command of
# each call, the token counter's input): with a DEBUG root logger (``--log-level DEBUG``, PREFECT_LOGGING_*, a test)
# every prompt, tool result and the secrets in them would land in the log files. The leak scan found it.
LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")


class _DropDebug(logging.Filter):
    """Drops records below INFO (a filter, not a level: LiteLLM sets its loggers' levels itself when asked)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


_DROP_DEBUG = _DropDebug()


def keep_litellm_debug_out_of_logs() -> None:
    """Install the filter on LiteLLM's loggers (idempotent)."""
    for name in LITELLM_LOGGERS:
        logger = logging.getLogger(name)
        if _DROP_DEBUG not in logger.filters:
            logger.addFilter(_DROP_DEBUG)


def new_key(prefix: str) -> str:
    """A key in promptship's own format (``prefix`` + 43 url-safe base64; the gate's rule ``promptship_key``).
    A draw the gate would read as a placeholder (it spells ``fake``, ``sample``… in one case, as a word is
    written: ``fake``, ``FAKE``, ``Fake``) is drawn again, so that every key promptship mints is recognised
    wherever it leaks."""
    while is_not_a_secret(key := prefix + secrets.token_urlsafe(32)):
        pass
    return key


class _GroupFailed(Exception):
    """One model group's last error and how many requests were sent to it (internal). ``unheard``: LiteLLM
    failed on the last attempt without a word from the provider or the network (``_translate``) — the provider
    may have answered (and charged), so the call is recorded as failed instead of released."""

    def __init__(self, error: LLMError, attempts: int, *, unheard: bool = False):
        super().__init__(str(error))
        self.error = error
        self.attempts = attempts
        self.unheard = unheard


@dataclass
class _Sent:
    """One successful provider call (internal)."""

    decision: RouteDecision
    spec: ModelSpec
    reservation: Reservation
    fallback_used: bool
    response: Any  # LiteLLM's response or stream, or an ``_OpenSSE`` (a pass-through stream)
    started: float  # time.monotonic() before the first request of the call
    caller: str | None = None  # the caller the policy's ``callers`` was asked about (recorded for replay)
    explored_from: str | None = None  # an explored call: the policy's own choice
    explore_seq: int | None = None  # an explored call: its number in the draw's key


@dataclass(frozen=True)
class _Exploring:
    """A call the exploration setting sends to a candidate (internal): the policy's own decision, the call's number."""

    original: RouteDecision
    seq: int


@dataclass
class _OpenSSE:
    """A provider's SSE answer, status checked, body not read yet: relayed as it is (internal). Its response
    belongs to the event loop of the service that opened it."""

    response: httpx.Response


def to_llm_error(exc: BaseException, model: str) -> LLMError:
    """LiteLLM's (OpenAI-style) and httpx's exceptions → ``LLMError``; retryable for 5xx, 408/409/429,
    timeouts and connection failures. The provider's message is redacted and shortened (without the traceback
    LiteLLM appends to some). For an exception raised inside a vendor call use ``vendor_failure``, which decides
    first whether it is a provider's failure at all."""
    import httpx
    import openai

    status = getattr(exc, "status_code", None)
    if status is None and isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code  # the pass-through stream's own request (``_open_sse``)
    status = status if isinstance(status, int) else None
    # LiteLLM keeps the provider's headers in ``litellm_response_headers``; the ``response`` on its exceptions
    # is one it made up, without them. Plain OpenAI/httpx errors carry the real response.
    headers = getattr(exc, "litellm_response_headers", None)
    if not isinstance(headers, Mapping) or not headers:
        response = getattr(exc, "response", None)
        headers = response.headers if isinstance(response, httpx.Response) else {}
    retry_after = retry_after_s(headers, time.time(), default_s=None)
    timeout = isinstance(exc, openai.APITimeoutError | httpx.TimeoutException)
    connection = isinstance(exc, openai.APIConnectionError | httpx.TransportError) and not timeout
    if timeout:
        status = status or 408
    retryable = timeout or connection or status in (408, 409, 425, 429) or (status is not None and status >= 500)
    # LiteLLM appends its traceback to some messages (file paths, code lines): only the message itself is kept
    message = str(exc).split("Traceback (most recent call last)")[0]
    detail = redact(" ".join(message.split()))[:300]
    return LLMError(
        f"{model}: {type(exc).__name__} (HTTP {status if status is not None else '-'}): {detail}",
        retryable=retryable,
        status=status,
        retry_after_s=retry_after,
    )


# Packages whose code runs inside a provider call (LiteLLM and what it calls). An exception raised in one of them
# is the vendor's; one raised anywhere else (promptship's own code, a test's) is ours and is never translated.
VENDOR_PACKAGES = frozenset(
    {
        "litellm",
        "openai",
        "httpx",
        "httpcore",
        "h11",
        "h2",
        "anyio",
        "sniffio",
        "aiohttp",
        "pydantic",
        "pydantic_core",
        "tiktoken",
        "tokenizers",
        "jinja2",
    }
)
_MAX_CHAIN = 16
_FILE_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it was raised from or while handling (``__cause__``, else ``__context__``), bounded."""
    links: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(links) < _MAX_CHAIN:
        seen.add(id(current))
        links.append(current)
        current = current.__cause__ or current.__context__
    return links


def raised_in(exc: BaseException) -> str | None:
    """The module that raised ``exc``: the innermost frame of its traceback that is not the standard library's
    (a ``json.JSONDecodeError`` raised in ``json`` for LiteLLM was raised by LiteLLM); None without a traceback."""
    import sys

    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        module = str(frame.f_globals.get("__name__") or "")
        if module.split(".")[0] not in sys.stdlib_module_names:
            return module
    return None


def _is_vendor_package(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in VENDOR_PACKAGES


def _network_or_status(exc: BaseException) -> bool:
    """The provider (or the network to it) said so: a transport failure, a timeout, an HTTP error status or an
    error event (httpx's, httpcore's or the OpenAI SDK's exceptions, raised on what came over the wire;
    LiteLLM's own classes subclass the SDK's but are only labels and do not count)."""
    import httpx

    if isinstance(exc, OSError) and not isinstance(exc, _FILE_ERRORS):
        return True  # refused, reset, unreachable, DNS, TLS, socket timeouts
    if isinstance(exc, httpx.TransportError | httpx.TimeoutException | httpx.HTTPStatusError):
        return True
    return type(exc).__module__.split(".")[0] in ("httpcore", "openai")


def vendor_failure(exc: BaseException, group: str) -> LLMError | None:
    """An exception raised inside a vendor call (``litellm.completion``, the pass-through's request building
    and sending) as ``LLMError``; None when it is not the vendor's (re-raise it: a bug of ours must surface).

    - a provider's or the network's failure anywhere in the exception's chain (an error status, a refused or
      reset connection, a timeout) → ``to_llm_error``: retryable for 5xx, 408/409/425/429, timeouts and
      connection failures;
    - else an exception that is not a vendor's own type (``KeyError``, ``AttributeError``, a bare
      ``Exception``…) *raised in a vendor package's code* (``VENDOR_PACKAGES``, by the innermost non-stdlib frame
      of its traceback) → LiteLLM failed inside its provider code: on a request it cannot build, or on a
      provider answer it cannot read. LiteLLM labels most of these ``APIConnectionError`` (HTTP 500) — which
      used to be retried as a network failure, 1 + max_retries times per group of the fallback chain. Not
      retryable: the same call fails the same way. The message names the group and the exception types and
      where they were raised, never the exception's text (LiteLLM puts its traceback and parts of the request
      there);
    - the same kind of exception raised in promptship's code (our ``_open_sse`` runs inside the call), or
      anywhere that is not a vendor package → None;
    - the rest (LiteLLM's own exceptions for what it checked itself, e.g. a ``BadRequestError``, or its
      ``UnsupportedContentTypeError`` labelled ``APIConnectionError``, HTTP 500) → ``to_llm_error``, never
      retryable: no provider answered and no connection failed.
    """
    translated = _translate(exc, group)
    return None if translated is None else translated[0]


def _translate(exc: BaseException, group: str) -> tuple[LLMError, bool] | None:
    """``vendor_failure``, and whether LiteLLM failed without a word from the provider or the network (True):
    then the provider may have answered — LiteLLM fails on requests before sending them and on answers after
    reading them (its token counter refusing an audio part without data fails after the provider answered) —
    and nothing here can tell which."""
    links = _exception_chain(exc)
    if any(_network_or_status(link) for link in links):
        return to_llm_error(exc, group), False
    foreign = [link for link in links if not _is_vendor_package(type(link).__module__)]
    if not foreign:
        error = to_llm_error(exc, group)
        if error.retryable:  # LiteLLM's own label ("HTTP 500"), not the provider's answer: the same call fails again
            error = LLMError(
                f"{error} [raised by LiteLLM itself, not by the provider: not retried]",
                retryable=False,
                status=error.status,
            )
        return error, True
    origin = foreign[-1]  # the first one raised
    where = raised_in(origin)
    if not _is_vendor_package(where):
        return None
    kinds = " from ".join(dict.fromkeys(type(link).__name__ for link in [exc, *foreign]))
    error = LLMError(
        f"{group}: LiteLLM failed inside its provider code ({kinds}, raised in {where}): a request it cannot "
        "build or a provider answer it cannot read; not retried",
        retryable=False,
    )
    return error, True


class LiteLLMGateway:
    """Every LLM call of the pipeline: policy → gate → budget → LiteLLM → ledger. Implements ``LLMGateway``."""

    def __init__(
        self,
        *,
        policy: RoutingPolicy,
        scanner: Scanner,
        ledger: CostLedger,
        endpoints: ProviderEndpoints,
        gateway_url: str,
        max_retries: int = 3,
        timeout_s: float = 30.0,
        over_budget: OverBudget = "reroute_local",
        local_cost_per_1k_tokens_usd: float = 0.0,
        local_available: bool | Collection[str] = True,
        default_max_tokens: int = 2048,
        allow_values: Collection[str] = (),
        sleep: Callable[[float], None] = time.sleep,
        stream_passthrough: bool = True,
    ):
        self.policy = policy
        self.scanner = scanner
        self.ledger = ledger
        self.endpoints = endpoints
        self.gateway_url = gateway_url.rstrip("/")
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        self.over_budget: OverBudget = over_budget
        self.local_cost_per_1k_tokens_usd = local_cost_per_1k_tokens_usd
        self.local_available = local_available
        self.default_max_tokens = default_max_tokens
        self.allow_values = frozenset(v for v in allow_values if v)
        self.sleep = sleep
        # Streams to OpenAI-compatible backends: LiteLLM builds the request, an httpx client on the service's
        # event loop sends it and the provider's SSE bytes are relayed (``_pass_through``). False: LiteLLM
        # streams every call itself (what Ollama's groups always get).
        self.stream_passthrough = stream_passthrough
        # one client per event loop (its connections belong to the loop), made on first use
        self._async_http: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._policy_hash: str | None = None  # kept in the ledger on the first settled call
        # LiteLLM's Ollama provider falls back to this for /api/show (RESEARCH.md); never the default host.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ["OLLAMA_API_BASE"] = endpoints.ollama_base_url
        keep_litellm_debug_out_of_logs()

    # ---- the port ---------------------------------------------------------------------------------------
    def route(self, text: str, *, task_class: TaskClass | None = None, force_local: bool = False) -> RouteDecision:
        """Decide class, model group and local/cloud for ``text`` (the gate runs on it), without a call."""
        return decide_route(
            text,
            policy=self.policy,
            findings=self._allowed(self.scanner.scan(text), text),
            task_class=task_class,
            force_local=force_local,
            local_available=self.local_available,
        )

    def complete(self, call: LLMCall) -> LLMReply:
        """Route, gate, budget-check and send one chat completion; record its cost against ``call.run_key``."""
        messages = [{"role": m.role, "content": m.content} for m in call.messages]
        decision = self._decide(
            messages, None, task_class=call.task_class, force_local=call.force_local, caller=call.step
        )
        decision, exploring = self._explore(call.run_key, call.step, decision)
        params: dict[str, Any] = {}
        if call.max_tokens is not None:
            params["max_tokens"] = call.max_tokens
        deadline = time.monotonic() + call.deadline_s if call.deadline_s is not None else None
        sent = self._send_with_policy(
            call.run_key,
            call.step,
            decision,
            messages,
            None,
            params,
            stream=False,
            deadline=deadline,
            exploring=exploring,
        )
        sent.caller = call.step
        usage = self._usage(sent.spec, sent.response.usage)
        self._settle(call.run_key, call.step, sent, usage)
        content = sent.response.choices[0].message.content or ""
        return LLMReply(
            content=content,
            decision=sent.decision,
            model=sent.spec.litellm_model,
            usage=usage,
            fallback_used=sent.fallback_used,
        )

    def agent_access(self, run_key: str, decision: RouteDecision, budget_usd: float) -> AgentLLMAccess:
        """A per-run API key for the code agent's own traffic through the gateway service (only its hash is
        stored). ``model`` is spelled for LiteLLM-based agents (``openai/<group>`` at our ``/v1``)."""
        key = new_key("psk-run-")
        self.ledger.open_run(run_key, budget_usd=budget_usd)
        self.ledger.add_access_key(key, run_key, decision, budget_usd)
        spec = self.policy.spec(decision.model)
        return AgentLLMAccess(
            base_url=f"{self.gateway_url}/v1",
            api_key=SecretStr(key),
            model=f"openai/{decision.model}",
            input_cost_per_token=spec.input_cost_per_token,
            output_cost_per_token=spec.output_cost_per_token,
        )

    def expire_agent_access(self, run_key: str) -> None:
        """The attempt ``run_key`` ended: its agent keys stop working (the gateway service answers 401 to them).
        A key lives from ``agent_access`` to the end of the attempt that asked for it, never longer."""
        self.ledger.expire_access_keys(run_key)

    def app_access(self, caller: str, *, run_key: str | None = None, budget_usd: float | None = None) -> AppLLMAccess:
        """An app's key for the gateway service (e.g. the chat app's, caller ``chat``): each of its calls is
        routed by the policy with ``caller`` (``callers`` in the policy file) and recorded under ``caller`` as the
        step and ``run_key`` (default ``app-<caller>``) as the run. Only the key's hash is stored."""
        if not _CALLER.fullmatch(caller):
            raise ConfigError(
                f"caller {caller!r}: use lower-case letters, digits and '_' (at most 64, a letter first), "
                "the name the routing policy's `callers` uses, e.g. chat"
            )
        key = new_key("psk-app-")
        run_key = run_key or f"app-{caller}"
        self.ledger.add_caller_key(key, caller, run_key, budget_usd)
        return AppLLMAccess(base_url=f"{self.gateway_url}/v1", api_key=SecretStr(key), caller=caller, run_key=run_key)

    def run_cost_usd(self, run_key: str) -> float:
        """What the ledger has recorded for a run so far (USD)."""
        return self.ledger.run_cost_usd(run_key)

    def redact(self, text: str) -> str:
        """``text`` with everything the gate finds (and the always-hidden token formats) replaced."""
        return redact(text, self.scanner.scan(text).spans())

    # ---- for the gateway service ------------------------------------------------------------------------
    def open_run(self, run_key: str, *, budget_usd: float | None = None, repository: str | None = None) -> None:
        """Tell the ledger a run's budget and repository (for the per-run cap and the per-repository totals)."""
        self.ledger.open_run(run_key, budget_usd=budget_usd, repository=repository)

    def access_for(self, api_key: str) -> RunAccess | None:
        """The run a per-run key was minted for, or None."""
        return self.ledger.access_for(api_key)

    def model_groups(self) -> list[ModelSpec]:
        return list(self.policy.models.values())

    def chat(self, access: RunAccess, body: Mapping[str, Any], *, step: str = "agent") -> dict[str, Any]:
        """One OpenAI-format chat completion for the run of ``access``; returns the OpenAI-format response."""
        messages, tools, params = _split_body(body)
        step = access.caller or step  # an app's calls are recorded under its caller
        decision, exploring = self._explore_app(access, step, self._decide_for_run(access, messages, tools))
        sent = self._send_with_policy(
            access.run_key,
            step,
            decision,
            messages,
            tools,
            params,
            stream=False,
            exploring=exploring,
            key_hash=access.key_hash,
        )
        usage = self._usage(sent.spec, sent.response.usage)
        self._settle(access.run_key, step, sent, usage)
        out = sent.response.model_dump(mode="json", exclude_none=True)
        out["model"] = sent.decision.model
        out.pop("_hidden_params", None)
        out["usage"] = _usage_json(usage)
        return out

    async def stream_chat(
        self, access: RunAccess, body: Mapping[str, Any], *, step: str = "agent"
    ) -> AsyncIterator[bytes]:
        """Like ``chat`` with ``stream: true``, from the gateway service's event loop: routing, gate, budget and
        the provider connection happen now (errors raise here); the returned iterator yields the SSE body — the
        provider's chunks, then a usage chunk with the ledger's figures, then ``data: [DONE]`` — and records the
        call when it ends (also when the client goes away). A provider failing mid-stream raises ``LLMError``
        from the iterator, and the call is recorded as failed.

        OpenAI-compatible backends (``PASS_THROUGH_BACKENDS``) are relayed as the provider's bytes on the event
        loop, looking only into the usage, an error event and the end; the others are LiteLLM's stream, read
        chunk by chunk by a thread of its own."""
        import anyio.to_thread

        loop = asyncio.get_running_loop()
        messages, tools, params = _split_body(body)
        step = access.caller or step  # an app's calls are recorded under its caller
        prompt_tokens = self._prompt_tokens(messages, tools)

        def open_stream() -> _Sent:  # the policy in a worker thread (the ledger is blocking); I/O on the loop
            decision, exploring = self._explore_app(access, step, self._decide_for_run(access, messages, tools))
            return self._send_with_policy(
                access.run_key,
                step,
                decision,
                messages,
                tools,
                params,
                stream=True,
                loop=loop,
                exploring=exploring,
                key_hash=access.key_hash,
            )

        sent = await anyio.to_thread.run_sync(open_stream)
        if isinstance(sent.response, _OpenSSE):
            return self._pass_through(access.run_key, step, sent, prompt_tokens)
        return _read_in_thread(_sse_body(self._relay(access.run_key, step, sent, prompt_tokens)))

    # ---- internals --------------------------------------------------------------------------------------
    def _decide(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]] | None,
        *,
        task_class: TaskClass | None,
        force_local: bool,
        caller: str | None = None,
    ) -> RouteDecision:
        gate = self._gate(messages, tools)
        return decide_route(
            _classification_text(messages),
            policy=self.policy,
            findings=gate,
            task_class=task_class,
            force_local=force_local,
            local_available=self.local_available,
            caller=caller,
        )

    def _explore(self, run_key: str, step: str, decision: RouteDecision) -> tuple[RouteDecision, _Exploring | None]:
        """The exploration setting's say on a call the policy decided (``routing.explore_route``). Off, or a call
        that cannot be explored: the decision as it is, and no ledger read."""
        if not exploration_candidates(self.policy, decision):
            return decision, None
        seq = self.ledger.step_calls(run_key, step)
        explored = explore_route(
            decision,
            policy=self.policy,
            key=exploration_key(run_key, step, seq),
            local_available=self.local_available,
        )
        if explored is None:
            return decision, None
        return explored, _Exploring(original=decision, seq=seq)

    def _explore_app(
        self, access: RunAccess, step: str, decision: RouteDecision
    ) -> tuple[RouteDecision, _Exploring | None]:
        """An app's calls are routed one by one and may be explored; a run's (the code agent's) keep its route."""
        if access.caller is None:
            return decision, None
        return self._explore(access.run_key, step, decision)

    def _decide_for_run(
        self, access: RunAccess, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None
    ) -> RouteDecision:
        """The agent's calls keep the run's decision unless the gate finds sensitive data now (⇒ local).
        Identifiers the pipeline itself made for the run (run key, branch, conversation id) are not secrets.
        An app's calls (a key with a caller) are routed one by one, by the policy, for that caller."""
        pinned = access.decision
        if pinned is None or access.caller is not None:
            return self._decide(messages, tools, task_class=None, force_local=False, caller=access.caller)
        key = access.run_key
        gate = self._gate(messages, tools, (key, branch_for(key), conversation_id_for(key)))
        if not gate.sensitive and not pinned.sensitive and pinned.model in self.policy.models:
            return pinned
        return decide_route(
            _classification_text(messages),
            policy=self.policy,
            findings=gate,
            task_class=pinned.task_class,
            force_local=pinned.sensitive,
            local_available=self.local_available,
        )

    def _gate(
        self,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]] | None,
        extra_allowed: Collection[str] = (),
    ) -> GateResult:
        """The scanner's verdict on everything that would leave the machine, less allow-listed public values."""
        gate = self.scanner.scan_messages(messages, tools)
        if not gate.findings or not (self.allow_values or extra_allowed):
            return gate
        return self._allowed(gate, "\n\n".join(outbound_texts(messages, tools)), extra_allowed)

    def _allowed(self, gate: GateResult, text: str, extra_allowed: Collection[str] = ()) -> GateResult:
        """``gate`` without the findings whose matched text is exactly an allow-listed value."""
        allowed = self.allow_values.union(extra_allowed)
        if not gate.findings or not allowed:
            return gate
        return GateResult.of(f for f in gate.findings if text[f.start : f.end] not in allowed)

    def _local_ok(self, group: str) -> bool:
        if isinstance(self.local_available, bool):
            return self.local_available
        return group in self.local_available

    def _chain(self, decision: RouteDecision) -> list[str]:
        chain = [decision.model, *allowed_fallbacks(self.policy, decision.model, sensitive=decision.sensitive)]
        if not self.policy.is_local(decision.model):
            chain.extend(self.policy.local_groups())  # cloud → local as the last resort
        out: list[str] = []
        for group in dict.fromkeys(chain):
            spec = self.policy.spec(group)
            if decision.sensitive and not spec.local:
                continue  # the gate said sensitive: no cloud target, whatever the fallback chain says
            if spec.local and not self._local_ok(group):
                continue
            out.append(group)
        return out

    @staticmethod
    def _prompt_tokens(messages: Sequence[dict[str, Any]], tools: Any) -> int:
        """The prompt's size in tokens, estimated (no tokenizer): for reservations and usage-less streams."""
        return estimate_tokens(json.dumps(list(messages), default=str)) + (
            estimate_tokens(json.dumps(tools, default=str)) if tools else 0
        )

    def _estimate(
        self, spec: ModelSpec, messages: Sequence[dict[str, Any]], tools: Any, params: Mapping[str, Any]
    ) -> float:
        prompt = self._prompt_tokens(messages, tools)
        completion = int(params.get("max_tokens") or params.get("max_completion_tokens") or self.default_max_tokens)
        cost = estimate_cost_usd(
            prompt_tokens=prompt,
            max_completion_tokens=completion,
            input_cost_per_token=spec.input_cost_per_token,
            output_cost_per_token=spec.output_cost_per_token,
        )
        if spec.local:
            cost += (prompt + completion) * self.local_cost_per_1k_tokens_usd / 1000
        return cost

    def _send_with_policy(
        self,
        run_key: str,
        step: str,
        decision: RouteDecision,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]] | None,
        params: Mapping[str, Any],
        *,
        stream: bool,
        loop: asyncio.AbstractEventLoop | None = None,
        deadline: float | None = None,
        exploring: _Exploring | None = None,
        key_hash: str | None = None,
    ) -> _Sent:
        """``key_hash``: the gateway key the call came with, checked by every reservation (a key expired since
        the service's cache resolved it is refused there, before anything is sent: ``AccessKeyRevoked``)."""
        if exploring is not None:
            explored = self._send_explored(
                run_key,
                step,
                decision,
                exploring,
                messages,
                tools,
                params,
                stream=stream,
                loop=loop,
                deadline=deadline,
                key_hash=key_hash,
            )
            if explored is not None:
                return explored
            decision = exploring.original.model_copy(
                update={"reason": f"{exploring.original.reason}; exploration of {decision.model} not made or failed"}
            )
            return self._send_with_policy(
                run_key,
                step,
                decision,
                messages,
                tools,
                params,
                stream=stream,
                loop=loop,
                deadline=deadline,
                key_hash=key_hash,
            )
        chain = self._chain(decision)
        if not chain:
            raise SensitiveDataBlocked(
                "no local model is available for a call that must stay local", reasons=list(decision.findings)
            )
        notes: list[str] = []
        budget_refusal: Reservation | None = None
        last_error: LLMError | None = None
        attempts = 0  # requests sent to providers for this call, over the whole chain
        started = time.monotonic()
        for index, group in enumerate(chain):
            spec = self.policy.spec(group)
            if not spec.local and budget_refusal is not None:
                continue  # the cloud budget is exhausted: only local groups remain
            if deadline is not None and deadline - time.monotonic() < MIN_REQUEST_S:
                last = f"; last error: {last_error}" if last_error is not None else ""
                raise LLMError(
                    f"{decision.model}: the call's deadline passed after {attempts} request(s){last}",
                    retryable=False,
                    status=408,
                )
            estimate = self._estimate(spec, messages, tools, params)
            reservation = self.ledger.reserve(run_key, spec.mode, estimate, key_hash=key_hash)
            if not reservation.check.ok:
                check = reservation.check
                if spec.local or self.over_budget == "refuse":
                    raise BudgetExceeded(
                        f"{group}: {check.reason}",
                        scope=check.scope or "run",
                        limit_usd=check.limit_usd,
                        spent_usd=check.spent_usd,
                    )
                budget_refusal = reservation
                notes.append(f"over budget ({check.reason}) → rerouted to local")
                continue
            try:
                response = self._send(spec, messages, tools, params, stream=stream, loop=loop, deadline=deadline)
            except _GroupFailed as failed:
                self._give_up(run_key, step, _Sent(decision, spec, reservation, index > 0, None, started), failed)
                last_error, attempts = failed.error, attempts + failed.attempts
                notes.append(f"{group} failed ({last_error.status or type(last_error).__name__}) → fallback")
                continue
            final = decision
            if index > 0 or notes:
                final = decision.model_copy(
                    update={
                        "model": group,
                        "mode": spec.mode,
                        "reason": f"{decision.reason}; " + "; ".join(notes) + f" → {group} ({spec.mode})",
                    }
                )
            return _Sent(final, spec, reservation, fallback_used=index > 0, response=response, started=started)
        if last_error is not None:
            raise after_attempts(last_error, attempts)
        assert budget_refusal is not None
        check = budget_refusal.check
        raise BudgetExceeded(
            f"{decision.model}: {check.reason}, and no local model is available to reroute to",
            scope=check.scope or "day",
            limit_usd=check.limit_usd,
            spent_usd=check.spent_usd,
        )

    def _send_explored(
        self,
        run_key: str,
        step: str,
        decision: RouteDecision,
        exploring: _Exploring,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]] | None,
        params: Mapping[str, Any],
        *,
        stream: bool,
        loop: asyncio.AbstractEventLoop | None,
        deadline: float | None,
        key_hash: str | None = None,
    ) -> _Sent | None:
        """An explored call on its candidate, reserved against the run's, the day's and the exploration budget;
        None when a budget refuses it or the candidate fails (the caller sends it as the policy decided)."""
        started = time.monotonic()
        spec = self.policy.spec(decision.model)
        reservation = self.ledger.reserve(
            run_key,
            spec.mode,
            self._estimate(spec, messages, tools, params),
            exploration_cap_usd=self.policy.exploration.budget_usd_per_day,
            key_hash=key_hash,
        )
        if not reservation.check.ok:
            return None
        try:
            response = self._send(spec, messages, tools, params, stream=stream, loop=loop, deadline=deadline)
        except _GroupFailed as failed:
            self._give_up(run_key, step, _Sent(decision, spec, reservation, False, None, started), failed)
            return None
        return _Sent(
            decision,
            spec,
            reservation,
            fallback_used=False,
            response=response,
            started=started,
            explored_from=exploring.original.model,
            explore_seq=exploring.seq,
        )

    def _give_up(self, run_key: str, step: str, sent: _Sent, failed: _GroupFailed) -> None:
        """A model group given up: its reservation released — or, when LiteLLM failed without a word from the
        provider or the network (``_GroupFailed.unheard``: it may have been reading the provider's answer, which
        the provider charges for), kept as a ledger row recorded as failed, at the reservation's estimate (cloud:
        ``cost_missing``)."""
        if not failed.unheard:
            self.ledger.release(sent.reservation)
            return
        estimate = Usage(cost_usd=sent.reservation.check.estimate_usd, cost_missing=not sent.spec.local)
        self._settle(run_key, step, sent, estimate, failure=str(failed.error))

    def _send(
        self,
        spec: ModelSpec,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]] | None,
        params: Mapping[str, Any],
        *,
        stream: bool,
        loop: asyncio.AbstractEventLoop | None = None,
        deadline: float | None = None,
    ) -> Any:
        """One model group: LiteLLM's call (or, for a pass-through stream, the request LiteLLM builds, sent on
        ``loop``) with our retries; ``_GroupFailed`` when the group is given up."""
        import litellm

        # LiteLLM would otherwise hand every streamed chunk to a logging thread (its callbacks, which promptship
        # does not use: the ledger is the record). Measured: that alone tripled a stream's time (GIL contention).
        litellm.disable_streaming_logging = True
        kwargs: dict[str, Any] = dict(params)
        kwargs.update(
            model=spec.litellm_model,
            messages=list(messages),
            timeout=self.timeout_s,
            num_retries=0,
            max_retries=0,
            drop_params=True,  # an agent's OpenAI parameters a provider lacks are dropped, not an error
            extra_headers={MODE_HEADER: spec.mode},
        )
        if tools:
            kwargs["tools"] = list(tools)
        if spec.backend == "llamacpp":
            if not self.endpoints.llamacpp_base_url:
                no_server = LLMError(
                    f"{spec.name}: no llama.cpp server configured (set PROMPTSHIP_LLM__LLAMACPP_BASE_URL)",
                    retryable=False,
                )
                raise _GroupFailed(no_server, attempts=0)
            kwargs["api_base"] = self.endpoints.llamacpp_base_url
            kwargs["api_key"] = "llamacpp-no-key"  # the server on 127.0.0.1 takes none; the OpenAI client wants one
            # LiteLLM's price map does not know the server's alias: give the prices, so that it does not look
            kwargs["input_cost_per_token"] = spec.input_cost_per_token
            kwargs["output_cost_per_token"] = spec.output_cost_per_token
        elif spec.local:
            kwargs["api_base"] = self.endpoints.ollama_base_url
        else:
            if self.endpoints.openrouter_api_key is None:
                no_key = LLMError(
                    f"{spec.name}: no OpenRouter key (set PROMPTSHIP_LLM__OPENROUTER_API_KEY)", retryable=False
                )
                raise _GroupFailed(no_key, attempts=0)
            kwargs["api_base"] = self.endpoints.openrouter_base_url
            kwargs["api_key"] = self.endpoints.openrouter_api_key.get_secret_value()
        if stream:
            kwargs["stream"] = True
            kwargs["stream_options"] = {"include_usage": True}
        request = None
        if stream and loop is not None:
            try:
                request = self._pass_through_request(spec, kwargs)
            except Exception as exc:  # LiteLLM building the request: nothing was sent
                error = vendor_failure(exc, spec.name)
                if error is None:
                    raise
                raise _GroupFailed(error, attempts=0) from None
        attempt = 0
        while True:
            attempt += 1
            if deadline is not None:
                # a call with a deadline: a request may take all that is left of it (re-sending to a slow local
                # model only makes it evaluate the prompt again), and no retry or fallback starts after it
                kwargs["timeout"] = max(MIN_REQUEST_S, deadline - time.monotonic())
            try:
                if request is not None and loop is not None:
                    return asyncio.run_coroutine_threadsafe(self._open_sse(*request), loop).result()
                return litellm.completion(**kwargs)
            except Exception as exc:  # raised inside the vendor call: translated; a bug of ours is re-raised
                translated = _translate(exc, spec.name)
                if translated is None:
                    raise
                error, unheard = translated
                asked = error.retry_after_s or 0.0
                if not error.retryable or attempt > self.max_retries or asked > RETRY_CAP_S:
                    raise _GroupFailed(error, attempt, unheard=unheard) from None
                delay = backoff_delay(attempt, base_s=RETRY_BASE_S, cap_s=RETRY_CAP_S, retry_after_s=asked)
                if deadline is not None and deadline - time.monotonic() - delay < MIN_REQUEST_S:
                    raise _GroupFailed(error, attempt) from None  # no time left for another request
                self.sleep(delay)

    def _pass_through_request(
        self, spec: ModelSpec, kwargs: Mapping[str, Any]
    ) -> tuple[str, dict[str, str], bytes] | None:
        """URL, headers and body of a stream LiteLLM would send to an OpenAI-compatible backend, built by
        LiteLLM's own provider config (model name, parameter mapping and dropping, OpenRouter's usage flag,
        auth headers); None when the stream should go through LiteLLM (pass-through off, another provider)."""
        if not self.stream_passthrough or spec.backend not in PASS_THROUGH_BACKENDS:
            return None
        import litellm
        from litellm.types.utils import LlmProviders
        from litellm.utils import (
            ProviderConfigManager,
            get_optional_params,
            validate_and_fix_openai_messages,
            validate_and_fix_openai_tools,
            validate_chat_completion_tool_choice,
            validate_openai_optional_params,
        )

        model, provider, _, api_base = litellm.get_llm_provider(model=kwargs["model"], api_base=kwargs["api_base"])
        if provider not in _PASS_THROUGH_PROVIDERS or not api_base:
            return None
        config = ProviderConfigManager.get_provider_chat_config(model=model, provider=LlmProviders(provider))
        if (
            config is None
            or config.has_custom_stream_wrapper
            or config.should_fake_stream(model=model, stream=True, custom_llm_provider=provider)
        ):
            return None
        # what ``litellm.completion`` does to its arguments first (None fields dropped, tools as dicts, …)
        messages = validate_and_fix_openai_messages(messages=[dict(m) for m in kwargs["messages"]])
        named = {k: kwargs[k] for k in _PASSTHROUGH if kwargs.get(k) is not None}
        if kwargs.get("tools"):
            named["tools"] = validate_and_fix_openai_tools(tools=kwargs["tools"])
        if "tool_choice" in named:
            named["tool_choice"] = validate_chat_completion_tool_choice(tool_choice=named["tool_choice"], model=model)
        if "stop" in named:
            named["stop"] = validate_openai_optional_params(stop=named["stop"])
        optional = get_optional_params(
            model=model,
            custom_llm_provider=provider,
            messages=messages,
            stream=True,
            stream_options=kwargs["stream_options"],
            drop_params=True,
            **named,
        )
        extra_body = optional.pop("extra_body", None)
        headers = config.validate_environment(
            headers=dict(kwargs["extra_headers"]),
            model=model,
            messages=messages,
            optional_params=optional,
            litellm_params={},
            api_key=kwargs["api_key"],
            api_base=api_base,
        )
        url = config.get_complete_url(
            api_base=api_base,
            api_key=kwargs["api_key"],
            model=model,
            optional_params=optional,
            litellm_params={},
            stream=True,
        )
        body = config.transform_request(
            model=model, messages=messages, optional_params=optional, litellm_params={}, headers=headers
        )
        if isinstance(extra_body, Mapping) and extra_body:
            body = {
                **body,
                **config.transform_extra_body(extra_body=extra_body, request=body, model=model, litellm_params={}),
            }
        body["stream"] = True
        return url, {str(k): str(v) for k, v in headers.items()}, json.dumps(body).encode()

    async def _open_sse(self, url: str, headers: Mapping[str, str], body: bytes) -> _OpenSSE:
        """Send a pass-through stream's request (on the service's loop); an error status raises
        ``httpx.HTTPStatusError`` (translated and retried by ``_send`` like LiteLLM's errors); the body is left
        to the relay."""
        import httpx

        loop = asyncio.get_running_loop()
        http = self._async_http.get(loop)
        if http is None:
            http = self._async_http[loop] = httpx.AsyncClient(timeout=self.timeout_s)
        request = http.build_request("POST", url, headers=headers, content=body)
        response = await http.send(request, stream=True)
        if response.status_code >= 400:
            try:
                await response.aread()
            finally:
                await response.aclose()
            raise httpx.HTTPStatusError(_provider_message(response), request=request, response=response)
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            await response.aclose()
            kind = response.headers.get("content-type") or "no content type"
            raise httpx.DecodingError(f"answered a stream request with {kind}, not text/event-stream", request=request)
        return _OpenSSE(response)

    def _usage(self, spec: ModelSpec, usage: Any) -> Usage:
        prompt = int(_field(usage, "prompt_tokens") or 0)
        completion = int(_field(usage, "completion_tokens") or 0)
        reported = _reported_cost(usage)
        listed = priced_cost_usd(
            prompt_tokens=prompt,
            completion_tokens=completion,
            input_cost_per_token=spec.input_cost_per_token,
            output_cost_per_token=spec.output_cost_per_token,
        )
        if spec.local:
            cost = listed + (prompt + completion) * self.local_cost_per_1k_tokens_usd / 1000
            return Usage(prompt_tokens=prompt, completion_tokens=completion, cost_usd=round(cost, 10))
        if reported is None:
            return Usage(
                prompt_tokens=prompt, completion_tokens=completion, cost_usd=round(listed, 10), cost_missing=True
            )
        return Usage(prompt_tokens=prompt, completion_tokens=completion, cost_usd=round(reported, 10))

    def _settle(self, run_key: str, step: str, sent: _Sent, usage: Usage, *, failure: str | None = None) -> None:
        latency_ms = round((time.monotonic() - sent.started) * 1000, 1)
        reason = sent.decision.reason if failure is None else f"{sent.decision.reason}; FAILED: {failure}"
        self.ledger.settle(
            sent.reservation,
            run_key=run_key,
            step=step,
            model=sent.spec.name,
            mode=sent.spec.mode,
            usage=usage,
            fallback_used=sent.fallback_used,
            route_reason=reason,
            latency_ms=latency_ms,
            decision=self._recorded(sent, usage),
        )

    # ---- what replay needs (``domain.replay``): recorded with each call, never any text ------------------
    def _recorded(self, sent: _Sent, usage: Usage) -> RecordedDecision:
        if self._policy_hash is None:
            self._policy_hash = self.policy.fingerprint()
            self.ledger.remember_policy(self._policy_hash, self.policy.to_yaml())
        d = sent.decision
        source: PriceSource
        if usage.prompt_tokens == 0 and usage.completion_tokens == 0 and usage.cost_usd > 0:
            source = "estimate"  # a stream without usage (or a client gone): the reservation's estimate
        elif sent.spec.local:
            source = "local"
        else:
            source = "list" if usage.cost_missing else "provider"
        return RecordedDecision(
            task_class=d.task_class,
            class_source=d.class_source,
            class_rule=d.class_rule,
            sensitive=bool(d.findings),
            gate_kinds=d.findings,
            forced_local=d.forced_local,
            caller=sent.caller,
            price_source=source,
            local_rate_per_1k_usd=self.local_cost_per_1k_tokens_usd,
            policy_hash=self._policy_hash,
            decided_by="exploration" if sent.explored_from is not None else "policy",
            explored_from=sent.explored_from,
            explore_seq=sent.explore_seq,
        )

    def _estimated_usage(self, spec: ModelSpec, prompt_tokens: int, chunks: int) -> Usage:
        """A stream's usage when the provider said none: the prompt estimate and one token per content chunk
        (what OpenAI-compatible servers send), at list price; a cloud call is flagged ``cost_missing``."""
        listed = priced_cost_usd(
            prompt_tokens=prompt_tokens,
            completion_tokens=chunks,
            input_cost_per_token=spec.input_cost_per_token,
            output_cost_per_token=spec.output_cost_per_token,
        )
        if spec.local:
            listed += (prompt_tokens + chunks) * self.local_cost_per_1k_tokens_usd / 1000
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=chunks,
            cost_usd=round(listed, 10),
            cost_missing=not spec.local,
        )

    def _record_failure(
        self, run_key: str, step: str, sent: _Sent, prompt_tokens: int, chunks: int, error: LLMError
    ) -> None:
        """A stream the provider broke off: recorded as failed, at the estimate of what it had sent (a provider
        may charge for it), so that the budget counts it."""
        usage = self._estimated_usage(sent.spec, prompt_tokens, chunks)
        self._settle(run_key, step, sent, usage, failure=f"stream broke off after {chunks} chunks: {error}")

    def _relay(self, run_key: str, step: str, sent: _Sent, prompt_tokens: int) -> Iterator[dict[str, Any]]:
        """LiteLLM's stream (providers that are not OpenAI-compatible) as OpenAI-format chunks, then the usage."""
        last_usage: Any = None
        settled = False
        chunks = 0
        try:
            for chunk in sent.response:
                if getattr(chunk, "usage", None) and not chunk.choices:
                    # LiteLLM's own closing usage chunk (sent after the provider's stream ended). Asking for one
                    # more would rebuild the whole response again (``stream_chunk_builder``) to say StopIteration.
                    last_usage = chunk.usage
                    break
                data = chunk.model_dump(mode="json", exclude_none=True)
                data["model"] = sent.decision.model
                if data.get("usage"):
                    last_usage = chunk.usage
                    data.pop("usage")
                if data.get("choices"):
                    chunks += 1
                    yield data
            if last_usage is None and not sent.spec.local:
                # The provider streamed no usage at all: keep the reservation's estimate, flagged, never 0.
                usage = Usage(cost_usd=sent.reservation.check.estimate_usd, cost_missing=True)
            else:
                usage = self._usage(sent.spec, last_usage)
            self._settle(run_key, step, sent, usage)
            settled = True
            yield {
                "id": "chatcmpl-usage",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": sent.decision.model,
                "choices": [],
                "usage": _usage_json(usage),
            }
        except Exception as exc:
            error = None if settled else vendor_failure(exc, sent.spec.name)
            if error is None:
                raise
            self._record_failure(run_key, step, sent, prompt_tokens, chunks, error)
            settled = True
            raise error from None
        finally:
            if not settled:
                # The client went away mid-stream: the provider may still charge; keep the estimate, flagged.
                estimate = sent.reservation.check.estimate_usd
                self._settle(run_key, step, sent, Usage(cost_usd=estimate, cost_missing=not sent.spec.local))
            sent.response.close()  # stops reading the provider (a client gone mid-stream) or releases it

    async def _pass_through(self, run_key: str, step: str, sent: _Sent, prompt_tokens: int) -> AsyncIterator[bytes]:
        """An OpenAI-compatible provider's SSE stream relayed as its bytes, as they come (``sse.Relay``: the
        provider's usage chunk is replaced by one with the ledger's figures once the call is recorded; without
        usage, the content chunks are counted). An error event, or the provider breaking off, ends the stream
        with ``LLMError``, the call recorded as failed."""
        import anyio
        import anyio.to_thread

        upstream: httpx.Response = sent.response.response
        relay = sse.Relay()
        settled = False
        try:
            error: LLMError | None = None
            try:
                # the bytes as each read brought them (``aiter_bytes`` would pass them through a decoder and a
                # re-chunker first); a provider that compressed its stream is decoded, so the client gets text
                encoded = upstream.headers.get("content-encoding", "identity").lower() not in ("", "identity")
                reads = upstream.aiter_bytes() if encoded else upstream.aiter_raw()
                async for received in reads:
                    out = relay.feed(received)
                    if out:
                        yield out
                relay.finish()
            except sse.UpstreamErrorEvent as exc:
                message = redact(" ".join(str(exc).split()))[:300]
                error = LLMError(f"{sent.spec.name}: the provider sent an error mid-stream: {message}", retryable=False)
            except Exception as exc:
                error = vendor_failure(exc, sent.spec.name)
                if error is None:
                    raise
            if error is not None:
                record = partial(self._record_failure, run_key, step, sent, prompt_tokens, relay.chunks, error)
                await anyio.to_thread.run_sync(record)
                settled = True
                raise error
            reported = relay.usage()
            if reported is None:
                usage = self._estimated_usage(sent.spec, prompt_tokens, relay.chunks)
            else:
                usage = self._usage(sent.spec, reported)
            await anyio.to_thread.run_sync(partial(self._settle, run_key, step, sent, usage))
            settled = True
            if relay.usage_event is not None:
                closing = {
                    k: relay.usage_event[k] for k in ("id", "object", "created", "model") if k in relay.usage_event
                }
            else:
                closing = {
                    "id": "chatcmpl-usage",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": sent.decision.model,
                }
            yield sse.data_event({**closing, "choices": [], "usage": _usage_json(usage)}) + (relay.done or sse.DONE)
        finally:
            with anyio.CancelScope(shield=True):  # also when the service cancels us (the client went away)
                if not settled:
                    # The client went away mid-stream: the provider may still charge; keep the estimate, flagged.
                    estimate = Usage(cost_usd=sent.reservation.check.estimate_usd, cost_missing=not sent.spec.local)
                    await anyio.to_thread.run_sync(partial(self._settle, run_key, step, sent, estimate))
                await upstream.aclose()


def _sse_body(chunks: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    """OpenAI-format chunks as an SSE body ending ``data: [DONE]``; closing it closes ``chunks``."""
    try:
        for chunk in chunks:
            yield sse.data_event(chunk)
        yield sse.DONE
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


_END = object()


async def _read_in_thread(items: Iterator[bytes], max_ahead: int = 64) -> AsyncIterator[bytes]:
    """``items`` (a blocking iterator: LiteLLM reading the provider) read by a thread of its own and handed to
    the event loop as each item comes, what is ready at once handed on as one.

    Starlette's default for a sync iterator moves every ``next()`` to a worker thread and back: a round trip
    per chunk, during which nothing is read from the provider. Here the reader runs ahead (at most
    ``max_ahead`` items) while the loop writes. Closing this iterator (the client went away) stops the
    reader, which closes ``items`` in its own thread."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    room = threading.Semaphore(max_ahead)
    stop = threading.Event()

    def hand_over(item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def read() -> None:
        try:
            for item in items:
                room.acquire()
                if stop.is_set():
                    break
                hand_over(item)
        except BaseException as exc:  # handed to the loop, raised there
            hand_over(exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
            hand_over(_END)

    threading.Thread(target=read, daemon=True, name="gateway-sse").start()
    try:
        while True:
            ready = [await queue.get()]
            while not queue.empty():
                ready.append(queue.get_nowait())
            out: list[bytes] = []
            for item in ready:
                if item is _END or isinstance(item, BaseException):
                    if out:
                        yield b"".join(out)
                    if isinstance(item, BaseException):
                        raise item
                    return
                room.release()
                out.append(item)  # type: ignore[arg-type]  # everything else the reader hands over is bytes
            yield b"".join(out)
    finally:
        stop.set()
        room.release()  # a reader waiting for room sees ``stop``


def _field(usage: Any, name: str) -> Any:
    if usage is None:
        return None
    return usage.get(name) if isinstance(usage, Mapping) else getattr(usage, name, None)


def _provider_message(response: httpx.Response) -> str:
    """What a provider said with an error status (its OpenAI-style ``error.message``, or the start of the body)."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict) and data["error"].get("message"):
        return str(data["error"]["message"])
    return response.text[:300] or response.reason_phrase


def _reported_cost(usage: Any) -> float | None:
    if usage is None:
        return None
    cost = usage.get("cost") if isinstance(usage, Mapping) else getattr(usage, "cost", None)
    if isinstance(cost, int | float) and cost >= 0:
        return float(cost)
    return None


def _usage_json(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        "cost": usage.cost_usd,
    }
    if usage.cost_missing:
        out["cost_missing"] = True
    return out


_PASSTHROUGH = (
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "n",
)


def _split_body(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("'messages' must be a list of objects")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise ValueError("'tools' must be a list")
    params = {k: body[k] for k in _PASSTHROUGH if body.get(k) is not None}
    return messages, tools, params


def _classification_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text the task classifier reads: the user's messages (the latest first matters most)."""
    texts: list[str] = []
    for m in messages:
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return "\n".join(texts[:1] + texts[-1:] if len(texts) > 1 else texts)
