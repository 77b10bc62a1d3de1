"""Builds adapters from settings — the only module that does.

A process holds one ``Ports``: each port is built the first time it is used (a webhook receiver that only
comments builds its code host and nothing else). Flows resolve it once per run at the edge
(``process_ports``) and pass it down in the run context; tests and the demo ``install()`` their own.
Each port's boundary kind (``real``, ``protocol stand-in``, ``in-process fake``) travels with it, so the
demo can say what was real.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Generic, Literal, TypeVar, cast

from promptship.domain.limits import RunLimits
from promptship.errors import ConfigError
from promptship.ports import Cluster, CodeAgent, CodeHost, CompileChecker, HealthProbe, LLMGateway, MetricsSink
from promptship.settings import Settings

Boundary = Literal["real", "protocol stand-in", "in-process fake"]
PortName = Literal["llm", "agent", "code_host", "cluster", "health", "sink", "compiler", "gitops"]
PORT_NAMES: tuple[PortName, ...] = ("llm", "agent", "code_host", "cluster", "health", "sink", "compiler", "gitops")

T = TypeVar("T")


class _Port(Generic[T]):
    """A port attribute of ``Ports``: built by its factory on first read, then kept."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Ports | None, objtype: type | None = None) -> T:
        assert obj is not None, "a port is read from a Ports instance"
        return cast(T, obj.resolve(self.name))  # type: ignore[arg-type]

    def __set__(self, obj: Ports, value: T) -> None:
        obj.provide(self.name, value)  # type: ignore[arg-type]


class Ports:
    """The ports one process uses, each built lazily and at most once, and what kind of boundary each is."""

    llm = _Port[LLMGateway]()
    agent = _Port[CodeAgent]()
    code_host = _Port[CodeHost]()
    cluster = _Port[Cluster]()
    health = _Port[HealthProbe]()
    sink = _Port[MetricsSink]()
    compiler = _Port[CompileChecker]()
    gitops = _Port["Cluster | None"]()  # the GitOps deployer, for requests with deploy_mode "gitops"

    def __init__(
        self,
        settings: Settings,
        *,
        factories: dict[str, Callable[[Ports], Any]] | None = None,
        boundaries: dict[str, Boundary] | None = None,
        forget_replaced_parameters: Callable[[], str | None] | None = None,
        **instances: Any,
    ):
        unknown = set(instances) - set(PORT_NAMES)
        if unknown:
            raise TypeError(f"not ports: {sorted(unknown)}")
        self.settings = settings
        self.boundaries: dict[str, Boundary] = dict(boundaries or {})
        self._factories = dict(factories or {})
        self._built: dict[str, Any] = dict(instances)
        self._lock = threading.RLock()
        self._forget_replaced_parameters = forget_replaced_parameters
        if "gitops" not in self._built and "gitops" not in self._factories:
            self._built["gitops"] = None

    def resolve(self, name: PortName) -> Any:
        """The port ``name``, built now if it was not yet."""
        with self._lock:
            if name not in self._built:
                factory = self._factories.get(name)
                if factory is None:
                    raise ConfigError(f"this process has no {name} port configured")
                self._built[name] = factory(self)
            return self._built[name]

    def provide(self, name: PortName, value: Any) -> None:
        with self._lock:
            self._built[name] = value

    def built(self) -> tuple[str, ...]:
        """The ports built so far (the rest were never needed)."""
        with self._lock:
            return tuple(n for n in PORT_NAMES if n in self._built)

    def limits(self) -> RunLimits:
        """The bounds of a run in this process (from settings)."""
        return run_limits(self.settings)

    def forget_replaced_parameters(self) -> str | None:
        """After a run replaced a Prefect parameter that held a prompt with the sealed form: make Prefect's
        database drop the old bytes where this process can (default: checkpoint its SQLite WAL,
        ``promptship.adapters.prefect_db``). None when done; else the one sentence saying what was not done —
        never an exception."""
        forget = self._forget_replaced_parameters
        if forget is None:
            from promptship.adapters.prefect_db import checkpoint_prefect_wal as forget
        try:
            return forget()
        except Exception as exc:  # never fails a run: the run's parameters are sealed already
            return f"old copies of the replaced parameters not dropped: {type(exc).__name__}"


