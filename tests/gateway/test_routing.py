"""The routing policy and the task classifier (pure domain: tables, no doubles)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from promptship.domain.gate import Finding, GateResult, gate_rules
from promptship.domain.routing import (
    EVAL_CATEGORY_TO_CLASS,
    RoutingPolicy,
    allowed_fallbacks,
    classify_task,
    decide_route,
)
from promptship.errors import ConfigError, SensitiveDataBlocked

DATA = Path(__file__).resolve().parent.parent / "data"
SECRET = Finding("secret", "github_token", 0, 10, "rules")


@pytest.fixture(scope="module")
def policy() -> RoutingPolicy:
    return RoutingPolicy.default()


@pytest.mark.parametrize(
    ("task_class", "model", "mode", "litellm_model"),
    [
        ("sensitive", "llama3", "local", "ollama_chat/llama3"),
        ("complex_code", "gpt-4o", "cloud", "openrouter/openai/gpt-4o"),
        ("tests", "mistral", "local", "ollama_chat/mistral"),
        ("docs", "claude-3.5-sonnet", "cloud", "openrouter/anthropic/claude-3.5-sonnet"),
        ("default", "mistral", "local", "ollama_chat/mistral"),
    ],
)
def test_seed_mapping_each_class_lands_on_its_model(policy, task_class, model, mode, litellm_model):
    decision = decide_route("anything", policy=policy, task_class=task_class)
    assert (decision.model, decision.mode) == (model, mode)
    assert policy.spec(decision.model).litellm_model == litellm_model


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Write pytest tests for the /chat endpoint", "tests"),
        ("Add a regression test for the emoji crash", "tests"),
        ("Update the README with the install steps", "docs"),
        ("Add docstrings to the public functions of app/services.py", "docs"),
        ("Implement a retry decorator with exponential backoff", "complex_code"),
        ("Refactor the gateway service to use dependency injection", "complex_code"),
        (
            'def add(a, b):\n    """Add two numbers. Add more test cases.\n    >>> add(1, 2)\n    3\n    """\n',
            "complex_code",
        ),
        ("Implement the merge step and make sure the existing tests still pass", "complex_code"),
        ("Add a GET /version endpoint to the chat backend with a test", "complex_code"),
        ("Implement rate limiting for /chat and add unit tests for it", "complex_code"),
        ("Write unit tests for the /version endpoint", "tests"),
        ("Fix the flaky websocket test", "tests"),
        ("Write the API documentation for the websocket protocol", "docs"),
        ("Add module-level docstrings across the adapters package", "docs"),
        ("What is the capital of France?", "default"),
        ("Write a friendly reminder email about Friday's demo", "default"),
    ],
)
def test_classifier_rules(prompt, expected):
    klass, reason = classify_task(prompt)
    assert klass == expected, reason
    assert reason


def _accuracy(rows: list[dict]) -> float:
    ok = sum(classify_task(r["text"])[0] == EVAL_CATEGORY_TO_CLASS[r["task_label"]] for r in rows)
    return ok / len(rows)


@pytest.mark.parametrize(
    "name", ["task_class_tests_docs.jsonl", "task_class_holdout.jsonl", "task_class_holdout2.jsonl"]
)
def test_hand_labelled_sets_are_classified_at_least_90_percent(name):
    rows = [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    by_label = {label: [r for r in rows if r["task_label"] == label] for label in {r["task_label"] for r in rows}}
    if name == "task_class_tests_docs.jsonl":
        assert len(by_label["tests"]) >= 50 and len(by_label["docs"]) >= 50
    for label, subset in by_label.items():
        assert _accuracy(subset) >= 0.9, label


def test_shared_task_class_eval_accuracy():
    from tests.conftest import SHARED, require

    path = SHARED / "eval" / "task_class.jsonl"
    require("shared eval data", path.exists(), str(path))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert _accuracy(rows) >= 0.95


def test_sensitive_findings_force_a_local_model_whatever_the_class(policy):
    for klass in ("complex_code", "docs", "tests", "default"):
        decision = decide_route("x", policy=policy, task_class=klass, findings=[SECRET])
        assert decision.mode == "local" and decision.sensitive
        assert decision.task_class == "sensitive"
        assert decision.findings == ("secret:github_token",)  # kinds only, never the data


def test_force_local_keeps_a_local_class_model_and_moves_cloud_classes_local(policy):
    assert decide_route("x", policy=policy, task_class="tests", force_local=True).model == "mistral"
    d = decide_route("x", policy=policy, task_class="complex_code", force_local=True)
    assert (d.model, d.mode, d.sensitive) == ("llama3", "local", True)


def test_stating_the_sensitive_class_is_local_only_like_force_local(policy):
    decision = decide_route("x", policy=policy, task_class="sensitive")
    assert (decision.model, decision.mode, decision.sensitive) == ("llama3", "local", True)
    with pytest.raises(SensitiveDataBlocked):
        decide_route("x", policy=policy, task_class="sensitive", local_available=False)


def test_gate_result_from_rules_drives_the_route(policy):
    text = "Fix the deploy; the token is ghp_" + "a1B2c3D4e5" * 4
    decision = decide_route(text, policy=policy, findings=gate_rules(text))
    assert decision.mode == "local"
    assert "secret:github_token" in decision.findings
    assert "ghp_" not in decision.reason


def test_no_local_model_available_refuses_instead_of_going_to_the_cloud(policy):
    with pytest.raises(SensitiveDataBlocked) as info:
        decide_route("x", policy=policy, findings=GateResult.of([SECRET]), local_available=False)
    assert info.value.reasons == ["secret:github_token"]
    with pytest.raises(SensitiveDataBlocked):
        decide_route("x", policy=policy, force_local=True, local_available=False)


def test_only_some_local_models_up_picks_an_available_one(policy):
    decision = decide_route("x", policy=policy, findings=[SECRET], local_available={"codellama"})
    assert (decision.model, decision.mode) == ("codellama", "local")


def test_non_sensitive_call_is_not_blocked_when_local_is_down(policy):
    assert decide_route("x", policy=policy, task_class="docs", local_available=False).mode == "cloud"


@pytest.mark.parametrize("group", ["gpt-4o", "claude-3.5-sonnet", "llama3", "mistral", "codellama"])
def test_fallbacks_never_move_a_sensitive_call_to_the_cloud(policy, group):
    chain = allowed_fallbacks(policy, group, sensitive=True)
    assert all(policy.is_local(g) for g in chain)
    assert group not in chain


def test_non_sensitive_fallbacks_may_use_the_cloud(policy):
    assert "claude-3.5-sonnet" in allowed_fallbacks(policy, "gpt-4o", sensitive=False)
    assert allowed_fallbacks(policy, "gpt-4o", sensitive=True) == ["codellama", "mistral"]


def test_yaml_overrides_models_classes_and_fallbacks(policy):
    text = """
