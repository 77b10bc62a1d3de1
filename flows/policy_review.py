"""The weekly policy review: the replay of the routing policy in force and of the one suggested from outcomes,
and the per class × model outcome table with a chart, as a markdown artifact."""

from __future__ import annotations

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from promptship.settings import Settings


@task(name="publish_policy_review")
def publish_policy_review(days: int, success_floor: float) -> dict:
    """Replay the last ``days`` days under the recording policies (self-check) and under the suggestion; publish
    both with the outcome table as an artifact. Returns the two replays' totals and the suggested classes."""
    from datetime import UTC, datetime, timedelta

    from promptship.domain.replay import suggest_policy
    from promptship.replay_outputs import outcomes_from_store, policy_review_markdown, replay_from_store
    from promptship.wiring import build_routing_policy, build_store

    settings = Settings()
    store = build_store(settings)
    since = (datetime.now(UTC) - timedelta(days=days)).date()
    rows = outcomes_from_store(store)
    suggested, _choices = suggest_policy(build_routing_policy(settings), rows, success_floor=success_floor)
    current, _ = replay_from_store(store, since=since)
    proposal, _ = replay_from_store(store, policy_text=suggested.to_yaml(), policy_name="suggested", since=since)
    create_markdown_artifact(
        markdown=policy_review_markdown(current, proposal, rows, suggested),
        key="promptship-policy-review",
        description=f"promptship routing policy review, last {days} days",
    )
    return {
        "calls": current.calls,
        "self_check": current.self_check,
        "cost_recorded_usd": current.cost_recorded_usd,
        "cost_suggested_usd": proposal.cost_replayed_usd,
        "suggested_classes": dict(suggested.classes),
    }


@flow(name="policy-review")
def policy_review(days: int = 30, success_floor: float = 0.8) -> dict:
    """Publish the replay of the current and the suggested routing policy and the per-model outcome table."""
    return publish_policy_review(days, success_floor)