def run_limits(settings: Settings) -> RunLimits:
    """The steps' bounds from ``settings``."""
    p = settings.pipeline
    return RunLimits(
        repair_rounds=p.repair_rounds,
        ci_timeout_s=p.ci_timeout_s,
        merge_timeout_s=p.merge_timeout_s,
        rollout_timeout_s=p.rollout_timeout_s,
        agent_timeout_s=p.agent_timeout_s,
        agent_max_iterations=p.agent_max_iterations,
        workspace_root=str(settings.workspace_root()),
        default_health_url=settings.health.url,
        step_cache_days=p.step_cache_days,
        suspend_after_s=p.suspend_after_s,
        per_repository_limit=settings.runs.per_repository_limit,
        global_limit=settings.runs.global_limit,
    )


_lock = threading.Lock()
_installed: Ports | None = None


def install(ports: Ports | None) -> None:
    """Make ``ports`` the set this process's flow runs use (None: build from settings on next use)."""
    global _installed
    with _lock:
        _installed = ports


@contextmanager
def installed(ports: Ports) -> Iterator[Ports]:
    """Use ``ports`` inside the block, then restore what was there."""
    global _installed
    with _lock:
        previous, _installed = _installed, ports
    try:
        yield ports
    finally:
        with _lock:
            _installed = previous


def process_ports() -> Ports:
    """The edge used by the Prefect entry points (flows, hooks): the installed ports, else built from
    ``Settings()`` once — lazily, so nothing is built until a step uses it."""
    global _installed
    with _lock:
        if _installed is None:
            settings = Settings()
            _installed = _from_factory(settings) if settings.services_factory else build_ports(settings)
        return _installed


def _from_factory(settings: Settings) -> Ports:
    """The Ports ``settings.services_factory`` ('module:function') builds from ``settings``."""
    import importlib

    spec = settings.services_factory or ""
    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"PROMPTSHIP_SERVICES_FACTORY={spec!r} is not an importable 'module:function'") from exc
    return factory(settings)


def build_ports(settings: Settings) -> Ports:
    """Real adapters from settings (GitHub, OpenHands, Kubernetes, the LLM gateway, the store), each built on
    first use; a missing setting raises ConfigError naming it when the port that needs it is first used.

    When a webhook secret is configured, CI waits wake on the receiver's events through the store
    (``StoreCIWakeups``) instead of polling only.
    """

    def code_host(ports: Ports) -> Any:
        wakeups = None
        if settings.github.webhook_secret is not None:
            from promptship.store.webhooks import StoreCIWakeups

            wakeups = StoreCIWakeups(ports.sink.engine)  # type: ignore[attr-defined]
            wakeups.create_schema()
        return build_code_host(settings, wakeups=wakeups)

    factories: dict[str, Callable[[Ports], Any]] = {
        "sink": lambda _p: build_store(settings),
        "llm": lambda p: build_llm_gateway(settings, engine=p.sink.engine),  # type: ignore[attr-defined]
        "agent": lambda _p: build_code_agent(settings),
        "code_host": code_host,
        "cluster": lambda _p: build_cluster(settings),
        "health": lambda _p: build_health_probe(settings),
        "compiler": lambda _p: build_compile_checker(settings),
        "gitops": lambda _p: build_gitops_cluster(settings) if settings.kube.gitops_repo_url else None,
    }
    return Ports(settings, factories=factories, boundaries={name: "real" for name in PORT_NAMES if name != "gitops"})


def build_services(settings: Settings) -> Ports:
    """Every real port built now (for commands that check the whole configuration up front)."""
    ports = build_ports(settings)
    for name in PORT_NAMES:
        ports.resolve(name)
    return ports