models:
  qwen: {litellm_model: ollama_chat/qwen2.5-coder, mode: local}
  deepseek: {litellm_model: openrouter/deepseek/deepseek-chat, mode: cloud, input_cost_per_token: 0.0000003}
classes: {complex_code: deepseek, tests: qwen}
fallbacks: {deepseek: [gpt-4o, qwen]}
timeout_s: 60
"""
    p = RoutingPolicy.from_yaml(text)
    assert decide_route("x", policy=p, task_class="complex_code").model == "deepseek"
    assert decide_route("x", policy=p, task_class="tests").model == "qwen"
    assert decide_route("x", policy=p, task_class="docs").model == "claude-3.5-sonnet"  # kept from the seed
    assert allowed_fallbacks(p, "deepseek", sensitive=True) == ["qwen"]
    assert p.timeout_s == 60 and p.spec("deepseek").input_cost_per_token == 3e-7


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("classes: {sensitive: gpt-4o}", "sensitive class must map to a local model"),
        ("classes: {docs: nope}", "unknown model group 'nope'"),
        ("classes: {poetry: mistral}", "classes.poetry"),
        ("fallbacks: {gpt-4o: [ghost]}", "unknown model group 'ghost'"),
        ("models: {x: {litellm_model: a/b, mode: moon}}", "models.x"),
        ("surprise: 1", "unknown keys"),
        ("[1, 2", "does not parse"),
    ],
)
def test_bad_yaml_names_the_problem(text, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        RoutingPolicy.from_yaml(text)


def test_llm_config_configmap_values_from_the_seed(policy):
    p = policy.with_llm_config(
        {
            "default_model": "mistral",
            "ollama_models": "llama3,mistral,code llama",
            "max_retries": "3",
            "timeout_seconds": "30",
        }
    )
    assert p.classes == policy.classes
    assert {n for n, s in p.models.items() if s.local} == {"llama3", "mistral", "codellama"}
    assert (p.max_retries, p.timeout_s) == (3, 30.0)


def test_llm_config_with_fewer_local_models_moves_classes_to_the_default(policy):
    p = policy.with_llm_config({"default_model": "mistral", "ollama_models": "mistral"})
    assert p.classes["sensitive"] == "mistral"
    assert "llama3" not in p.models
    assert allowed_fallbacks(p, "gpt-4o", sensitive=True) == ["mistral"]
    p2 = policy.with_llm_config({"default_model": "phi3", "ollama_models": "phi3"})
    assert p2.classes["default"] == "phi3" and p2.spec("phi3").litellm_model == "ollama_chat/phi3"


@pytest.mark.parametrize(
    "values",
    [
        {"ollama_models": " , "},
        {"default_model": "gpt-4o-mini", "ollama_models": "mistral"},
        {"max_retries": "three"},
    ],
)
def test_bad_llm_config_is_a_config_error(policy, values):
    with pytest.raises(ConfigError, match="llm-config"):
        policy.with_llm_config(values)


def test_build_routing_policy_reads_the_policy_file_and_the_llm_config_settings(tmp_path):
    from promptship.settings import LLMSettings, Settings
    from promptship.wiring import build_routing_policy

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "models:\n  qwen: {litellm_model: ollama_chat/qwen2.5-coder, mode: local}\nclasses: {tests: qwen}\n",
        encoding="utf-8",
    )
    settings = Settings(
        llm=LLMSettings(
            policy_file=policy_file, local_models=["qwen", "mistral"], default_model="mistral", timeout_s=12
        )
    )
    policy = build_routing_policy(settings)
    assert decide_route("x", policy=policy, task_class="tests").model == "qwen"
    assert policy.classes["sensitive"] == "mistral"  # llama3 is not served: sensitive moves to the default model
    assert policy.timeout_s == 12

    missing = Settings(llm=LLMSettings(policy_file=tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="POLICY_FILE"):
        build_routing_policy(missing)


# --- llama.cpp as a local backend, and routing that knows the caller ----------------------------------------

LLAMACPP_POLICY = (Path(__file__).resolve().parents[2] / "deployments" / "routing-llamacpp.yaml").read_text()


@pytest.fixture(scope="module")
def llamacpp_policy() -> RoutingPolicy:
    return RoutingPolicy.from_yaml(LLAMACPP_POLICY)


def test_the_llamacpp_policy_file_adds_a_local_openai_compatible_group(llamacpp_policy: RoutingPolicy) -> None:
    spec = llamacpp_policy.spec("smollm2")
    assert (spec.backend, spec.mode, spec.litellm_model) == ("llamacpp", "local", "openai/smollm2-135m-instruct")
    assert llamacpp_policy.spec("llama3").backend == "ollama" and llamacpp_policy.spec("gpt-4o").backend == "openrouter"
    # the three callers whose local calls the real model answers (PR text, the chat app, CI-log summaries)
    assert llamacpp_policy.callers == {"open_pull_request": "smollm2", "chat": "smollm2", "summarize_ci_log": "smollm2"}


@pytest.mark.parametrize(
    ("caller", "task_class", "force_local", "up", "model", "mode"),
    [
        ("open_pull_request", "docs", True, True, "smollm2", "local"),  # sensitive PR text → the real model
        ("open_pull_request", "docs", False, True, "claude-3.5-sonnet", "cloud"),  # cloud calls are not moved
        ("open_pull_request", "tests", False, True, "smollm2", "local"),  # a local class takes the caller's group
        ("open_pull_request", "docs", True, ["llama3", "mistral"], "llama3", "local"),  # its group down → next
        ("agent", "docs", True, True, "llama3", "local"),  # a caller without a group: the class rules
        (None, "default", False, True, "mistral", "local"),
    ],
)
def test_a_callers_local_calls_go_to_its_group(
    llamacpp_policy: RoutingPolicy, caller, task_class, force_local, up, model, mode
) -> None:
    d = decide_route(
        "Write the PR title",
        policy=llamacpp_policy,
        task_class=task_class,
        force_local=force_local,
        caller=caller,
        local_available=up,
    )
    assert (d.model, d.mode) == (model, mode)
    if model == "smollm2":
        assert f"caller {caller}'s local group smollm2" in d.reason


def test_a_sensitive_finding_sends_the_callers_call_to_its_group(llamacpp_policy: RoutingPolicy) -> None:
    d = decide_route("ghp_…", policy=llamacpp_policy, findings=[SECRET], task_class="docs", caller="open_pull_request")
    assert (d.model, d.sensitive, d.findings) == ("smollm2", True, ("secret:github_token",))
    assert allowed_fallbacks(llamacpp_policy, "smollm2", sensitive=True) == ["llama3", "mistral"]


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("callers: {chat: gpt-4o}", "callers.chat must name a local model group"),
        ("callers: {chat: nope}", "callers.chat names unknown model group 'nope'"),
        ("callers: [chat]", "callers must map a caller"),
        ("models: {x: {litellm_model: ollama_chat/x, mode: local, backend: llamacpp}}", "openai/<the server"),
        ("models: {x: {litellm_model: openai/x, mode: cloud, backend: llamacpp}}", "serves local models"),
    ],
)
def test_bad_callers_and_backends_are_config_errors(yaml_text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("'", "'")):
        RoutingPolicy.from_yaml(yaml_text)


def test_llm_config_keeps_llamacpp_groups_and_the_policy_round_trips(llamacpp_policy: RoutingPolicy) -> None:
    served = llamacpp_policy.with_llm_config({"ollama_models": "llama3", "default_model": "llama3"})
    assert "smollm2" in served.models and "mistral" not in served.models
    assert served.callers == llamacpp_policy.callers and len(served.callers) == 3
    assert RoutingPolicy.from_yaml(llamacpp_policy.to_yaml()) == llamacpp_policy
    assert RoutingPolicy.from_yaml(RoutingPolicy.default().to_yaml()) == RoutingPolicy.default()
