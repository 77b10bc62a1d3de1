"""``OpenHandsAgent``: the ``CodeAgent`` port on the OpenHands **agent-server** REST API (httpx).

One conversation per request, its id derived from the request key (``conversation_id_for``): ``start`` finds it
when a resumed run or an earlier attempt (a follow-up) already created it — and, unless it is running, gives it
this attempt's gateway key (``POST /api/conversations/{id}/switch_llm``: the LLM is replaced, its metrics kept;
the key it was created with expired with its attempt) — else creates it (agent LLM at the gateway with the
attempt's key, tools terminal + file_editor, a ``LocalWorkspace`` at the run's checkout, the instruction with
``run: true``). ``result`` polls with backoff until ``finished | error | stuck``; at the timeout it interrupts
and removes the conversation (verdict ``timed_out``). Changed files and commits are those since the workspace's
HEAD when the conversation was created (kept in the conversation's tags, so another process can collect them).

Vendor errors are translated here, once, into ``AgentError``: 401 (session key refused), 404, 409, 422
(validation, without echoing inputs), 429 (retryable, Retry-After), 5xx and lost connections (retryable),
malformed bodies. No credential (session key, per-run LLM key) ever appears in an error or a log line.

Known limit of agent-server 1.57.0: its REST API has no per-conversation budget (the SDK's
``max_budget_per_run`` is not exposed), so the budget is enforced by the gateway key and, at poll granularity,
here: a conversation whose own cost reaches the budget is interrupted (verdict ``error``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import httpx
from pydantic import SecretStr

from promptship.domain.results import AgentHandle, AgentResult, AgentTask, AgentVerdict, Usage
from promptship.domain.retrying import retry_after_s
from promptship.errors import AgentError
from promptship.ports import AgentLLMAccess

log = logging.getLogger(__name__)

TERMINAL_STATUSES: dict[str, AgentVerdict] = {"finished": "finished", "error": "error", "stuck": "stuck"}
KNOWN_STATUSES = frozenset(
    {"idle", "running", "paused", "waiting_for_confirmation", "finished", "error", "stuck", "deleting"}
)
USAGE_ID = "agent"


def conversation_verdict(execution_status: str) -> AgentVerdict | None:
    """The verdict of a conversation status, or None while it is not final. Unknown statuses are an error."""
    if execution_status not in KNOWN_STATUSES:
        raise AgentError(f"the agent-server reported an unknown execution_status {execution_status!r}")
    return TERMINAL_STATUSES.get(execution_status)


def usage_from_stats(stats: Any) -> Usage:
    """Tokens and cost of a conversation from ``stats.usage_to_metrics`` (summed over all of its LLMs)."""
    if stats is None:
        return Usage()
    if not isinstance(stats, dict):
        raise AgentError("malformed conversation stats from the agent-server (not an object)")
    metrics = stats.get("usage_to_metrics") or {}
    if not isinstance(metrics, dict):
        raise AgentError("malformed usage_to_metrics from the agent-server (not an object)")
    total = Usage()
    for m in metrics.values():
        if not isinstance(m, dict):
            raise AgentError("malformed metrics entry from the agent-server (not an object)")
        tokens = m.get("accumulated_token_usage") or {}
        try:
            total = total + Usage(
                prompt_tokens=int(tokens.get("prompt_tokens") or 0),
                completion_tokens=int(tokens.get("completion_tokens") or 0),
                cost_usd=float(m.get("accumulated_cost") or 0.0),
            )
        except (TypeError, ValueError, AttributeError) as exc:
            raise AgentError(f"malformed token usage from the agent-server: {type(exc).__name__}") from None
    return total


def next_interval(current: float, *, factor: float, maximum: float) -> float:
    """Backoff between polls: grow by ``factor`` up to ``maximum``."""
    return min(current * factor, maximum)


def _same_id(a: Any, b: str) -> bool:
    try:
        return uuid.UUID(str(a)) == uuid.UUID(b)
    except ValueError:
        return False


class OpenHandsAgent:
    """The code agent on an OpenHands agent-server (``http`` has its ``base_url``; see ``wiring``)."""

    def __init__(
        self,
        http: httpx.Client,
        *,
        session_api_key: SecretStr | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        poll_initial_s: float = 0.25,
        poll_max_s: float = 5.0,
        poll_factor: float = 1.5,
        transient_errors_tolerated: int = 5,
        idle_kick_s: float = 5.0,
        tools: tuple[str, ...] = ("terminal", "file_editor"),
        llm_num_retries: int = 2,
        llm_timeout_s: int = 300,
    ):
        self._http = http
        self._session_api_key = session_api_key
        self._clock = clock
        self._sleep = sleep
        self._poll_initial_s = poll_initial_s
        self._poll_max_s = poll_max_s
        self._poll_factor = poll_factor
        self._transient_tolerated = transient_errors_tolerated
        self._idle_kick_s = idle_kick_s
        self._tools = tools
        self._llm_num_retries = llm_num_retries
        self._llm_timeout_s = llm_timeout_s
        self._secrets: set[str] = set()
        if session_api_key is not None and session_api_key.get_secret_value():
            self._secrets.add(session_api_key.get_secret_value())

    # ---- the port -------------------------------------------------------------------------------------------
    def start(self, task: AgentTask, llm: AgentLLMAccess) -> AgentHandle:
        """Create the conversation for ``task`` — or find it, when a resumed run already created it."""
        cid = task.conversation_id
        key = llm.api_key.get_secret_value()
        if key:
            self._secrets.add(key)
        existing = self._request("GET", f"/api/conversations/{cid}", ok=(200, 404), what="look up the conversation")
        if existing.status_code == 200:
            info = self._json(existing, "conversation")
            if info.get("execution_status") != "running":
                # A new attempt (a follow-up, a resume) has its own gateway key; the key the conversation was
                # created with died with its attempt. The agent-server swaps the LLM and keeps its metrics.
                self._request(
                    "POST",
                    f"/api/conversations/{cid}/switch_llm",
                    ok=(200,),
                    json={"llm": self._llm_body(llm)},
                    what="switch the conversation's LLM",
                )
            log.info("agent conversation %s found (resumed run %s)", cid, task.run_key)
            return AgentHandle(conversation_id=cid, created=False)
        base_sha = self._head_sha(task.workspace)
        resp = self._request(
            "POST", "/api/conversations", ok=(200, 201), json=self._start_body(task, llm, base_sha), what="start"
        )
        info = self._json(resp, "started conversation")
        if not _same_id(info.get("id"), cid):
            raise AgentError(f"the agent-server answered with conversation {info.get('id')!r} instead of {cid}")
        created = resp.status_code == 201
        log.info("agent conversation %s %s (run %s)", cid, "created" if created else "found", task.run_key)
        return AgentHandle(conversation_id=cid, created=created)

    def send(self, handle: AgentHandle, instruction: str) -> None:
        """Continue the conversation with a new instruction (a repair round) and set it running."""
        cid = handle.conversation_id
        body = {"role": "user", "content": [{"type": "text", "text": instruction}], "run": True}
        resp = self._request("POST", f"/api/conversations/{cid}/events", ok=(200, 429), json=body, what="send")
        if resp.status_code == 429:
            # The message is saved; only the run is refused (capacity). Start it, but never send it twice.
            self._request("POST", f"/api/conversations/{cid}/run", ok=(200, 409), what="run")

    def result(self, handle: AgentHandle, *, timeout_s: float) -> AgentResult:
        """Wait until the agent is finished, in error or stuck, or the timeout passes (then interrupt it)."""
        cid = handle.conversation_id
        deadline = self._clock() + timeout_s
        interval = self._poll_initial_s
        transient = 0
        kicked = False
        idle_since: float | None = None
        info: dict[str, Any] = {}
        status = "unknown"
        while True:
            asked_s: float | None = None  # a poll the server refused with Retry-After: not sooner than that
            try:
                info = self._conversation(cid)
                transient = 0
            except AgentError as exc:
                transient += 1
                if not exc.retryable or transient > self._transient_tolerated or self._clock() >= deadline:
                    raise
                log.warning("agent-server poll of %s failed (%s); looking again", cid, exc)
                info = {}
                asked_s = exc.retry_after_s
            if info:
                status = info.get("execution_status")
                if not isinstance(status, str):
                    raise AgentError("malformed conversation from the agent-server: no execution_status")
                verdict = conversation_verdict(status)
                if verdict is not None:
                    return self._collect(cid, info, verdict)
                budget = self._budget(info)
                usage = usage_from_stats(info.get("stats"))
                if budget is not None and usage.cost_usd >= budget > 0:
                    self._interrupt(cid)
                    return self._collect(
                        cid,
                        self._conversation(cid),
                        "error",
                        error=f"MaxBudgetReached: the agent spent ${usage.cost_usd:.4f} of a ${budget:.4f} budget; "
                        "interrupted",
                    )
                # Not running although nothing is final: a resumed run finds an interrupted (paused) conversation,
                # or its run was refused at capacity (idle). Start it once; never resend the instruction.
                idle_since = (idle_since if idle_since is not None else self._clock()) if status == "idle" else None
                idle_long = idle_since is not None and self._clock() - idle_since >= self._idle_kick_s
                if (status == "paused" or idle_long) and not kicked:
                    answer = self._request("POST", f"/api/conversations/{cid}/run", ok=(200, 409, 429), what="run")
                    kicked = answer.status_code != 429
            now = self._clock()
            if now >= deadline:
                return self._time_out(cid, info, status, timeout_s)
            self._sleep(min(max(interval, asked_s or 0.0), max(0.0, deadline - now)))
            interval = next_interval(interval, factor=self._poll_factor, maximum=self._poll_max_s)

    def cancel(self, handle: AgentHandle) -> None:
        """Interrupt and remove the conversation (nothing to do when it is already gone)."""
        self._interrupt(handle.conversation_id)
        self._delete(handle.conversation_id)

    # ---- steps ----------------------------------------------------------------------------------------------
    def _llm_body(self, llm: AgentLLMAccess) -> dict[str, Any]:
        llm_body: dict[str, Any] = {
            "usage_id": USAGE_ID,
            "model": _litellm_model(llm.model),
            "base_url": llm.base_url,
            "api_key": llm.api_key.get_secret_value(),
            "num_retries": self._llm_num_retries,
            "timeout": self._llm_timeout_s,
        }
        if llm.input_cost_per_token is not None:
            llm_body["input_cost_per_token"] = llm.input_cost_per_token
        if llm.output_cost_per_token is not None:
            llm_body["output_cost_per_token"] = llm.output_cost_per_token
        return llm_body

    def _start_body(self, task: AgentTask, llm: AgentLLMAccess, base_sha: str | None) -> dict[str, Any]:
        llm_body = self._llm_body(llm)
        tags = {"runkey": task.run_key, "budgetusd": f"{task.budget_usd:.6f}"}
        if base_sha:
            tags["basesha"] = base_sha
        return {
            "conversation_id": task.conversation_id,
            "agent": {"kind": "Agent", "llm": llm_body, "tools": [{"name": t} for t in self._tools]},
            "workspace": {"kind": "LocalWorkspace", "working_dir": task.workspace},
            "initial_message": {"role": "user", "content": [{"type": "text", "text": task.instruction}], "run": True},
            "max_iterations": task.max_iterations,
            "stuck_detection": True,
            "autotitle": False,  # a title would cost an extra LLM call per run
            "tags": tags,
        }

    def _conversation(self, cid: str) -> dict[str, Any]:
        resp = self._request("GET", f"/api/conversations/{cid}", ok=(200,), what="read the conversation")
        return self._json(resp, "conversation")

    def _collect(self, cid: str, info: dict[str, Any], verdict: AgentVerdict, error: str | None = None) -> AgentResult:
        workspace = _working_dir(info)
        base_sha = (info.get("tags") or {}).get("basesha") if isinstance(info.get("tags"), dict) else None
        if verdict in ("error", "stuck") and error is None:
            error = self._last_error(cid) or (
                "the agent-server detected a stuck agent (repeating actions)"
                if verdict == "stuck"
                else "the agent-server reports an error without a reason (e.g. it restarted during the run)"
            )
        return AgentResult(
            verdict=verdict,
            conversation_id=cid,
            final_message=self._final_message(cid),
            changed_files=self._changed_files(cid, workspace, base_sha),
            commits=self._commits(cid, workspace, base_sha),
            usage=usage_from_stats(info.get("stats")),
            error=self._scrub(error) if error else None,
        )

    def _time_out(self, cid: str, info: dict[str, Any], status: str, timeout_s: float) -> AgentResult:
        self._interrupt(cid)
        try:
            try:
                last = self._conversation(cid)
            except AgentError:
                last = info
            return self._collect(
                cid,
                last or info,
                "timed_out",
                error=f"no verdict within {timeout_s:g} s (last status {status}); interrupted and removed",
            )
        finally:
            self._delete(cid)  # even when collecting failed: a timed-out conversation must not linger

    def _interrupt(self, cid: str) -> None:
        # 400/404: the conversation is gone already
        self._request("POST", f"/api/conversations/{cid}/interrupt", ok=(200, 400, 404), what="interrupt")

    def _delete(self, cid: str) -> None:
        # 400: the server is already deleting it / it is gone
        self._request("DELETE", f"/api/conversations/{cid}", ok=(200, 400, 404), what="delete")

    def _final_message(self, cid: str) -> str:
        resp = self._request(
            "GET", f"/api/conversations/{cid}/agent_final_response", ok=(200, 404), what="read the final message"
        )
        if resp.status_code != 200:
            return ""
        text = self._json(resp, "final response").get("response", "")
        return self._scrub(text) if isinstance(text, str) else ""

    def _last_error(self, cid: str) -> str | None:
        resp = self._request(
            "GET",
            f"/api/conversations/{cid}/events/search",
            ok=(200,),
            params={"kind": "ConversationErrorEvent", "sort_order": "TIMESTAMP_DESC", "limit": 1},
            what="read the error",
        )
        items = self._json(resp, "events page").get("items") or []
        if not items or not isinstance(items[0], dict):
            return None
        event = items[0]
        return f"{event.get('code', 'error')}: {event.get('detail', '')}".strip()

    def _changed_files(self, cid: str, workspace: str | None, base_sha: str | None) -> tuple[str, ...]:
        if not workspace:
            return ()
        params = {"path": workspace, **({"ref": base_sha} if base_sha else {})}
        try:
            resp = self._request(
                "GET", f"/api/conversations/{cid}/git/changes", ok=(200,), params=params, what="read git changes"
            )
        except AgentError as exc:  # not a git repository, or the server's git failed: report no files
            log.warning("git changes of %s unavailable: %s", cid, exc)
            return ()
        data = _json_any(resp)
        if not isinstance(data, list):
            raise AgentError("malformed git changes from the agent-server (not a list)")
        return tuple(sorted({str(c["path"]) for c in data if isinstance(c, dict) and "path" in c}))

    def _commits(self, cid: str, workspace: str | None, base_sha: str | None) -> tuple[str, ...]:
        """Commits made since the conversation started (newest first), read through the server's git API."""
        if not workspace:
            return ()
        try:
            resp = self._request(
                "GET",
                f"/api/conversations/{cid}/git/commits",
                ok=(200,),
                params={"path": workspace, "limit": 200},
                what="read git commits",
            )
        except AgentError as exc:
            log.warning("git commits of %s unavailable: %s", cid, exc)
            return ()
        return _commits_since(self._json(resp, "commits page").get("commits") or [], base_sha)

    def _head_sha(self, workspace: str) -> str | None:
        try:
            resp = self._request(
                "GET", "/api/git/commits", ok=(200,), params={"path": workspace, "limit": 1}, what="read HEAD"
            )
        except AgentError as exc:
            # No HEAD to record (not a git checkout, or the server's git failed): changes are then read against
            # the default branch. Refused credentials and a lost server are not that: they stop the start.
            if exc.status in (401, 403) or exc.status is None:
                raise
            return None
        commits = self._json(resp, "commits page").get("commits") or []
        return str(commits[0]["sha"]) if commits and isinstance(commits[0], dict) and "sha" in commits[0] else None

    @staticmethod
    def _budget(info: dict[str, Any]) -> float | None:
        tags = info.get("tags")
        raw = tags.get("budgetusd") if isinstance(tags, dict) else None
        try:
            return float(raw) if raw is not None else None
        except ValueError:
            return None

    # ---- HTTP and error translation -------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...],
        what: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        headers = {}
        if self._session_api_key is not None and self._session_api_key.get_secret_value():
            headers["X-Session-API-Key"] = self._session_api_key.get_secret_value()
        try:
            resp = self._http.request(method, path, json=json, params=params, headers=headers)
        except httpx.TimeoutException:
            raise AgentError(f"agent-server timed out ({what}: {method} {path})", retryable=True) from None
        except httpx.TransportError as exc:
            raise AgentError(
                f"lost the connection to the agent-server at {self._http.base_url} ({what}: {type(exc).__name__})",
                retryable=True,
            ) from None
        if resp.status_code in ok:
            return resp
        raise self._error(resp, method, path, what)

    def _error(self, resp: httpx.Response, method: str, path: str, what: str) -> AgentError:
        code = resp.status_code
        where = f"{what}: {method} {path}"
        if code in (401, 403):
            return AgentError(
                f"the OpenHands agent-server at {self._http.base_url} refused our credentials (HTTP {code}, {where}): "
                "set PROMPTSHIP_OPENHANDS__SESSION_API_KEY to the server's SESSION_API_KEY",
                status=code,
            )
        detail = self._scrub(_detail(resp))
        if code == 404:
            return AgentError(f"not found on the agent-server ({where}){detail}", status=404)
        if code == 409:
            return AgentError(f"conflict on the agent-server ({where}){detail}", status=409)
        if code == 422:
            return AgentError(f"the agent-server rejected the request ({where}){detail}", status=422)
        if code == 429:
            return AgentError(
                f"the agent-server is at capacity ({where}){detail}",
                retryable=True,
                status=429,
                retry_after_s=retry_after_s(resp.headers, time.time(), default_s=None),
            )
        if code >= 500:
            return AgentError(
                f"the agent-server failed ({where}, HTTP {code}){detail}",
                retryable=True,
                status=code,
                retry_after_s=retry_after_s(resp.headers, time.time(), default_s=None),
            )
        return AgentError(f"unexpected HTTP {code} from the agent-server ({where}){detail}", status=code)

    def _json(self, resp: httpx.Response, what: str) -> dict[str, Any]:
        data = _json_any(resp)
        if not isinstance(data, dict):
            raise AgentError(f"malformed {what} from the agent-server (expected a JSON object)")
        return data

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret:
                text = text.replace(secret, "***")
        return text


