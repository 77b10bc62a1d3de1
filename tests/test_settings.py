"""Settings: old environment names still set the moved settings; the new name wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptship.settings import MOVED, Settings


def _value(settings: Settings, dotted: str) -> object:
    group, field = dotted.split(".")
    return getattr(getattr(settings, group), field)


@pytest.mark.parametrize(
    ("old_env", "raw", "new", "expected"),
    [
        ("PROMPTSHIP_GITHUB__REPAIR_ROUNDS", "5", "pipeline.repair_rounds", 5),
        ("PROMPTSHIP_GITHUB__CI_TIMEOUT_S", "60", "pipeline.ci_timeout_s", 60.0),
        ("PROMPTSHIP_GITHUB__MERGE_TIMEOUT_S", "61", "pipeline.merge_timeout_s", 61.0),
        ("PROMPTSHIP_KUBE__ROLLOUT_TIMEOUT_S", "42", "pipeline.rollout_timeout_s", 42.0),
        ("PROMPTSHIP_OPENHANDS__TIMEOUT_S", "900", "pipeline.agent_timeout_s", 900.0),
        ("PROMPTSHIP_OPENHANDS__MAX_ITERATIONS", "7", "pipeline.agent_max_iterations", 7),
        ("PROMPTSHIP_OPENHANDS__WORKSPACE_ROOT", "/srv/ws", "pipeline.workspace_root", Path("/srv/ws")),
        ("PROMPTSHIP_KUBE__HEALTH_URL", "http://app/health", "health.url", "http://app/health"),
        ("PROMPTSHIP_KUBE__HEALTH_CONSECUTIVE", "4", "health.consecutive", 4),
        ("PROMPTSHIP_KUBE__HEALTH_RETRIES", "9", "health.retries", 9),
        ("PROMPTSHIP_KUBE__HEALTH_TIMEOUT_S", "1.5", "health.timeout_s", 1.5),
        ("PROMPTSHIP_KUBE__HEALTH_INTERVAL_S", "0", "health.interval_s", 0.0),
        ("PROMPTSHIP_KUBE__HEALTH_MAX_LATENCY_MS", "250", "health.max_latency_ms", 250.0),
    ],
)
def test_an_old_environment_name_sets_the_moved_setting(
    monkeypatch: pytest.MonkeyPatch, old_env: str, raw: str, new: str, expected: object
) -> None:
    monkeypatch.setenv(old_env, raw)
    assert _value(Settings(), new) == expected


def test_the_table_of_moves_covers_every_old_name_once_and_points_at_real_settings() -> None:
    assert len({new for new in MOVED.values()}) == len(MOVED)
    for (old_group, old_field), (new_group, new_field) in MOVED.items():
        assert old_field not in type(getattr(Settings(), old_group)).model_fields, f"{old_group}.{old_field}"
        assert new_field in type(getattr(Settings(), new_group)).model_fields, f"{new_group}.{new_field}"


def test_the_new_name_wins_over_the_old(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTSHIP_KUBE__HEALTH_URL", "http://old/health")
    monkeypatch.setenv("PROMPTSHIP_HEALTH__URL", "http://new/health")
    monkeypatch.setenv("PROMPTSHIP_GITHUB__REPAIR_ROUNDS", "5")
    monkeypatch.setenv("PROMPTSHIP_PIPELINE__REPAIR_ROUNDS", "1")
    settings = Settings()
    assert (settings.health.url, settings.pipeline.repair_rounds) == ("http://new/health", 1)


def test_an_old_name_alongside_other_new_names_of_its_group_keeps_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTSHIP_OPENHANDS__TIMEOUT_S", "900")
    monkeypatch.setenv("PROMPTSHIP_PIPELINE__AGENT_MAX_ITERATIONS", "7")
    monkeypatch.setenv("PROMPTSHIP_OPENHANDS__URL", "http://agent:3000")
    settings = Settings()
    assert (settings.pipeline.agent_timeout_s, settings.pipeline.agent_max_iterations) == (900.0, 7)
    assert settings.openhands.url == "http://agent:3000"


def test_workspace_root_reads_the_pipeline_setting(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).workspace_root() == (tmp_path / "workspaces").resolve()
    assert Settings(pipeline={"workspace_root": tmp_path / "ws"}).workspace_root() == (tmp_path / "ws").resolve()
