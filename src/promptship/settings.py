"""All configuration, from environment variables prefixed ``PROMPTSHIP_`` (nested: ``PROMPTSHIP_LLM__TIMEOUT_S``).

Settings are grouped by concern: ``pipeline`` (bounds of a run's steps), ``runs`` (how many work at once),
``health`` (the health gate), ``llm``, ``budget``, ``github``, ``kube``, ``openhands`` (how to reach each outside
service). A setting that moved keeps its old name as an alias: ``MOVED`` is the one table of them, applied before
validation, and the new name wins when both are set. ``reference_markdown()`` renders every setting into
``docs/SETTINGS.md`` (``promptship settings-reference``).

Every credential is a ``SecretStr``: it is never logged, never put in an artifact or a flow parameter.
Build one with ``Settings()``; nothing here is a module-level instance.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict


class PipelineSettings(BaseModel):
    """Bounds of a run's steps: how long each wait may take, how many repair rounds, where checkouts live."""

    repair_rounds: int = Field(default=2, ge=0, le=10, description="Most CI repair rounds per run.")
    ci_timeout_s: float = Field(default=1800.0, gt=0, description="Most a CI wait may take (default 30 min).")
    merge_timeout_s: float = Field(default=3600.0, gt=0, description="Most a wait for a human merge may take.")
    rollout_timeout_s: float = Field(default=300.0, gt=0, description="Most a rollout may take.")
    agent_timeout_s: float = Field(default=1800.0, gt=0, description="Most an agent run may take.")
    agent_max_iterations: int = Field(default=50, ge=1, description="Most agent steps per run.")
    workspace_root: Path | None = Field(
        default=None, description="Where per-run checkouts live. Empty: $PROMPTSHIP_HOME/workspaces."
    )
    step_cache_days: float = Field(
        default=7.0, gt=0, description="How long a step's persisted result may be reused by the same attempt (days)."
    )
    suspend_after_s: float = Field(
        default=30.0,
        ge=0,
        description="A wait for CI, a human merge or the base branch's image that lasts longer than this suspends "
        "the flow run (its process or pod is released; the webhook receiver or `promptship sweep` resumes it). "
        "Only runs of a deployment can suspend. 0: never suspend (every wait holds its worker).",
    )


class RunsSettings(BaseModel):
    """Fair under load: how many dev-cycle runs may work at once, per repository and in all (Prefect work queue
    and work pool concurrency limits, docs/PIPELINE.md "Fair under load"). A run over a limit stays Scheduled in
    Prefect, with no process, until there is room; a suspended run counts against neither limit."""

    per_repository_limit: int = Field(
        default=0,
        ge=0,
        description="Most runs of one repository working at once: the concurrency limit of the repository's work "
        "queue `promptship-repo:<owner>:<name>` in the deployment's work pool (created or updated by whatever "
        "starts a run of the repository). 0: no per-repository limit (runs stay in their deployment's queue).",
    )
    global_limit: int = Field(
        default=0,
        ge=0,
        description="Most flow runs working at once over all repositories: the concurrency limit of the "
        "deployment's work pool (set by the worker at its start and by whatever starts a run; it counts every flow "
        "run of the pool). 0: promptship sets none (a limit set in Prefect by hand stays).",
    )


