"""The pure parts of domain/replay.py: the self-check catches a changed model or cost, Wilson bounds, privacy."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from promptship.domain.replay import (
    RecordedCall,
    RecordedDecision,
    privacy_violations,
    recorded_policy,
    replay,
    wilson_interval,
)
from promptship.domain.routing import RoutingPolicy

POLICY = RoutingPolicy.default()
H = POLICY.fingerprint()


def _call(i: int, model: str, mode: str, cost: float, **decision) -> RecordedCall:
    return RecordedCall(
        id=i,
        run_key="a1",
        step="agent",
        day="2026-10-01",
        at=datetime(2026, 10, 1, tzinfo=UTC),
        model=model,
        mode=mode,  # type: ignore[arg-type]
        prompt_tokens=1000,
        completion_tokens=100,
        cost_usd=cost,
        decision=RecordedDecision(**{"task_class": "complex_code", "policy_hash": H, **decision}),
    )


GPT4O_COST = 1000 * 2.5e-6 + 100 * 10e-6  # the seed's gpt-4o list prices


def test_the_self_check_passes_on_a_true_record_and_fails_on_a_changed_model_or_cost():
    assert replay([_call(1, "gpt-4o", "cloud", GPT4O_COST)], {H: POLICY}).self_check == "ok"
    wrong_model = replay([_call(1, "mistral", "local", 0.0, price_source="local")], {H: POLICY})
    assert wrong_model.self_check == "failed" and "decided again gpt-4o" in wrong_model.self_check_detail[0]
    wrong_cost = replay([_call(1, "gpt-4o", "cloud", GPT4O_COST + 0.01)], {H: POLICY})
    assert wrong_cost.self_check == "failed" and "priced again" in wrong_cost.self_check_detail[0]


def test_provider_priced_calls_are_reported_apart_and_unknown_policies_are_unknowable():
    report = replay([_call(1, "gpt-4o", "cloud", 0.004, price_source="provider")], {H: POLICY})
    assert report.self_check == "ok" and report.cost_replayed_usd == 0.004
    assert report.provider_priced == {"calls": 1, "cost_recorded_usd": 0.004, "cost_at_list_usd": GPT4O_COST}
    assert replay([_call(1, "gpt-4o", "cloud", 0.004)], {}).unknowable == {
        "unknowable (the recording policy is not in the store)": 1
    }


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [  # Wilson 95 % intervals as published (Newcombe 1998, table I: 81/263, 15/148, 0/20, 1/29)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(k, n, low, high):
    lo, hi = wilson_interval(k, n)
    assert (round(lo, 4), round(hi, 4)) == (low, high)


def test_the_sensitive_class_on_a_cloud_model_is_a_violation_even_without_sensitive_history():
    lenient = RoutingPolicy.from_yaml("classes: {sensitive: gpt-4o}", privacy=False)
    assert [v.rule for v in privacy_violations(lenient, [])] == ["classes.sensitive: gpt-4o (cloud)"]
    assert privacy_violations(POLICY, [_call(1, "llama3", "local", 0.0, sensitive=True)]) == []


def test_a_recorded_policy_is_rebuilt_exactly_without_the_seed_groups_it_lacked():
    served = POLICY.with_llm_config({"ollama_models": "llama3,mistral"})  # codellama removed
    rebuilt = recorded_policy(served.to_yaml())
    assert rebuilt == served and rebuilt.fingerprint() == served.fingerprint() and "codellama" not in rebuilt.models
