"""The exploration setting, pure: who is explored (never a sensitive call; a stated class only inside its own
candidates), that the draw is reproducible and near its share, that off changes nothing (not even the policy's
hash), and that replay's self-check re-derives an explored call — and catches one that does not add up."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from promptship.domain.replay import RecordedCall, RecordedDecision, recorded_policy, replay
from promptship.domain.routing import (
    Exploration,
    RoutingPolicy,
    decide_route,
    exploration_draw,
    exploration_key,
    explore_route,
)
from promptship.errors import ConfigError

SEED = RoutingPolicy.default()
# The seed policy's hash before the exploration setting existed (main at 30afa93): ledgers recorded under it must
# keep finding their policy, so a policy without exploration must hash exactly as it did.
SEED_HASH_BEFORE = "cf8c6ac99cc284855ba146704467c3ea43a4b16f8979237d2b8063c87ab0612b"
ON = SEED.with_exploration(
    Exploration(enabled=True, share=1.0, budget_usd_per_day=100.0, candidates={"tests": ["codellama"]})
)


def test_off_by_default_changes_nothing() -> None:
    assert SEED.exploration == Exploration() and not SEED.exploration.enabled
    assert "exploration" not in SEED.to_yaml()
    assert SEED.fingerprint() == SEED_HASH_BEFORE
    decision = decide_route("Write pytest unit tests for the /chat endpoint", policy=SEED)
    assert explore_route(decision, policy=SEED, key="att-1/summarize/0") is None
    # candidates without `enabled`: still nothing explored (but the setting is part of the policy and its hash)
    listed = SEED.with_exploration(Exploration(share=1.0, candidates={"tests": ["codellama"]}))
    assert explore_route(decision, policy=listed, key="att-1/summarize/0") is None
    assert listed.fingerprint() != SEED.fingerprint()


def test_a_clean_call_goes_to_its_classs_candidate_and_a_sensitive_one_never() -> None:
    clean = decide_route("Write pytest unit tests for the /chat endpoint", policy=ON)
    explored = explore_route(clean, policy=ON, key="att-1/summarize/0")
    assert (clean.model, explored and explored.model, explored and explored.mode) == ("mistral", "codellama", "local")
    from promptship.domain.gate import Finding

    secret = Finding("secret", "github_token", 0, 10, "rules")
    sensitive = decide_route("Write pytest tests; token ghp_x", policy=ON, findings=[secret])
    forced = decide_route("Write pytest unit tests", policy=ON, force_local=True, task_class="tests")
    stated_sensitive = decide_route("anything", policy=ON, task_class="sensitive")
    for decision in (sensitive, forced, stated_sensitive):
        for i in range(50):
            assert explore_route(decision, policy=ON, key=f"att-{i}/s/0") is None


def test_a_stated_class_explores_only_inside_its_own_candidates() -> None:
    policy = SEED.with_exploration(
        Exploration(enabled=True, share=1.0, candidates={"tests": ["codellama"], "docs": ["gpt-4o"]})
    )
    # the text reads like tests, the caller states docs: only docs' candidate
    stated = decide_route("Write pytest unit tests for the /chat endpoint", policy=policy, task_class="docs")
    models = {d.model for i in range(40) if (d := explore_route(stated, policy=policy, key=f"a{i}/s/0")) is not None}
    assert models == {"gpt-4o"}
    # a class without candidates is never explored
    default = decide_route("What is the capital of France?", policy=policy, task_class="default")
    assert all(explore_route(default, policy=policy, key=f"a{i}/s/0") is None for i in range(40))


def test_the_draw_is_reproducible_and_near_its_share() -> None:
    assert exploration_draw("att-7/open_pull_request/3") == exploration_draw("att-7/open_pull_request/3")
    policy = SEED.with_exploration(Exploration(enabled=True, share=0.05, candidates={"tests": ["codellama"]}))
    decision = decide_route("Write pytest unit tests", policy=policy)
    n = 4000
    explored = sum(
        explore_route(decision, policy=policy, key=exploration_key(f"att-{i}", "summarize", i % 3)) is not None
        for i in range(n)
    )
    # binomial(4000, 0.05): mean 200, sd ≈ 13.8; ±5 sd
    assert 131 <= explored <= 269, explored


def test_a_policy_file_carries_exploration_and_bad_values_are_refused() -> None:
    text = ON.to_yaml()
    assert RoutingPolicy.from_yaml(text) == ON == recorded_policy(text)
    assert RoutingPolicy.from_yaml(text).fingerprint() == ON.fingerprint()
    with pytest.raises(ConfigError, match=r"exploration\.candidates\.sensitive"):
        SEED.with_exploration(Exploration(enabled=True, candidates={"sensitive": ["mistral"]}))
    with pytest.raises(ConfigError, match="unknown model group 'nope'"):
        RoutingPolicy.from_yaml("exploration: {enabled: true, candidates: {tests: [nope]}}")
    with pytest.raises(ConfigError, match="exploration is invalid: share"):
        RoutingPolicy.from_yaml("exploration: {share: 1.5}")
    # llm-config removing a candidate's model removes it from the candidates, not the whole policy
    pruned = ON.with_llm_config({"ollama_models": "llama3,mistral"})
    assert pruned.exploration.candidates == {} and pruned.exploration.enabled


def _row(i: int, model: str, *, explored_from: str | None, seq: int | None, run: str = "att-1") -> RecordedCall:
    return RecordedCall(
        id=i,
        run_key=run,
        step="summarize",
        day="2026-11-02",
        at=datetime(2026, 11, 2, tzinfo=UTC),
        model=model,
        mode="local",
        prompt_tokens=100,
        completion_tokens=50,
        cost_usd=0.0,
        decision=RecordedDecision(
            task_class="tests",
            class_source="rule",
            class_rule="asks to write or fix tests",
            caller="summarize",
            price_source="local",
            policy_hash=ON.fingerprint(),
            decided_by="exploration" if explored_from else "policy",
            explored_from=explored_from,
            explore_seq=seq,
        ),
    )


def test_replay_rederives_explored_calls_and_reports_them_apart() -> None:
    rows = [_row(1, "codellama", explored_from="mistral", seq=0), _row(2, "mistral", explored_from=None, seq=None)]
    report = replay(rows, {ON.fingerprint(): ON})
    assert report.self_check == "ok", report.self_check_detail
    assert report.explored == {"calls": 1, "cost_recorded_usd": 0.0}
    assert (report.moved_to_cloud, report.moved_to_local, report.models_changed) == (0, 0, 0)
    # under another policy the explored call is decided by that policy's routing (exploration is not simulated)
    report = replay(rows, {ON.fingerprint(): ON}, candidate=SEED, candidate_name="seed")
    assert report.models_changed == 1 and report.explored["calls"] == 1
    assert "tests × codellama → mistral" in report.per_class_model


@pytest.mark.parametrize(
    ("row", "detail"),
    [
        # recorded as explored from llama3, but the policy itself decides mistral for this call
        (_row(1, "codellama", explored_from="llama3", seq=0), "explored from llama3, the policy decides mistral"),
        # recorded on a model that is not the class's candidate
        (_row(1, "llama3", explored_from="mistral", seq=0), "recorded llama3, decided again codellama"),
    ],
)
def test_the_self_check_fails_on_an_explored_call_that_does_not_add_up(row: RecordedCall, detail: str) -> None:
    report = replay([row], {ON.fingerprint(): ON})
    assert report.self_check == "failed"
    assert any(detail in d for d in report.self_check_detail), report.self_check_detail


def test_the_self_check_fails_when_the_recording_policy_would_not_have_explored() -> None:
    share = ON.with_exploration(ON.exploration.model_copy(update={"share": 0.05}))
    seq = next(s for s in range(100) if exploration_draw(exploration_key("att-1", "summarize", s)) >= 0.05)
    row = _row(1, "codellama", explored_from="mistral", seq=seq)
    row = row.model_copy(update={"decision": row.decision.model_copy(update={"policy_hash": share.fingerprint()})})  # type: ignore[union-attr]
    report = replay([row], {share.fingerprint(): share})
    assert report.self_check == "failed"
    assert any("the recording policy does not explore it" in d for d in report.self_check_detail)