class HealthSettings(BaseModel):
    """The health gate after a rollout: N consecutive good probes within the retries."""

    url: str | None = Field(default=None, description="Health URL when the request gives none.")
    consecutive: int = Field(default=3, ge=1, description="Consecutive successes for healthy.")
    retries: int = Field(default=10, ge=1, description="Most probes before unhealthy.")
    timeout_s: float = Field(default=2.0, gt=0, description="Timeout of one probe.")
    interval_s: float = Field(default=0.5, ge=0, description="Pause between probes.")
    max_latency_ms: float | None = Field(default=None, description="Optional latency bound per probe.")


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
    llamacpp_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible base URL of a llama.cpp server (…/v1) serving the policy's llamacpp model "
        "groups (`scripts/local-model.sh up` prints it). Not set: those groups fail over to the next local one.",
    )
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
    exploration_enabled: bool = Field(
        default=False,
        description="Route a small, budgeted share of clean (never sensitive) calls of a class to one of its "
        "exploration candidates, to gather outcome evidence (docs/ROUTING.md, Exploration). Off by default.",
    )
    exploration_share: float = Field(
        default=0.05, ge=0, le=1, description="Share of the eligible calls explored (a reproducible draw per call)."
    )
    exploration_budget_usd_per_day: float = Field(
        default=0.5, ge=0, description="Most the explored calls may cost per ledger day (USD); then exploring stops."
    )
    exploration_candidates: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Task class → model groups to explore for it, JSON: {"tests": ["codellama"]}. Not '
        "'sensitive'. Any exploration_* setting given replaces the policy file's `exploration`.",
    )
    gate_allowlist: list[str] = Field(
        default_factory=lambda: ["openhands@all-hands.dev"],
        description="Exact values the sensitive-data gate may let leave the machine because they are public "
        "(default: the commit e-mail in the OpenHands agent-server's own system prompt).",
    )


class BudgetSettings(BaseModel):
    """What the cloud may cost."""

    cloud_daily_usd: float = Field(
        default=10.87, ge=0, description="Most the cloud may cost per day (the seed's €10 at the default rate)."
    )
    run_default_usd: float = Field(default=2.0, ge=0, description="Budget of a run that states none.")
    over_budget: str = Field(
        default="reroute_local",
        description="What happens to a cloud call over budget: 'reroute_local' or 'refuse'.",
    )


class OpenHandsSettings(BaseModel):
    """How to reach the OpenHands agent-server."""

    url: str = Field(default="http://127.0.0.1:3000", description="OpenHands agent-server base URL.")
    session_api_key: SecretStr | None = Field(
        default=None, description="X-Session-API-Key of the agent-server, when it has one."
    )


class GitHubSettings(BaseModel):
    """How to reach GitHub, who may start runs through its webhook, and where CI publishes images."""

    api_url: str = Field(
        default="https://api.github.com",
        description="REST base URL (GitHub Enterprise: https://HOST/api/v3; local forge: http://127.0.0.1:P/api/v3).",
    )
    token: SecretStr | None = Field(
        default=None, description="GitHub token with repo scope (a personal token; unused when app_id is set)."
    )
    app_id: int | None = Field(
        default=None,
        description="GitHub App id (the App's settings → About). Set: promptship acts as the App's installation "
        "(short-lived installation tokens) instead of the token.",
    )
    app_private_key: SecretStr | None = Field(
        default=None, description="The GitHub App's private key (PEM text). Or app_private_key_file."
    )
    app_private_key_file: Path | None = Field(
        default=None, description="Path of the GitHub App's private key (the .pem GitHub generated)."
    )
    app_installation_id: int | None = Field(
        default=None,
        description="The App's installation id. Empty: the installation on the first allowed repository, else "
        "the App's only installation.",
    )
    app_token_refresh_margin_s: float = Field(
        default=300.0,
        ge=0,
        le=3000,
        description="Renew an installation token this long before it expires (a git push started with a token "
        "must finish with it).",
    )
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
    image_template: str = Field(
        default="forge.local/{owner}/{repo}/{component}:{sha}",
        description="Image reference CI publishes for a base-branch commit ({owner}, {repo}, {component}, {sha}); "
        "e.g. ghcr.io/{owner}/{repo}/{component}:{sha} for GitHub Actions pushing to GHCR.",
    )
    ci_poll_initial_s: float = Field(default=5.0, gt=0, description="First pause between CI polls (backoff).")
    ci_poll_max_s: float = Field(default=60.0, gt=0, description="Longest pause between CI polls.")