def _json_any(resp: httpx.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        raise AgentError(
            f"malformed body from the agent-server (HTTP {resp.status_code}, not JSON: {resp.text[:80]!r})"
        ) from None


def _detail(resp: httpx.Response) -> str:
    """A short reason from an error body — for 422 only the location and message, never the echoed input."""
    try:
        body = resp.json()
    except ValueError:
        return f": {resp.text[:200]}" if resp.text else ""
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc", []))
                parts.append(f"{loc}: {item.get('msg', '')}")
        return ": " + "; ".join(parts) if parts else ""
    if isinstance(detail, str):
        extra = body.get("exception") if isinstance(body, dict) else None
        return f": {detail}" + (f" ({extra})" if isinstance(extra, str) else "")
    return ""


def _working_dir(info: dict[str, Any]) -> str | None:
    ws = info.get("workspace")
    wd = ws.get("working_dir") if isinstance(ws, dict) else None
    return str(wd) if wd else None


def _commits_since(commits: Iterable[Any], base_sha: str | None) -> tuple[str, ...]:
    out: list[str] = []
    for c in commits:
        if not isinstance(c, dict) or "sha" not in c:
            raise AgentError("malformed commit entry from the agent-server")
        if base_sha is None or c["sha"] == base_sha:
            break
        out.append(str(c["sha"]))
    return tuple(out)


def _litellm_model(model: str) -> str:
    """The agent's LiteLLM speaks OpenAI to the gateway (``openai/<group>``; the gateway's ``agent_access``
    already spells it so). A bare name gets the prefix, so the gateway receives the name as given."""
    return model if model.startswith("openai/") else f"openai/{model}"
