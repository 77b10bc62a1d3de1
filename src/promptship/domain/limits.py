"""The bounds one run works within, handed to the steps by the run context (steps never read settings)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RunLimits(BaseModel):
    """Repair rounds, waits and caches of a run. Built from settings by ``promptship.wiring.run_limits``."""

    model_config = ConfigDict(frozen=True)

    repair_rounds: int = Field(default=2, ge=0)
    ci_timeout_s: float = Field(default=1800.0, gt=0)
    merge_timeout_s: float = Field(default=3600.0, gt=0)
    rollout_timeout_s: float = Field(default=300.0, gt=0)
    agent_timeout_s: float = Field(default=1800.0, gt=0)
    agent_max_iterations: int = Field(default=50, ge=1)
    workspace_root: str = Field(description="Directory under which each request's checkout lives.")
    default_health_url: str | None = None
    step_cache_days: float = Field(default=7.0, gt=0, description="How long a step's persisted result is reused.")
    lease_ttl_s: float = Field(default=120.0, gt=0, description="A run's hold on its request without a heartbeat.")
    suspend_after_s: float = Field(
        default=0.0, ge=0, description="A wait longer than this suspends the flow run (0: never suspend)."
    )
    per_repository_limit: int = Field(default=0, ge=0, description="Runs of one repository working at once (0: any).")
    global_limit: int = Field(default=0, ge=0, description="Runs working at once in all (0: any).")
