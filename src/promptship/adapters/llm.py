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

LiteLLM is imported lazily (~3–6 s). Its exceptions become ``LLMError`` here and nowhere else; its response
objects never leave this module (the gateway service gets plain OpenAI-format dicts).
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from promptship.domain.costs import OverBudget, estimate_cost_usd, estimate_tokens, priced_cost_usd
from promptship.domain.gate import GateResult, outbound_texts
from promptship.domain.redaction import redact
from promptship.domain.replay import PriceSource, RecordedDecision
from promptship.domain.request import TaskClass, branch_for, conversation_id_for
from promptship.domain.results import LLMCall, LLMReply, RouteDecision, RunAccess, Usage
from promptship.domain.retrying import after_attempts, backoff_delay, retry_after_s
from promptship.domain.routing import ModelSpec, RoutingPolicy, allowed_fallbacks, decide_route
from promptship.errors import BudgetExceeded, LLMError, SensitiveDataBlocked
from promptship.ports import AgentLLMAccess, Scanner
from promptship.store.ledger import CostLedger, Reservation

MODE_HEADER = "x-llm-mode"


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


class _GroupFailed(Exception):
    """One model group's last error and how many requests were sent to it (internal)."""

    def __init__(self, error: LLMError, attempts: int):
        super().__init__(str(error))
        self.error = error
        self.attempts = attempts


@dataclass
class _Sent:
    """One successful provider call (internal)."""

    decision: RouteDecision
    spec: ModelSpec
    reservation: Reservation
    fallback_used: bool
    response: Any
    started: float  # time.monotonic() before the first request of the call
    caller: str | None = None  # the caller the policy's ``callers`` was asked about (recorded for replay)


def to_llm_error(exc: BaseException, model: str) -> LLMError:
    """LiteLLM's (OpenAI-style) and httpx's exceptions → ``LLMError``; retryable for 5xx, 408/409/429,
    timeouts and connection failures. The provider's message is redacted and shortened."""
    import httpx
    import openai

    status = getattr(exc, "status_code", None)
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
    detail = redact(" ".join(str(exc).split()))[:300]
    return LLMError(
        f"{model}: {type(exc).__name__} (HTTP {status if status is not None else '-'}): {detail}",
        retryable=retryable,
        status=status,
        retry_after_s=retry_after,
    )


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
        self._policy_hash: str | None = None  # kept in the ledger on the first settled call
        # LiteLLM's Ollama provider falls back to this for /api/show (RESEARCH.md); never the default host.
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        os.environ["OLLAMA_API_BASE"] = endpoints.ollama_base_url

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
        params: dict[str, Any] = {}
        if call.max_tokens is not None:
            params["max_tokens"] = call.max_tokens
        sent = self._send_with_policy(call.run_key, decision, messages, None, params, stream=False)
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
        key = "psk-run-" + secrets.token_urlsafe(32)
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
        decision = self._decide_for_run(access, messages, tools)
        sent = self._send_with_policy(access.run_key, decision, messages, tools, params, stream=False)
        usage = self._usage(sent.spec, sent.response.usage)
        self._settle(access.run_key, step, sent, usage)
        out = sent.response.model_dump(mode="json", exclude_none=True)
        out["model"] = sent.decision.model
        out.pop("_hidden_params", None)
        out["usage"] = _usage_json(usage)
        return out

    def stream_chat(
        self, access: RunAccess, body: Mapping[str, Any], *, step: str = "agent"
    ) -> Iterator[dict[str, Any]]:
        """Like ``chat`` with ``stream: true``: routing, gate, budget and the provider connection happen now
        (errors raise here); the returned iterator yields OpenAI-format chunks, the last one with ``usage``,
        and records the cost when it ends (also when the client goes away)."""
        messages, tools, params = _split_body(body)
        decision = self._decide_for_run(access, messages, tools)
        sent = self._send_with_policy(access.run_key, decision, messages, tools, params, stream=True)
        return self._relay(access.run_key, step, sent)

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

    def _decide_for_run(
        self, access: RunAccess, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None
    ) -> RouteDecision:
        """The agent's calls keep the run's decision unless the gate finds sensitive data now (⇒ local).
        Identifiers the pipeline itself made for the run (run key, branch, conversation id) are not secrets."""
        pinned = access.decision
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

    def _estimate(
        self, spec: ModelSpec, messages: Sequence[dict[str, Any]], tools: Any, params: Mapping[str, Any]
    ) -> float:
        prompt = estimate_tokens(json.dumps(list(messages), default=str)) + (
            estimate_tokens(json.dumps(tools, default=str)) if tools else 0
        )
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
        decision: RouteDecision,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]] | None,
        params: Mapping[str, Any],
        *,
        stream: bool,
    ) -> _Sent:
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
            reservation = self.ledger.reserve(run_key, spec.mode, self._estimate(spec, messages, tools, params))
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
                response = self._send(spec, messages, tools, params, stream=stream)
            except _GroupFailed as failed:
                self.ledger.release(reservation)
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

    def _send(
        self,
        spec: ModelSpec,
        messages: Sequence[dict[str, Any]],
        tools: Sequence[dict[str, Any]] | None,
        params: Mapping[str, Any],
        *,
        stream: bool,
    ) -> Any:
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
        attempt = 0
        while True:
            attempt += 1
            try:
                return litellm.completion(**kwargs)
            except Exception as exc:  # only vendor errors are translated; anything else is a bug and re-raised
                if not _is_vendor_error(exc):
                    raise
                error = to_llm_error(exc, spec.name)
                asked = error.retry_after_s or 0.0
                if not error.retryable or attempt > self.max_retries or asked > RETRY_CAP_S:
                    raise _GroupFailed(error, attempt) from None
                self.sleep(backoff_delay(attempt, base_s=RETRY_BASE_S, cap_s=RETRY_CAP_S, retry_after_s=asked))

    def _usage(self, spec: ModelSpec, usage: Any) -> Usage:
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0) if usage is not None else 0
        completion = int(getattr(usage, "completion_tokens", 0) or 0) if usage is not None else 0
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

    def _settle(self, run_key: str, step: str, sent: _Sent, usage: Usage) -> None:
        latency_ms = round((time.monotonic() - sent.started) * 1000, 1)
        self.ledger.settle(
            sent.reservation,
            run_key=run_key,
            step=step,
            model=sent.spec.name,
            mode=sent.spec.mode,
            usage=usage,
            fallback_used=sent.fallback_used,
            route_reason=sent.decision.reason,
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
        )

    def _relay(self, run_key: str, step: str, sent: _Sent) -> Iterator[dict[str, Any]]:
        last_usage: Any = None
        settled = False
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
            if not settled:
                self.ledger.release(sent.reservation)
                settled = True
            if _is_vendor_error(exc):
                raise to_llm_error(exc, sent.spec.name) from None
            raise
        finally:
            if not settled:
                # The client went away mid-stream: the provider may still charge; keep the estimate, flagged.
                estimate = sent.reservation.check.estimate_usd
                self._settle(run_key, step, sent, Usage(cost_usd=estimate, cost_missing=not sent.spec.local))
            sent.response.close()  # stops reading the provider (a client gone mid-stream) or releases it


def _is_vendor_error(exc: BaseException) -> bool:
    import httpx
    import openai

    return isinstance(exc, openai.OpenAIError | httpx.HTTPError)


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