class KubeSettings(BaseModel):
    """How to reach the cluster, the deploy lease, and the GitOps mode."""

    kubeconfig: Path | None = Field(default=None, description="kubeconfig path. Empty: in-cluster or ~/.kube.")
    context: str | None = Field(default=None, description="kubeconfig context.")
    in_cluster: bool = Field(
        default=False, description="Use the pod's ServiceAccount (in-cluster config) instead of a kubeconfig."
    )
    poll_interval_s: float = Field(default=1.0, gt=0, description="Pause between reads of a rollout's status.")
    crash_loop_restarts: int = Field(
        default=3,
        ge=0,
        description="A rollout fails as soon as a new pod's container has been restarted this many times and is "
        "not running (CrashLoopBackOff), without waiting for the progress deadline. 0: wait, as kubectl does.",
    )
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


# Every setting that moved, old (group, field) -> new (group, field); the environment names follow
# (PROMPTSHIP_GITHUB__REPAIR_ROUNDS -> PROMPTSHIP_PIPELINE__REPAIR_ROUNDS). One table rather than AliasChoices:
# with nested environment parsing an old name lands in its old group's dict, which a field alias cannot reach.
MOVED: dict[tuple[str, str], tuple[str, str]] = {
    ("github", "repair_rounds"): ("pipeline", "repair_rounds"),
    ("github", "ci_timeout_s"): ("pipeline", "ci_timeout_s"),
    ("github", "merge_timeout_s"): ("pipeline", "merge_timeout_s"),
    ("kube", "rollout_timeout_s"): ("pipeline", "rollout_timeout_s"),
    ("openhands", "timeout_s"): ("pipeline", "agent_timeout_s"),
    ("openhands", "max_iterations"): ("pipeline", "agent_max_iterations"),
    ("openhands", "workspace_root"): ("pipeline", "workspace_root"),
    ("kube", "health_url"): ("health", "url"),
    ("kube", "health_consecutive"): ("health", "consecutive"),
    ("kube", "health_retries"): ("health", "retries"),
    ("kube", "health_timeout_s"): ("health", "timeout_s"),
    ("kube", "health_interval_s"): ("health", "interval_s"),
    ("kube", "health_max_latency_ms"): ("health", "max_latency_ms"),
}


class Settings(BaseSettings):
    """promptship's settings. Environment: ``PROMPTSHIP_<FIELD>`` and ``PROMPTSHIP_<GROUP>__<FIELD>``."""

    model_config = SettingsConfigDict(
        env_prefix="PROMPTSHIP_", env_nested_delimiter="__", extra="ignore", env_file=None
    )

    home: Path = Field(
        default=Path(".promptship"), description="Local state: store, Prefect home, workspaces, sandbox data."
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the one store every component shares (PostgreSQL on a cluster: "
        "'postgresql+psycopg://user:password@host:5432/db'). Empty: SQLite under home (a single machine).",
    )
    store_key: SecretStr | None = Field(
        default=None,
        description="Key that encrypts the prompts the store keeps (Fernet: 32 url-safe base64 bytes; "
        "`promptship store-key` prints a new one). The same in every component of a shared store; required "
        "when the store is not SQLite. Empty with SQLite: a key file beside the database, created once.",
    )
    services_factory: str | None = Field(
        default=None,
        description="'module:function' building the Services of a process that has none installed (sandbox "
        "workers, tests), called with these settings. Empty: real adapters from these settings.",
    )
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings, description="Bounds of a run's steps.")
    runs: RunsSettings = Field(default_factory=RunsSettings, description="How many runs work at once.")
    health: HealthSettings = Field(default_factory=HealthSettings, description="The health gate after a rollout.")
    llm: LLMSettings = Field(default_factory=LLMSettings, description="LLM routing and the llm-config values.")
    budget: BudgetSettings = Field(default_factory=BudgetSettings, description="What the cloud may cost.")
    github: GitHubSettings = Field(default_factory=GitHubSettings, description="GitHub and its webhook.")
    kube: KubeSettings = Field(default_factory=KubeSettings, description="The cluster, deploy lease and GitOps.")
    openhands: OpenHandsSettings = Field(default_factory=OpenHandsSettings, description="The agent-server.")

    @model_validator(mode="before")
    @classmethod
    def _move_old_names(cls, data: Any) -> Any:
        """Apply ``MOVED``: a value under an old name goes to its new one, unless the new one is set."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for (old_group, old_field), (new_group, new_field) in MOVED.items():
            old = data.get(old_group)
            if not isinstance(old, dict) or old_field not in old:
                continue
            old = data[old_group] = dict(old)
            value = old.pop(old_field)
            new = data.get(new_group, {})
            if isinstance(new, dict):  # a group given as a model instance was set whole: it wins
                data[new_group] = {new_field: value, **new}
        return data

    def store_url(self) -> str:
        """The store's SQLAlchemy URL."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'promptship.db').resolve()}"

    def workspace_root(self) -> Path:
        """Where per-run checkouts live: ``pipeline.workspace_root``, else ``home/workspaces``."""
        return (self.pipeline.workspace_root or self.home / "workspaces").resolve()


