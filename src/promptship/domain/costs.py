"""Cost and budget arithmetic of the LLM gateway. Pure: no I/O, no clock of its own.

The ledger (``promptship.store.ledger``) supplies the sums under a lock; the decisions are made here.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict

from promptship.domain.results import LLMMode
from promptship.errors import ConfigError

BudgetScope = Literal["run", "day", "exploration"]
OverBudget = Literal["reroute_local", "refuse"]


class BudgetCheck(BaseModel):
    """Whether a call that may cost ``estimate_usd`` fits the run's and the day's remaining budget."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    estimate_usd: float
    scope: BudgetScope | None = None
    limit_usd: float = 0.0
    spent_usd: float = 0.0

    @property
    def reason(self) -> str:
        if self.ok:
            return "within budget"
        return (
            f"{self.scope} budget: {self.spent_usd:.4f} USD spent or reserved + {self.estimate_usd:.4f} estimated "
            f"> limit {self.limit_usd:.4f} USD"
        )


def check_budget(
    *,
    mode: LLMMode,
    estimate_usd: float,
    run_spent_usd: float,
    run_cap_usd: float | None,
    day_cloud_spent_usd: float,
    day_cloud_cap_usd: float | None,
) -> BudgetCheck:
    """The run cap applies to every call; the daily cap only to cloud calls. ``None`` means no cap.

    Spent amounts include open reservations, so concurrent callers cannot pass the same remaining budget.
    """
    if run_cap_usd is not None and run_spent_usd + estimate_usd > run_cap_usd + 1e-12:
        return BudgetCheck(
            ok=False, estimate_usd=estimate_usd, scope="run", limit_usd=run_cap_usd, spent_usd=run_spent_usd
        )
    if (
        mode == "cloud"
        and day_cloud_cap_usd is not None
        and day_cloud_spent_usd + estimate_usd > day_cloud_cap_usd + 1e-12
    ):
        return BudgetCheck(
            ok=False,
            estimate_usd=estimate_usd,
            scope="day",
            limit_usd=day_cloud_cap_usd,
            spent_usd=day_cloud_spent_usd,
        )
    return BudgetCheck(ok=True, estimate_usd=estimate_usd)


def estimate_tokens(text: str) -> int:
    """A conservative token estimate without a tokenizer: one token per three characters."""
    return math.ceil(len(text) / 3) if text else 0


def estimate_cost_usd(
    *, prompt_tokens: int, max_completion_tokens: int, input_cost_per_token: float, output_cost_per_token: float
) -> float:
    """Most a call can cost: its prompt plus the largest completion it may produce."""
    return prompt_tokens * input_cost_per_token + max_completion_tokens * output_cost_per_token


def priced_cost_usd(
    *, prompt_tokens: int, completion_tokens: int, input_cost_per_token: float, output_cost_per_token: float
) -> float:
    """What a call costs at list prices (used for local models, and for a cloud call that reported no cost)."""
    return prompt_tokens * input_cost_per_token + completion_tokens * output_cost_per_token


def ledger_day(moment: datetime, timezone: str) -> str:
    """The ledger day (``YYYY-MM-DD``) of an aware ``moment`` in ``timezone``."""
    return moment.astimezone(zone(timezone)).date().isoformat()


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"PROMPTSHIP_LLM__TIMEZONE={name!r} is not a known timezone (use an IANA name such as 'Europe/Paris')"
        ) from None


def to_display(usd: float, rate: float) -> float:
    """``usd`` in the display currency."""
    return round(usd * rate, 6)
