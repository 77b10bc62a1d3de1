"""All configuration, from environment variables prefixed ``PROMPTSHIP_`` (nested: ``PROMPTSHIP_LLM__TIMEOUT_S``).

Every credential is a ``SecretStr``: it is never logged, never put in an artifact or a flow parameter.
Build one with ``Settings()``; nothing here is a module-level instance.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class PrefectSettings(BaseModel):
    api_url: str | None = Field(
        default=None,
        description="Prefect API URL (e.g. http://127.0.0.1:4200/api). Empty: Prefect's own setting or the "
        "embedded server.",
    )


class LLMSettings(BaseModel):
    """The seed's ``llm-config`` ConfigMap values, with its defaults."""

    default_model: str = Field(default="mistral", description="Model for the default class (llm-config).")
    local_models: list[str] = Field(
        default_factory=lambda: ["llama3", "mistral", "codellama"],
        description="Models served by Ollama on the local machine or cluster (llm-config).",
    )
    max_retries: int = Field(default=3, ge=0, le=10, description="Retries per LLM call (llm-config).")
    timeout_s: float = Field(default=30.0, gt=0, description="Timeout of one LLM call in seconds (llm-config).")
    ollama_base_url: str = Field(default="http://127.0.0.1:11434", description="Ollama's base URL.")
    openrouter_base_url: str = Field(
        default="https://openrouter.ai/api/v1", description="OpenRouter's OpenAI-compatible base URL."
    )
    openrouter_api_key: SecretStr | None = Field(default=None, description="OpenRouter API key (cloud models).")
    policy_file: Path | None = Field(
        default=None, description="YAML routing policy overriding the built-in seed mapping."
    )
    gateway_url: str = Field(
        default="http://127.0.0.1:4000",
        description="Where promptship's gateway service listens; the code agent's base_url points here.",
    )
    local_cost_per_1k_tokens_usd: float = Field(
        default=0.0, ge=0, description="Price charged to local model calls in the ledger."
    )
    display_currency: str = Field(default="EUR", description="Currency the seed's budget targets are shown in.")
    usd_to_display_rate: float = Field(default=0.92, gt=0, description="1 USD in the display currency.")
    timezone: str = Field(default="UTC", description="Timezone that delimits a ledger day.")
    gate_allowlist: list[str] = Field(
        default_factory=lambda: ["openhands@all-hands.dev"],
        description="Exact values the sensitive-data gate may let leave the machine because they are public "
        "(default: the commit e-mail in the OpenHands agent-server's own system prompt).",
    )


class BudgetSettings(BaseModel):
    cloud_daily_usd: float = Field(
        default=10.87, ge=0, description="Most the cloud may cost per day (the seed's €10 at the default rate)."
    )
    run_default_usd: float = Field(default=2.0, ge=0, description="Budget of a run that states none.")
    over_budget: str = Field(
        default="reroute_local",
        description="What happens to a cloud call over budget: 'reroute_local' or 'refuse'.",
    )


class OpenHandsSettings(BaseModel):
    url: str = Field(default="http://127.0.0.1:3000", description="OpenHands agent-server base URL.")
    session_api_key: SecretStr | None = Field(
        default=None, description="X-Session-API-Key of the agent-server, when it has one."
    )
    timeout_s: float = Field(default=1800.0, gt=0, description="Most an agent run may take.")
    max_iterations: int = Field(default=50, ge=1, description="Most agent steps per run.")
    workspace_root: Path | None = Field(
        default=None, description="Where per-run checkouts live. Empty: $PROMPTSHIP_HOME/workspaces."
    )