# --- the settings reference (docs/SETTINGS.md) ---

_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))  # annotated_types' Gt, Ge, Lt, Le (or Interval)


def env_name(group: str | None, field: str) -> str:
    """The environment variable of a setting: ``PROMPTSHIP_<FIELD>`` or ``PROMPTSHIP_<GROUP>__<FIELD>``."""
    prefix = Settings.model_config.get("env_prefix", "")
    delimiter = Settings.model_config.get("env_nested_delimiter") or "__"
    return f"{prefix}{group.upper()}{delimiter}{field.upper()}" if group else f"{prefix}{field.upper()}"


def reference_markdown() -> str:
    """The settings reference: one markdown table per group, from the model and its ``Field`` descriptions.

    Pure: reads no environment, so it is the same on every machine. A secret's default is never shown."""
    old_names: dict[tuple[str, str], list[str]] = {}
    for (old_group, old_field), new in MOVED.items():
        old_names.setdefault(new, []).append(env_name(old_group, old_field))
    lines = [
        "# Settings reference",
        "",
        "<!-- Generated by `promptship settings-reference` from src/promptship/settings.py: do not edit. -->",
        "",
        'Every setting is read from the environment (`Settings()`); lists are JSON (`["a", "b"]`). An old name',
        "still works; the new name wins when both are set. Credentials are `SecretStr`: never logged, never shown.",
        "",
    ]
    top = {name: info for name, info in Settings.model_fields.items() if _group_model(info) is None}
    sections: list[tuple[str | None, str, dict[str, FieldInfo]]] = [(None, "Top level", top)]
    for name, info in Settings.model_fields.items():
        if (model := _group_model(info)) is not None:
            sections.append((name, f"`{name}`: {info.description}", model.model_fields))
    for group, title, fields in sections:
        lines += [f"## {title}", "", "| Setting | Environment variable | Old names | Type | Default | Description |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for name, info in fields.items():
            dotted = f"{group}.{name}" if group else name
            old = ", ".join(f"`{n}`" for n in old_names.get((group or "", name), []))
            cells = [f"`{dotted}`", f"`{env_name(group, name)}`", old, f"`{_type_text(info)}`", _default_text(info),
                     info.description or ""]  # fmt: skip
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _group_model(info: FieldInfo) -> type[BaseModel] | None:
    model = info.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_is_secret(a) for a in get_args(annotation))


def _type_text(info: FieldInfo) -> str:
    bounds: list[str] = []
    for m in info.metadata:
        bounds += [f"{sign} {getattr(m, attr)}" for attr, sign in _BOUNDS if getattr(m, attr, None) is not None]
    text = _annotation_text(info.annotation)
    return f"{text} ({', '.join(bounds)})" if bounds else text


def _annotation_text(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return " | ".join(_annotation_text(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_annotation_text(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation))


def _default_text(info: FieldInfo) -> str:
    if _is_secret(info.annotation):
        return "(secret)"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list | dict):
        return f"`{json.dumps(value)}`"
    return f"`{value}`"