def build_code_host(settings: Settings, *, wakeups=None, clock=None):  # -> GitHubHost (PyGithub imported lazily)
    """``GitHubHost`` for ``github.api_url`` (github.com, GitHub Enterprise ``https://HOST/api/v3``, or the local
    forge), as the GitHub App ``github.app_id`` (installation tokens, renewed before they expire; commits and
    comments by ``<slug>[bot]``) or with the token ``github.token``. PyGithub's own retry is off: the adapter
    honours Retry-After on its clock. ``wakeups`` (``CIWakeups``) lets a webhook receiver end CI waits early;
    ``clock`` (epoch seconds) decides when an installation token is renewed."""
    from github import Auth, Github

    from promptship.adapters.github import GitHubHost
    from promptship.domain.ci import Backoff

    gh_settings = settings.github
    base_url = gh_settings.api_url.rstrip("/")
    backoff = Backoff(initial_s=gh_settings.ci_poll_initial_s, max_s=gh_settings.ci_poll_max_s)
    if gh_settings.app_id is not None:
        return _build_app_code_host(settings, wakeups=wakeups, backoff=backoff, clock=clock)
    if gh_settings.token is None:
        raise ConfigError(
            "PROMPTSHIP_GITHUB__TOKEN is not set: give a token with repo scope, or a GitHub App "
            "(PROMPTSHIP_GITHUB__APP_ID and PROMPTSHIP_GITHUB__APP_PRIVATE_KEY_FILE), or run the sandbox"
        )
    gh = Github(base_url=base_url, auth=Auth.Token(gh_settings.token.get_secret_value()), retry=None, timeout=30)
    return GitHubHost(
        gh,
        token=gh_settings.token,
        wakeups=wakeups,
        backoff=backoff,
        image_template=gh_settings.image_template,
    )


def app_private_key(settings: Settings) -> str:
    """The GitHub App's private key (PEM) from ``github.app_private_key`` or ``github.app_private_key_file``."""
    gh_settings = settings.github
    if gh_settings.app_private_key is not None:
        return gh_settings.app_private_key.get_secret_value()
    if gh_settings.app_private_key_file is None:
        raise ConfigError(
            "PROMPTSHIP_GITHUB__APP_ID is set but no private key: set PROMPTSHIP_GITHUB__APP_PRIVATE_KEY_FILE "
            "(the .pem GitHub generated) or PROMPTSHIP_GITHUB__APP_PRIVATE_KEY"
        )
    try:
        return gh_settings.app_private_key_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"PROMPTSHIP_GITHUB__APP_PRIVATE_KEY_FILE={gh_settings.app_private_key_file} cannot be read: {exc.strerror}"
        ) from None


def _build_app_code_host(settings: Settings, *, wakeups, backoff, clock):  # -> GitHubHost
    import time

    from github import Github, GithubIntegration

    from promptship.adapters.github import GitHubHost
    from promptship.adapters.github_app import InstallationTokenAuth, app_auth, app_identity, find_installation

    gh_settings = settings.github
    assert gh_settings.app_id is not None
    base_url = gh_settings.api_url.rstrip("/")
    as_app = app_auth(gh_settings.app_id, app_private_key(settings))
    integration = GithubIntegration(base_url=base_url, auth=as_app, retry=None, timeout=30)
    installation_id = gh_settings.app_installation_id or find_installation(
        integration, gh_settings.allowed_repositories
    )
    auth = InstallationTokenAuth(
        as_app,
        installation_id,
        clock=clock or time.time,
        refresh_margin_s=gh_settings.app_token_refresh_margin_s,
    )
    gh = Github(base_url=base_url, auth=auth, retry=None, timeout=30)
    identity = app_identity(integration, gh)
    return GitHubHost(
        gh,
        token=auth.current,
        wakeups=wakeups,
        backoff=backoff,
        image_template=gh_settings.image_template,
        committer=identity.committer,
    )


def build_store(settings: Settings):  # -> Store (import kept local: the store pulls in SQLAlchemy)
    """The one store, schema ensured, with its prompt key."""
    from promptship.store import Store, make_engine

    store = Store(make_engine(settings.store_url()), cipher=build_prompt_cipher(settings))
    store.create_schema()
    return store


def build_prompt_cipher(settings: Settings):  # -> PromptCipher
    """The store's prompt key (``promptship.store.sealing.prompt_cipher``)."""
    from promptship.store.sealing import prompt_cipher

    return prompt_cipher(settings.store_url(), settings.store_key)


