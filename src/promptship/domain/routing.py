"""The routing policy: which model group takes an LLM call, local or cloud, and why.

Pure domain code. The seed's mapping (``RoutingPolicy.default()``):

    class          model group         provider model                           mode
    sensitive      llama3              ollama_chat/llama3                       local
    complex_code   gpt-4o              openrouter/openai/gpt-4o                 cloud
    tests          mistral             ollama_chat/mistral                      local
    docs           claude-3.5-sonnet   openrouter/anthropic/claude-3.5-sonnet   cloud
    default        mistral             ollama_chat/mistral                      local

It can be overridden by a YAML file (``RoutingPolicy.from_yaml``) and by the values of the seed's
``llm-config`` ConfigMap (``RoutingPolicy.with_llm_config``). Local model groups are served by Ollama or by an
OpenAI-compatible llama.cpp server (``backend``); ``callers`` sends the local calls of one caller (a step such
as ``open_pull_request``, the chat app's ``chat``) to a group of its own. The one invariant no configuration can break:
a call that carries sensitive data (or is forced local) only ever goes to a local model — otherwise it is
refused with ``SensitiveDataBlocked``; a fallback never moves it to the cloud.

``exploration`` (off by default) sends a small share of the *clean* calls of a class to one of that class's
candidate models, to gather outcome evidence (``explore_route``): a draw from a hash of the call's key (the
attempt, the step and the call's number in it) against ``share``, so that the same call is decided the same way
again and ``replay`` can re-derive it. Sensitive and local-only calls are never explored; the gateway stops
exploring when its daily budget is spent.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Literal, cast, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from promptship.domain.gate import Finding, GateResult
from promptship.domain.request import TaskClass
from promptship.domain.results import LLMMode, RouteDecision
from promptship.errors import ConfigError, SensitiveDataBlocked

TASK_CLASSES: tuple[TaskClass, ...] = get_args(TaskClass)

Backend = Literal["ollama", "llamacpp", "openrouter"]
"""Who serves a model group: Ollama (``ollama_chat/…``, local), an OpenAI-compatible llama.cpp server
(``openai/<alias>`` at its ``api_base``, local), OpenRouter (``openrouter/…``, cloud)."""
_BACKEND_MODE: dict[Backend, LLMMode] = {"ollama": "local", "llamacpp": "local", "openrouter": "cloud"}


class ModelSpec(BaseModel):
    """One model group: the name the policy speaks of, the LiteLLM model it maps to, local or cloud, prices."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="Model group name used by the policy and the gateway (e.g. 'mistral').")
    litellm_model: str = Field(description="LiteLLM model string, e.g. 'ollama_chat/mistral'.")
    mode: LLMMode = Field(description="local (Ollama, on this machine/cluster) or cloud (OpenRouter).")
    input_cost_per_token: float = Field(default=0.0, ge=0, description="USD per prompt token.")
    output_cost_per_token: float = Field(default=0.0, ge=0, description="USD per completion token.")
    backend: Backend = Field(
        default="ollama",
        description="Who serves it: ollama (local), llamacpp (local, OpenAI-compatible), openrouter (cloud). "
        "Not given: ollama for a local model, openrouter for a cloud one.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_backend(cls, data: Any) -> Any:
        if isinstance(data, dict) and "backend" not in data:
            data = cast(dict[str, Any], data)
            return {**data, "backend": "openrouter" if data.get("mode") == "cloud" else "ollama"}
        return data

    @model_validator(mode="after")
    def _backend_fits(self) -> ModelSpec:
        if _BACKEND_MODE[self.backend] != self.mode:
            raise ValueError(f"backend {self.backend} serves {_BACKEND_MODE[self.backend]} models, not {self.mode}")
        if self.backend == "llamacpp" and not self.litellm_model.startswith("openai/"):
            raise ValueError("a llamacpp model is spelled openai/<the server's model alias> for LiteLLM")
        return self

    @property
    def local(self) -> bool:
        return self.mode == "local"


def _local(name: str) -> ModelSpec:
    return ModelSpec(name=name, litellm_model=f"ollama_chat/{name}", mode="local")


class Exploration(BaseModel):
    """The exploration setting: off by default. While on, a ``share`` of the clean calls of a class that has
    ``candidates`` go to one of them instead of the class's model, until ``budget_usd_per_day`` is spent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(default=False, description="Explore at all (off by default).")
    share: float = Field(default=0.05, ge=0, le=1, description="Share of the eligible calls sent to a candidate.")
    budget_usd_per_day: float = Field(
        default=0.5, ge=0, description="Most the explored calls may cost per ledger day (USD), reservations included."
    )
    candidates: dict[TaskClass, list[str]] = Field(
        default_factory=dict,
        description="Task class → model groups to try for it (never for 'sensitive'). A class stated by the caller "
        "explores only its own candidates.",
    )


def exploration_draw(key: str) -> float:
    """A number in [0, 1) from ``key`` alone (SHA-256): the same call key always draws the same number."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def exploration_key(run_key: str, step: str, seq: int) -> str:
    """The key of a call for the draw: its attempt (the ledger's run), its step and its number among that
    step's calls in the attempt (0, 1, …)."""
    return f"{run_key}/{step}/{seq}"


def normalize_model_name(name: str) -> str:
    """'code llama' → 'codellama', 'Llama3' → 'llama3' (the seed's ConfigMap spells names loosely)."""
    return re.sub(r"\s+", "", name.strip().lower())


class RoutingPolicy(BaseModel):
    """Model groups, the class → group mapping and the fallback chains."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    models: dict[str, ModelSpec]
    classes: dict[TaskClass, str] = Field(description="Task class → model group name.")
    fallbacks: dict[str, list[str]] = Field(default_factory=dict, description="Group → groups to try next.")
    callers: dict[str, str] = Field(
        default_factory=dict,
        description="Caller (the LLMCall's step: open_pull_request, chat, …) → the local model group its calls "
        "take whenever they are routed local. Calls routed to the cloud are not affected.",
    )
    max_retries: int = Field(default=3, ge=0, description="Retries per call (llm-config max_retries).")
    timeout_s: float = Field(default=30.0, gt=0, description="Timeout per call (llm-config timeout_seconds).")
    exploration: Exploration = Field(default_factory=Exploration, description="Off by default (see Exploration).")

    # --- construction -------------------------------------------------------------------------------------

    @classmethod
    def default(cls) -> RoutingPolicy:
        """The seed's routing table (see the module docstring)."""
        models = {
            "llama3": _local("llama3"),
            "mistral": _local("mistral"),
            "codellama": _local("codellama"),
            "gpt-4o": ModelSpec(
                name="gpt-4o",
                litellm_model="openrouter/openai/gpt-4o",
                mode="cloud",
                input_cost_per_token=2.5e-6,
                output_cost_per_token=10e-6,
            ),
            "claude-3.5-sonnet": ModelSpec(
                name="claude-3.5-sonnet",
                litellm_model="openrouter/anthropic/claude-3.5-sonnet",
                mode="cloud",
                input_cost_per_token=3e-6,
                output_cost_per_token=15e-6,
            ),
        }
        classes: dict[TaskClass, str] = {
            "sensitive": "llama3",
            "complex_code": "gpt-4o",
            "tests": "mistral",
            "docs": "claude-3.5-sonnet",
            "default": "mistral",
        }
        fallbacks = {
            "gpt-4o": ["claude-3.5-sonnet", "codellama", "mistral"],
            "claude-3.5-sonnet": ["gpt-4o", "mistral"],
            "llama3": ["mistral", "codellama"],
            "mistral": ["llama3", "codellama"],
            "codellama": ["mistral", "llama3"],
        }
        return cls(models=models, classes=classes, fallbacks=fallbacks).validated()

    @classmethod
    def from_yaml(cls, text: str, *, base: RoutingPolicy | None = None, privacy: bool = True) -> RoutingPolicy:
        """A policy from YAML; keys not given keep the values of ``base`` (default: the seed's policy).
        ``privacy=False`` skips the local-only checks of ``validated`` (for ``replay``, which checks a candidate
        policy against the recorded sensitive calls and refuses it naming the rule); never for routing.

        ```yaml
        models:
          qwen: {litellm_model: ollama_chat/qwen2.5-coder, mode: local}
          smollm2: {litellm_model: openai/smollm2-135m-instruct, mode: local, backend: llamacpp}
        classes: {complex_code: qwen}
        fallbacks: {qwen: [mistral], smollm2: [llama3]}
        callers: {open_pull_request: smollm2}   # its local calls go to smollm2
        max_retries: 2
        timeout_s: 60
        exploration: {enabled: true, share: 0.05, budget_usd_per_day: 0.5, candidates: {tests: [qwen]}}
        ```
        """
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"routing policy YAML does not parse: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("routing policy YAML must be a mapping with models/classes/fallbacks")
        data = cast(dict[str, Any], data)
        unknown = set(data) - {"models", "classes", "fallbacks", "callers", "max_retries", "timeout_s", "exploration"}
        if unknown:
            raise ConfigError(f"routing policy YAML: unknown keys {sorted(unknown)}")
        start = base or cls.default()
        models = dict(start.models)
        for name, spec in (data.get("models") or {}).items():
            if not isinstance(spec, dict):
                raise ConfigError(f"routing policy YAML: models.{name} must be a mapping")
            try:
                models[str(name)] = ModelSpec(name=str(name), **cast(dict[str, Any], spec))
            except ValidationError as exc:
                raise ConfigError(f"routing policy YAML: models.{name} is invalid: {_first_error(exc)}") from None
        classes = dict(start.classes)
        for klass, group in (data.get("classes") or {}).items():
            if klass not in TASK_CLASSES:
                raise ConfigError(f"routing policy YAML: classes.{klass} is not one of {list(TASK_CLASSES)}")
            classes[cast(TaskClass, klass)] = str(group)
        fallbacks = dict(start.fallbacks)
        for group, chain in (data.get("fallbacks") or {}).items():
            if not isinstance(chain, list):
                raise ConfigError(f"routing policy YAML: fallbacks.{group} must be a list of model groups")
            fallbacks[str(group)] = [str(g) for g in cast(list[Any], chain)]
        callers = dict(start.callers)
        raw_callers = data.get("callers") or {}
        if not isinstance(raw_callers, dict):
            raise ConfigError("routing policy YAML: callers must map a caller (step name) to a local model group")
        for caller, group in cast(dict[Any, Any], raw_callers).items():
            callers[str(caller)] = str(group)
        exploration = start.exploration
        raw_exploration = data.get("exploration")
        if raw_exploration is not None:
            if not isinstance(raw_exploration, dict):
                raise ConfigError("routing policy YAML: exploration must be a mapping (enabled, share, …)")
            try:
                exploration = Exploration.model_validate(
                    {**start.exploration.model_dump(), **cast(dict[str, Any], raw_exploration)}
                )
            except ValidationError as exc:
                raise ConfigError(f"routing policy YAML: exploration is invalid: {_first_error(exc)}") from None
        try:
            policy = cls(
                models=models,
                classes=classes,
                fallbacks=fallbacks,
                callers=callers,
                max_retries=data.get("max_retries", start.max_retries),
                timeout_s=data.get("timeout_s", start.timeout_s),
                exploration=exploration,
            )
        except ValidationError as exc:
            raise ConfigError(f"routing policy YAML is invalid: {_first_error(exc)}") from None
        return policy.validated(privacy=privacy)

    def with_llm_config(self, values: Mapping[str, str]) -> RoutingPolicy:
        """Apply the seed's ``llm-config`` ConfigMap data (all values are strings).

        - ``default_model``: the group of the ``default`` class (a local model of ``ollama_models``).
        - ``ollama_models``: comma-separated local models actually served ("llama3,mistral,code llama");
          Ollama groups not listed are removed and classes pointing at them move to the default model
          (llama.cpp groups are not Ollama's and stay).
        - ``max_retries``, ``timeout_seconds``: per-call retries and timeout.
        Unknown keys are ignored (the ConfigMap may carry more than the router needs).
        """
        models = dict(self.models)
        classes = dict(self.classes)
        fallbacks = {k: list(v) for k, v in self.fallbacks.items()}
        retries = self.max_retries
        timeout = self.timeout_s
        if (raw := values.get("ollama_models")) is not None:
            served = [normalize_model_name(n) for n in raw.split(",") if n.strip()]
            if not served:
                raise ConfigError("llm-config ollama_models is empty: list at least one local model")
            for name in list(models):
                if models[name].backend == "ollama" and name not in served:
                    del models[name]
            for name in served:
                models.setdefault(name, _local(name))
        default = normalize_model_name(values.get("default_model", "")) or classes["default"]
        if default not in models:
            if "ollama_models" in values:
                raise ConfigError(
                    f"llm-config default_model {default!r} is not among ollama_models or the policy's models"
                )
            models[default] = _local(default)
        classes["default"] = default
        for klass, group in list(classes.items()):
            if group not in models:
                classes[klass] = default
        for group in list(fallbacks):
            if group not in models:
                del fallbacks[group]
            else:
                fallbacks[group] = [g for g in fallbacks[group] if g in models]
        callers = {c: g for c, g in self.callers.items() if g in models}
        candidates = {k: [g for g in gs if g in models] for k, gs in self.exploration.candidates.items()}
        exploration = self.exploration.model_copy(update={"candidates": {k: gs for k, gs in candidates.items() if gs}})
        try:
            if (r := values.get("max_retries")) is not None:
                retries = int(r)
            if (t := values.get("timeout_seconds")) is not None:
                timeout = float(t)
        except ValueError:
            raise ConfigError("llm-config max_retries must be an integer and timeout_seconds a number") from None
        try:
            policy = type(self)(
                models=models,
                classes=classes,
                fallbacks=fallbacks,
                callers=callers,
                max_retries=retries,
                timeout_s=timeout,
                exploration=exploration,
            )
        except ValidationError as exc:
            raise ConfigError(f"llm-config values are invalid: {_first_error(exc)}") from None
        return policy.validated()

    def validated(self, *, privacy: bool = True) -> RoutingPolicy:
        """Check references; a sensitive class (or a caller's group) that maps to a cloud model is a
        configuration error (not checked with ``privacy=False``: see ``from_yaml``)."""
        for name, spec in self.models.items():
            if spec.name != name:
                raise ConfigError(f"routing policy: model key {name!r} and its name {spec.name!r} differ")
        for klass in TASK_CLASSES:
            if klass not in self.classes:
                raise ConfigError(f"routing policy: class {klass!r} has no model group")
        for klass, group in self.classes.items():
            if group not in self.models:
                raise ConfigError(f"routing policy: class {klass!r} maps to unknown model group {group!r}")
        for group, chain in self.fallbacks.items():
            for target in [group, *chain]:
                if target not in self.models:
                    raise ConfigError(f"routing policy: fallbacks.{group} names unknown model group {target!r}")
        for caller, group in self.callers.items():
            if group not in self.models:
                raise ConfigError(f"routing policy: callers.{caller} names unknown model group {group!r}")
            if privacy and not self.models[group].local:
                raise ConfigError(
                    f"routing policy: callers.{caller} must name a local model group (callers choose where a "
                    f"caller's local calls go), not the cloud group {group!r}"
                )
        if privacy and not self.models[self.classes["sensitive"]].local:
            raise ConfigError(
                f"routing policy: the sensitive class must map to a local model, not {self.classes['sensitive']!r}"
            )
        for klass, groups in self.exploration.candidates.items():
            if klass == "sensitive":
                raise ConfigError(
                    "routing policy: exploration.candidates.sensitive is not allowed: sensitive calls are never "
                    "explored (they stay on the local models the privacy rule names)"
                )
            for group in groups:
                if group not in self.models:
                    raise ConfigError(
                        f"routing policy: exploration.candidates.{klass} names unknown model group {group!r}"
                    )
        return self

    def with_exploration(self, exploration: Exploration) -> RoutingPolicy:
        """This policy with another exploration setting (checked like the rest)."""
        return self.model_copy(update={"exploration": exploration}).validated()

    def to_yaml(self) -> str:
        """The whole policy as YAML that ``from_yaml`` reads back to an equal policy (for export and replay)."""
        data: dict[str, Any] = {
            "models": {
                name: spec.model_dump(exclude={"name"}, exclude_defaults=False) for name, spec in self.models.items()
            },
            "classes": dict(self.classes),
            "fallbacks": {g: list(c) for g, c in self.fallbacks.items()},
            "callers": dict(self.callers),
            "max_retries": self.max_retries,
            "timeout_s": self.timeout_s,
        }
        if self.exploration != Exploration():
            # only when set: a policy without exploration keeps the hash it had before the setting existed
            data["exploration"] = self.exploration.model_dump(mode="json")
        return yaml.safe_dump(data, sort_keys=False)

    def fingerprint(self) -> str:
        """SHA-256 of ``to_yaml()``: the name under which the ledger keeps the policy that decided a call."""
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()

    # --- queries ------------------------------------------------------------------------------------------

    def spec(self, group: str) -> ModelSpec:
        try:
            return self.models[group]
        except KeyError:
            raise ConfigError(f"routing policy has no model group {group!r}") from None

    def is_local(self, group: str) -> bool:
        return self.spec(group).local

    def local_groups(self) -> list[str]:
        """Local model groups, the sensitive class's first."""
        first = self.classes["sensitive"]
        return [first] + [n for n, s in self.models.items() if s.local and n != first]


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"


# --- the task classifier (rules first) --------------------------------------------------------------------

# Category of /work/shared/eval/task_class.jsonl → our task class (docs/ROUTING.md explains why).
EVAL_CATEGORY_TO_CLASS: dict[str, TaskClass] = {
    "code_generation": "complex_code",  # HumanEval: implement a function from its signature and docstring
    "coding": "complex_code",  # MT-bench coding: write/debug programs
    "writing": "default",  # essays, emails, blog posts: prose, not project documentation
    "roleplay": "default",
    "reasoning": "default",
    "math": "default",
    "extraction": "default",
    "stem": "default",
    "humanities": "default",
    # promptship's own hand-labelled sets (tests/data/task_class_*.jsonl) use our class names directly
    "tests": "tests",
    "docs": "docs",
    "complex_code": "complex_code",
    "default": "default",
}

_W = r"(?:^|(?<=[^A-Za-z0-9_]))"  # a word start that also works after punctuation

_Rule = tuple[TaskClass, re.Pattern[str], str]
_CODE_FIRST = re.compile(r"(?m)^\s*(?:def|class|async def|from \S+ import|import \S+|function|const|let|fn|func)\b")

# Ordered: the first rule that matches decides. Strong "write tests" asks beat documentation words, which beat
# a mere mention of a testing concept, which beats code words.
_NOT_CODE = (
    r"(?:tests?|testing|specs?|checks?|coverage|docs?|documentation|docstrings?|readme|comments?|guide|javadoc|"
    r"jsdoc|changelog|release notes|reference)\b"
)
_ARTIFACT = (
    r"(?:endpoints?|routes?|apis?|services?|functions?|class(?:es)?|modules?|handlers?|components?|cli|commands?|"
    r"scripts?|programs?|apps?|features?|middleware|decorators?|parsers?|migrations?)"
)
_CLASS_RULES: tuple[_Rule, ...] = (
    # Code first when the request builds something, even if it also asks for that thing's tests:
    # "Add a /version endpoint with a test", "Implement rate limiting and add unit tests".
    (
        "complex_code",
        re.compile(
            rf"(?i)^\s*(?:please\s+)?(?:implement|build|develop|refactor|port|migrate|optimi[sz]e|debug|fix)\b"
            rf"(?!\s+(?:\w+\s+){{0,3}}{_NOT_CODE})"
        ),
        "asks to build or change code",
    ),
    (
        "complex_code",
        re.compile(
            rf"(?i)\b(?:add|create|write|make(?!\s+sure))\s+(?:(?!{_NOT_CODE})[\w/.-]+\s+){{0,4}}?{_ARTIFACT}\b"
            rf"(?![\w-]*\s+{_NOT_CODE})"
        ),
        "asks for a piece of code",
    ),
    (
        "tests",
        re.compile(
            r"(?i)\b(?:write|add|create|generate|extend|improve|fix|update|cover|increase|need|implement|"
            r"make|set up|setup|stabili[sz]e|parametri[sz]e|replace)\b[^.\n]{0,80}?\b(?:unit|integration|"
            r"regression|end-to-end|e2e|smoke|property[- ]based|snapshot|load|contract|acceptance|api|component|"
            r"parametri[sz]ed|flaky|failing|negative|polling)?\s*tests?(?:s|\s+suites?|\s+cases?|\s+coverage)?\b"
        ),
        "asks to write or fix tests",
    ),
    (
        "tests",
        re.compile(
            r"(?i)\b(?:automated checks?|checks? (?:asserting|verifying|ensuring|that)|(?:add|increase|improve) "
            r"(?:test |branch |code )?coverage|^\s*(?:please )?test (?:the|that|whether|if)\b)"
        ),
        "asks for checks or coverage",
    ),
    ("tests", re.compile(r"(?i)\btests?\s+(?:for|of|that|which|to|checking|proving)\b"), "asks for tests of something"),
    ("tests", re.compile(r"(?i)^\s*(?:test|verify with tests)\b"), "starts with 'test'"),
    ("tests", re.compile(r"(?i)\b(?:écri(?:re|s|vez)|ajoute[rz]?)\b[^.\n]{0,60}\btests?\b"), "asks for tests (fr)"),
    (
        "docs",
        re.compile(
            r"(?i)\b(?:readme|changelog|release notes|docstrings?|documentation|documenter|documente|docs|"
            r"user guide|user manual|how-?to guide|guide|tutorial|api reference|reference guide|runbook|"
            r"playbook|architecture decision record|adr|onboarding|contributing|faq|man ?page|wiki|jsdoc|"
            r"javadoc|sphinx|mkdocs|glossary|write-?up|[A-Z][A-Z_]+\.md|quick ?start|design doc(?:ument)?|"
            r"handbook|usage notes|help text|cheat ?sheet|walk-?through|primer|knowledge base|"
            r"(?:page|section|notes?) (?:explaining|describing|on|about)|explain\w* [^.\n]{0,40} for (?:new )?"
            r"(?:engineers|developers|users|consumers|contributors)|"
            r"(?:add|write|improve) (?:inline |explanatory )?comments?|comment the|how-?to|guidelines|"
            r"code of conduct|in a document|(?:installation|setup|usage) instructions)\b"
        ),
        "asks for documentation",
    ),
    (
        "docs",
        re.compile(
            r"(?i)\b(?:document|annotate|explain in the docs|describe in the readme)\b\s+"
            r"(?:the|this|our|how|all|each|every|its|these|public|what|why)\b"
        ),
        "asks to document something",
    ),
    (
        "tests",
        re.compile(
            r"(?i)\b(?:pytest|unittest|jest|vitest|mocha|junit|testng|rspec|go test|cypress|playwright test|"
            r"hypothesis|test coverage|code coverage|branch coverage|coverage report|test suite|test cases?|"
            r"test fixtures?|fixtures?|mocks?|mocking|stubs?|assertions?|tdd|doctests?|test_\w+|testing|tests|"
            r"xctest|phpunit|nunit|xunit|testify|terratest|kotest|jasmine|karma|selenium|e2e|end-to-end|"
            r"(?:write|add) specs?)\b"
        ),
        "names a test framework or testing concept",
    ),
    ("complex_code", _CODE_FIRST, "contains code"),
    ("complex_code", re.compile(r"```"), "contains a code block"),
    (
        "complex_code",
        re.compile(
            r"(?i)\b(?:implement|refactor|debug|optimi[sz]e|port|migrate|add (?:an? )?(?:\w+ )?(?:endpoint|"
            r"feature|route|api|cache|retry|handler|queue|index|migration)|rewrite (?:the|this|our) (?:\w+ )?"
            r"(?:function|code|module|service|class|handler|query)|fix (?:the |a |this )?(?:bug|crash|error|leak|race)|"
            r"write (?:a |an |the )?(?:\w+ ){0,3}(?:program|function|script|class|method|module|service|"
            r"api|endpoint|parser|algorithm|query|website|app|cli|component)|"
            r"develop (?:a |an )?(?:\w+ ){0,2}(?:program|application|app|service|tool)|"
            r"bug|stack ?trace|traceback|segfault|compile|concurrency|algorithm|data structure|"
            r"binary tree|linked list|complexity|regex|sql|kubernetes manifest|dockerfile|endpoint|"
            r"fastapi|react|typescript|javascript|python|golang|rust|java|c#)\b|\bc\+\+"
        ),
        "asks for code",
    ),
)
_TESTS_MERELY_PASS = re.compile(r"(?i)\s+(?:still\s+)?(?:pass|passes|are green|keep passing)\b")


def _inside_string_literal(text: str, pos: int) -> bool:
    """True when ``pos`` lies inside a triple-quoted string (a docstring of code given in the prompt)."""
    before = text[:pos]
    return (before.count('"""') + before.count("'''")) % 2 == 1


def classify_task(text: str) -> tuple[TaskClass, str]:
    """The task class of a prompt and the rule that decided it (rules first, the first match wins):
    asks for tests, asks for documentation, mentions testing, asks for code, else default.
    Sensitivity is not decided here but by the gate's findings."""
    klass, rule, matched = classify_task_rule(text)
    return klass, f"{rule}: {matched!r}" if matched is not None else rule


def classify_task_rule(text: str) -> tuple[TaskClass, str, str | None]:
    """``classify_task`` in parts: the class, the rule's name (safe to record: it holds none of the prompt) and
    the text it matched (not safe to record), None when no rule matched."""
    head = text[:4000]
    # Code given in the prompt (HumanEval-style signatures with docstrings): words inside its string
    # literals ("Add more test cases", doctests) describe the code to write, not the task.
    code_given = bool(_CODE_FIRST.search(head))
    for klass, pattern, why in _CLASS_RULES:
        for m in pattern.finditer(head):
            if code_given and klass != "complex_code" and _inside_string_literal(head, m.start()):
                continue
            if klass == "tests" and _TESTS_MERELY_PASS.match(head, m.end()):
                continue  # "… and make sure the existing tests still pass" asks for code, not tests
            return klass, why, m.group(0).strip()[:40]
    return "default", NO_RULE, None


NO_RULE = "no rule matched"


# --- the decision ---------------------------------------------------------------------------------------


def _finding_labels(findings: Iterable[Finding]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for f in findings:
        seen.setdefault(f"{f.kind}:{f.subtype}", None)
    return tuple(seen)


def _available(group: str, policy: RoutingPolicy, local_available: bool | Collection[str]) -> bool:
    if not policy.is_local(group):
        return True
    if isinstance(local_available, bool):
        return local_available
    return group in local_available


def decide_route(
    text: str,
    *,
    policy: RoutingPolicy,
    findings: GateResult | Iterable[Finding] = (),
    task_class: TaskClass | None = None,
    force_local: bool = False,
    local_available: bool | Collection[str] = True,
    caller: str | None = None,
) -> RouteDecision:
    """Decide the model group for one call: the class (stated by the caller, or ``classify_task``), then
    ``route_class``."""
    found = list(findings.findings if isinstance(findings, GateResult) else findings)
    if task_class is not None:
        klass, rule, why = task_class, None, "class stated by the caller"
    else:
        klass, rule, matched = classify_task_rule(text)
        why = f"{rule}: {matched!r}" if matched is not None else rule
    return route_class(
        klass,
        policy=policy,
        labels=_finding_labels(found),
        class_rule=rule,
        why=why,
        force_local=force_local,
        local_available=local_available,
        caller=caller,
    )


def route_class(
    klass: TaskClass,
    *,
    policy: RoutingPolicy,
    labels: Sequence[str] = (),
    class_rule: str | None = None,
    why: str | None = None,
    force_local: bool = False,
    local_available: bool | Collection[str] = True,
    caller: str | None = None,
) -> RouteDecision:
    """The model group for a call of class ``klass`` whose gate found ``labels`` (``kind:subtype``, never
    values) — the whole decision once the class is known, so that ``domain.replay`` can decide a recorded call
    again from what the ledger kept. ``class_rule`` None means the caller stated the class.

    - Sensitive findings or ``force_local`` ⇒ a local model only: the caller's own local group
      (``policy.callers``) if it is up, else the class's own model if it is local, else the ``sensitive``
      class's model, else any local fallback. ``local_available`` is a bool or the names of the local groups
      currently up. No local model ⇒ ``SensitiveDataBlocked`` (never the cloud).
    - Otherwise the class picks its group; when that group is local and the caller has its own local group
      (up), the caller's group takes the call.
    """
    labels = tuple(labels)
    source: Literal["rule", "caller"] = "caller" if class_rule is None else "rule"
    why = why or (class_rule if class_rule is not None else "class stated by the caller")
    asked_local = force_local
    if klass == "sensitive" and not force_local:
        force_local, why = True, f"{why}: the sensitive class is local-only"
    recorded = {"class_source": source, "class_rule": class_rule, "forced_local": asked_local}
    own_group = policy.callers.get(caller or "")
    if own_group is not None and not _available(own_group, policy, local_available):
        own_group = None
    if not labels and not force_local:
        group = policy.classes[klass]
        spec = policy.spec(group)
        if spec.local and own_group is not None and own_group != group:
            return RouteDecision(
                task_class=klass,
                model=own_group,
                mode="local",
                reason=f"class {klass} ({why}) → {group} (local) → caller {caller}'s local group {own_group}",
                **recorded,
            )
        return RouteDecision(
            task_class=klass,
            model=group,
            mode=spec.mode,
            reason=f"class {klass} ({why}) → {group} ({spec.mode})",
            **recorded,
        )

    cause = f"sensitive data found ({', '.join(labels)})" if labels else "local-only requested"
    looked_like = klass
    if labels:
        klass = "sensitive"
    own = policy.classes[klass]
    candidates = [own_group] if own_group is not None else []
    if policy.is_local(own):
        candidates.append(own)
    candidates.append(policy.classes["sensitive"])
    for start in list(candidates):
        candidates.extend(allowed_fallbacks(policy, start, sensitive=True))
    candidates.extend(policy.local_groups())
    for group in dict.fromkeys(candidates):
        if policy.is_local(group) and _available(group, policy, local_available):
            via = f"caller {caller}'s local group " if group == own_group else ""
            return RouteDecision(
                task_class=klass,
                model=group,
                mode="local",
                reason=f"{cause} → local only → {via}{group} (the task looked like {looked_like}: {why})",
                sensitive=True,
                findings=labels,
                **recorded,
            )
    raise SensitiveDataBlocked(
        f"{cause}, and no local model is available: the call is refused rather than sent to the cloud",
        reasons=list(labels) or ["force_local"],
    )


def allowed_fallbacks(policy: RoutingPolicy, group: str, sensitive: bool) -> list[str]:
    """The fallback chain of ``group``; for a sensitive call only its local members (never the cloud)."""
    chain = [g for g in policy.fallbacks.get(group, []) if g in policy.models and g != group]
    if sensitive:
        chain = [g for g in chain if policy.is_local(g)]
    return chain


# --- exploration ----------------------------------------------------------------------------------------


def exploration_candidates(policy: RoutingPolicy, decision: RouteDecision) -> list[str]:
    """The candidates a call decided as ``decision`` may be explored on: none when exploration is off, when the
    call is sensitive or local-only (or of the sensitive class), or when it fell back; else its class's
    candidates other than the model the policy chose."""
    ex = policy.exploration
    if not ex.enabled or ex.share <= 0:
        return []
    if decision.sensitive or decision.findings or decision.forced_local or decision.task_class == "sensitive":
        return []
    return [g for g in ex.candidates.get(decision.task_class, []) if g != decision.model and g in policy.models]


def explore_route(
    decision: RouteDecision, *, policy: RoutingPolicy, key: str, local_available: bool | Collection[str] = True
) -> RouteDecision | None:
    """The explored decision for a call the policy decided as ``decision``, or None (not explored): the draw of
    ``key`` is below ``share`` and the class has a candidate (``exploration_candidates``); which candidate is a
    second draw of the same key. A local candidate that is not up is not explored. The budget is the gateway's
    to enforce (the ledger's reservations)."""
    candidates = exploration_candidates(policy, decision)
    if not candidates or exploration_draw(key) >= policy.exploration.share:
        return None
    group = candidates[int(exploration_draw(key + "#candidate") * len(candidates))]
    if not _available(group, policy, local_available):
        return None
    spec = policy.spec(group)
    return decision.model_copy(
        update={
            "model": group,
            "mode": spec.mode,
            "reason": f"{decision.reason}; exploration: {group} ({spec.mode}) instead of {decision.model}",
        }
    )