class GitHubSettings(BaseModel):
    api_url: str = Field(
        default="https://api.github.com",
        description="REST base URL (GitHub Enterprise: https://HOST/api/v3; local forge: http://127.0.0.1:P/api/v3).",
    )
    token: SecretStr | None = Field(default=None, description="GitHub token with repo scope.")
    webhook_secret: SecretStr | None = Field(default=None, description="Secret of the GitHub webhook.")
    allowed_repositories: list[str] = Field(
        default_factory=list, description="owner/name of repositories allowed to start runs via webhook."
    )
    allowed_associations: list[str] = Field(
        default_factory=lambda: ["OWNER", "MEMBER", "COLLABORATOR"],
        description="Author associations allowed to start runs via webhook.",
    )
    trigger_label: str = Field(default="promptship", description="Issue label that starts a run.")
    webhook_max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        le=25 * 1024 * 1024,
        description="Largest webhook body the receiver reads (413 above; GitHub caps payloads at 25 MB).",
    )
    ci_timeout_s: float = Field(default=1800.0, gt=0, description="Most a CI wait may take (default 30 min).")
    merge_timeout_s: float = Field(default=3600.0, gt=0, description="Most a wait for a human merge may take.")
    repair_rounds: int = Field(default=2, ge=0, le=10, description="Most CI repair rounds per run.")
    image_template: str = Field(
        default="forge.local/{owner}/{repo}/{component}:{sha}",
        description="Image reference CI publishes for a base-branch commit ({owner}, {repo}, {component}, {sha}); "
        "e.g. ghcr.io/{owner}/{repo}/{component}:{sha} for GitHub Actions pushing to GHCR.",
    )
    ci_poll_initial_s: float = Field(default=5.0, gt=0, description="First pause between CI polls (backoff).")
    ci_poll_max_s: float = Field(default=60.0, gt=0, description="Longest pause between CI polls.")


class KubeSettings(BaseModel):
    kubeconfig: Path | None = Field(default=None, description="kubeconfig path. Empty: in-cluster or ~/.kube.")
    context: str | None = Field(default=None, description="kubeconfig context.")
    namespace: str = Field(default="demo", description="Default target namespace.")
    rollout_timeout_s: float = Field(default=300.0, gt=0, description="Most a rollout may take.")
    health_url: str | None = Field(default=None, description="Health URL when the request gives none.")
    health_consecutive: int = Field(default=3, ge=1, description="Consecutive successes for healthy.")
    health_retries: int = Field(default=10, ge=1, description="Most probes before unhealthy.")
    health_timeout_s: float = Field(default=2.0, gt=0, description="Timeout of one probe.")
    health_interval_s: float = Field(default=0.5, ge=0, description="Pause between probes.")
    health_max_latency_ms: float | None = Field(default=None, description="Optional latency bound per probe.")
    in_cluster: bool = Field(
        default=False, description="Use the pod's ServiceAccount (in-cluster config) instead of a kubeconfig."
    )
    poll_interval_s: float = Field(default=1.0, gt=0, description="Pause between reads of a rollout's status.")
    lease_duration_s: int = Field(
        default=30, ge=5, description="Deploy lease (one rollout at a time per Deployment): seconds until it expires."
    )
    lease_wait_s: float = Field(
        default=600.0, ge=0, description="Most a rollout waits for another run's deploy lease of the same Deployment."
    )
    gitops_repo_url: str | None = Field(
        default=None, description="GitOps mode: the repository whose manifests the GitOps controller applies."
    )
    gitops_path: str = Field(default="k8s", description="GitOps mode: manifests directory inside that repository.")
    gitops_branch: str = Field(default="main", description="GitOps mode: the branch the controller follows.")
    gitops_token: SecretStr | None = Field(default=None, description="GitOps mode: token for pushing over HTTPS.")
    gitops_application: str | None = Field(
        default=None, description="GitOps mode: Argo CD Application to watch (empty: watch the Deployment)."
    )
    gitops_application_namespace: str = Field(default="argocd", description="Namespace of that Application.")


class Settings(BaseSettings):
    """promptship's settings. Environment: ``PROMPTSHIP_<FIELD>`` and ``PROMPTSHIP_<GROUP>__<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="PROMPTSHIP_", env_nested_delimiter="__", extra="ignore", env_file=None
    )

    home: Path = Field(
        default=Path(".promptship"), description="Local state: store, Prefect home, workspaces, sandbox data."
    )
    database_url: str | None = Field(default=None, description="SQLAlchemy URL of the store. Empty: SQLite under home.")
    sandbox: bool = Field(
        default=False, description="Use the local stand-ins (forge, LLM, cluster) instead of real services."
    )
    services_factory: str | None = Field(
        default=None,
        description="'module:function' building the Services of a process that has none installed (sandbox "
        "workers, tests), called with these settings. Empty: real adapters from these settings.",
    )
    prefect: PrefectSettings = Field(default_factory=PrefectSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    openhands: OpenHandsSettings = Field(default_factory=OpenHandsSettings)
    github: GitHubSettings = Field(default_factory=GitHubSettings)
    kube: KubeSettings = Field(default_factory=KubeSettings)

    def store_url(self) -> str:
        """The store's SQLAlchemy URL."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'promptship.db').resolve()}"

    def workspace_root(self) -> Path:
        return (self.openhands.workspace_root or self.home / "workspaces").resolve()