def build_routing_policy(settings: Settings):  # -> RoutingPolicy
    """The routing policy: the seed's table, overridden by ``llm.policy_file`` (YAML) and the llm-config values."""
    from promptship.domain.routing import RoutingPolicy

    policy = RoutingPolicy.default()
    if settings.llm.policy_file is not None:
        try:
            text = settings.llm.policy_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"PROMPTSHIP_LLM__POLICY_FILE={settings.llm.policy_file} cannot be read: {exc.strerror}"
            ) from None
        policy = RoutingPolicy.from_yaml(text, base=policy)
    given = {name for name in settings.llm.model_fields_set if name.startswith("exploration_")}
    if given:  # the exploration settings replace the policy file's `exploration`
        policy = policy.with_exploration(exploration_from_settings(settings))
    return policy.with_llm_config(
        {
            "default_model": settings.llm.default_model,
            "ollama_models": ",".join(settings.llm.local_models),
            "max_retries": str(settings.llm.max_retries),
            "timeout_seconds": str(settings.llm.timeout_s),
        }
    )


def exploration_from_settings(settings: Settings):  # -> Exploration
    """The routing policy's ``exploration`` from the ``llm.exploration_*`` settings (names checked: a class that is
    not a task class is a ``ConfigError`` naming the setting)."""
    from pydantic import ValidationError

    from promptship.domain.routing import Exploration

    llm = settings.llm
    try:
        return Exploration.model_validate(
            {
                "enabled": llm.exploration_enabled,
                "share": llm.exploration_share,
                "budget_usd_per_day": llm.exploration_budget_usd_per_day,
                "candidates": llm.exploration_candidates,
            }
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(
            f"PROMPTSHIP_LLM__EXPLORATION_CANDIDATES: {'.'.join(str(x) for x in err['loc'])}: {err['msg']} "
            "(keys are task classes: complex_code, tests, docs, default)"
        ) from None


def build_llm_gateway(settings: Settings, *, engine=None):  # -> LiteLLMGateway (LiteLLM imported lazily)
    """``LiteLLMGateway`` from settings: the routing policy, the sensitive-data scanner, the cost ledger in the
    store (``engine``: share one; default: a new engine on ``store_url()``), Ollama at ``llm.ollama_base_url``,
    llama.cpp at ``llm.llamacpp_base_url`` and OpenRouter at ``llm.openrouter_base_url`` with
    ``llm.openrouter_api_key`` (no key: cloud calls fail over to local models). Budgets from ``budget.*``;
    retries and timeout from the policy (llm-config)."""
    from promptship.adapters.detectors import SensitiveDataScanner
    from promptship.adapters.llm import LiteLLMGateway, ProviderEndpoints
    from promptship.store import make_engine
    from promptship.store.ledger import CostLedger

    over_budget = settings.budget.over_budget
    if over_budget not in ("reroute_local", "refuse"):
        raise ConfigError(f"PROMPTSHIP_BUDGET__OVER_BUDGET={over_budget!r}: use 'reroute_local' or 'refuse'")
    policy = build_routing_policy(settings)
    ledger = CostLedger(
        engine if engine is not None else make_engine(settings.store_url()),
        timezone=settings.llm.timezone,
        cloud_daily_usd=settings.budget.cloud_daily_usd,
        run_default_usd=settings.budget.run_default_usd,
        display_currency=settings.llm.display_currency,
        usd_to_display_rate=settings.llm.usd_to_display_rate,
    )
    ledger.create_schema()
    return LiteLLMGateway(
        policy=policy,
        scanner=SensitiveDataScanner(),
        ledger=ledger,
        endpoints=ProviderEndpoints(
            ollama_base_url=settings.llm.ollama_base_url,
            openrouter_base_url=settings.llm.openrouter_base_url,
            openrouter_api_key=settings.llm.openrouter_api_key,
            llamacpp_base_url=settings.llm.llamacpp_base_url,
        ),
        gateway_url=settings.llm.gateway_url,
        max_retries=policy.max_retries,
        timeout_s=policy.timeout_s,
        over_budget=over_budget,  # type: ignore[arg-type]  # checked above
        local_cost_per_1k_tokens_usd=settings.llm.local_cost_per_1k_tokens_usd,
        allow_values=settings.llm.gate_allowlist,
    )


def build_kube_api_client(settings: Settings):  # -> kubernetes.client.ApiClient (imported lazily)
    """An API client for ``kube.kubeconfig`` (+ ``kube.context``), the pod's ServiceAccount when
    ``kube.in_cluster``, else ``$KUBECONFIG`` / ``~/.kube/config``."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    configuration = client.Configuration()
    configuration.retries = 0  # one connection attempt per request: retries are the step layer's (CONTRACTS.md)
    try:
        if settings.kube.in_cluster:
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        kubeconfig = str(settings.kube.kubeconfig) if settings.kube.kubeconfig else None
        return config.new_client_from_config(
            config_file=kubeconfig, context=settings.kube.context, client_configuration=configuration
        )
    except (ConfigException, OSError) as exc:
        raise ConfigError(
            f"no Kubernetes access: {exc}. Set PROMPTSHIP_KUBE__KUBECONFIG (the local control plane: "
            "`make cluster-up` prints its path) or PROMPTSHIP_KUBE__IN_CLUSTER=true inside a pod"
        ) from None


def build_cluster(settings: Settings, *, api=None):  # -> KubeCluster
    """``KubeCluster`` (push mode) on ``api`` or a client built from ``kube.*``."""
    from promptship.adapters.kube import KubeCluster

    return KubeCluster(
        api if api is not None else build_kube_api_client(settings),
        poll_interval_s=settings.kube.poll_interval_s,
        lease_duration_s=settings.kube.lease_duration_s,
        lease_wait_s=settings.kube.lease_wait_s,
        crash_loop_restarts=settings.kube.crash_loop_restarts,
    )


def build_health_probe(settings: Settings, *, http=None):  # -> HttpHealthProbe
    """``HttpHealthProbe`` with the gate's bounds from ``health.*``."""
    import httpx

    from promptship.adapters.health import HttpHealthProbe

    return HttpHealthProbe(
        http if http is not None else httpx.Client(),
        consecutive=settings.health.consecutive,
        retries=settings.health.retries,
        timeout_s=settings.health.timeout_s,
        interval_s=settings.health.interval_s,
        max_latency_ms=settings.health.max_latency_ms,
    )


def build_code_agent(settings: Settings, *, http=None):  # -> OpenHandsAgent (httpx client built here)
    """``OpenHandsAgent`` on the agent-server at ``openhands.url`` (X-Session-API-Key from
    ``openhands.session_api_key``). One HTTP call never waits long; the overall wait is ``result``'s timeout."""
    import httpx

    from promptship.adapters.openhands import OpenHandsAgent

    oh = settings.openhands
    if not oh.url.startswith(("http://", "https://")):
        raise ConfigError(f"PROMPTSHIP_OPENHANDS__URL={oh.url!r} must be an http(s) URL of an OpenHands agent-server")
    client = http if http is not None else httpx.Client(base_url=oh.url.rstrip("/"), timeout=httpx.Timeout(30.0))
    return OpenHandsAgent(client, session_api_key=oh.session_api_key)


def build_compile_checker(settings: Settings):  # -> WorkspaceCompileChecker
    """The compile check (byte-compile + import, or the repository's ``make build``) in scrubbed subprocesses."""
    from promptship.adapters.compile_check import WorkspaceCompileChecker

    return WorkspaceCompileChecker()


def build_gitops_cluster(settings: Settings, *, api=None):  # -> GitOpsCluster
    """``GitOpsCluster`` (GitOps mode): commits to ``kube.gitops_repo_url`` and reads the cluster through a
    ``KubeCluster`` on ``api`` or a client from ``kube.*`` (status and dry runs only)."""
    from promptship.adapters.gitops import GitOpsCluster

    if not settings.kube.gitops_repo_url:
        raise ConfigError("PROMPTSHIP_KUBE__GITOPS_REPO_URL is not set: the GitOps repository to commit to")
    return GitOpsCluster(
        build_cluster(settings, api=api),
        repo_url=settings.kube.gitops_repo_url,
        workdir=(settings.home / "gitops" / "checkout").resolve(),
        manifests_path=settings.kube.gitops_path,
        branch=settings.kube.gitops_branch,
        token=settings.kube.gitops_token,
        application=settings.kube.gitops_application,
        application_namespace=settings.kube.gitops_application_namespace,
        poll_interval_s=settings.kube.poll_interval_s,
    )
