"""The one exception tree of promptship.

    PromptshipError
    ├── ConfigError                 a setting or input is missing or wrong; the message names it and the fix
    ├── InvalidRequest              a DevRequest (or webhook payload) that cannot be acted on
    │   └── AttemptInProgress       another flow run is working on the same request right now
    ├── BudgetExceeded              a call would spend more than the run's or the day's budget
    ├── SensitiveDataBlocked        sensitive data would have left the machine and no local model can take it
    ├── AccessKeyRevoked            a gateway key that stands for no run any more (its attempt ended)
    └── ServiceError(service, retryable)
        ├── LLMError                the LLM gateway / LiteLLM / a provider
        ├── AgentError              the OpenHands agent-server
        ├── CodeHostError           GitHub (REST or git)
        └── ClusterError            the Kubernetes API

Vendor exceptions are translated into this tree once, inside the adapter that called the vendor.
Expected outcomes (red CI, stalled rollout, unhealthy service) are verdict values, never exceptions.
Tasks retry only a ``ServiceError`` whose ``retryable`` is true.
"""

from __future__ import annotations


class PromptshipError(Exception):
    """Base of every error promptship raises on purpose."""


class ConfigError(PromptshipError):
    """A setting is missing or invalid. The message names the setting and how to fix it."""


class InvalidRequest(PromptshipError):
    """A request that cannot be acted on; nothing was changed."""


class AttemptInProgress(InvalidRequest):
    """The request already has an attempt running in another flow run; nothing was started."""

    def __init__(self, message: str, *, attempt_id: str, holder: str | None):
        super().__init__(message)
        self.attempt_id = attempt_id
        self.holder = holder

    def __reduce__(self):  # picklable with its keyword arguments (Prefect persists exceptions)
        return (_rebuild_in_progress, (str(self), self.attempt_id, self.holder))


def _rebuild_in_progress(message: str, attempt_id: str, holder: str | None) -> AttemptInProgress:
    return AttemptInProgress(message, attempt_id=attempt_id, holder=holder)


class BudgetExceeded(PromptshipError):
    """Spending would exceed a budget (per run or per day)."""

    def __init__(self, message: str, *, scope: str = "run", limit_usd: float = 0.0, spent_usd: float = 0.0):
        super().__init__(message)
        self.scope = scope
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd


class SensitiveDataBlocked(PromptshipError):
    """Sensitive data would have left the machine, and no local model is available to take the call."""

    def __init__(self, message: str, *, reasons: list[str] | None = None):
        super().__init__(message)
        self.reasons = list(reasons or [])


class AccessKeyRevoked(PromptshipError):
    """A gateway key that no longer stands for a run (its attempt ended, ``expire_agent_access``) was used: found
    when the call's reservation is taken, so nothing was sent and nothing is charged."""


class ServiceError(PromptshipError):
    """An outside service failed. ``retryable`` says whether trying again may help."""

    service: str = "service"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        retry_after_s: float | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.status = status
        self.retry_after_s = retry_after_s

    def __reduce__(self):  # keep pickling (Prefect persists exceptions) faithful to the keyword arguments
        return (
            _rebuild_service_error,
            (type(self), str(self), self.retryable, self.status, self.retry_after_s),
        )


def _rebuild_service_error(
    cls: type[ServiceError], message: str, retryable: bool, status: int | None, retry_after_s: float | None
) -> ServiceError:
    return cls(message, retryable=retryable, status=status, retry_after_s=retry_after_s)


class LLMError(ServiceError):
    service = "llm"


class AgentError(ServiceError):
    service = "agent"


class CodeHostError(ServiceError):
    service = "codehost"


class ClusterError(ServiceError):
    service = "cluster"


def is_retryable(exc: BaseException) -> bool:
    """True for a ServiceError that may succeed when tried again (5xx, timeouts, rate limits)."""
    return isinstance(exc, ServiceError) and exc.retryable
