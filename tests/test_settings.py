"""Settings: old environment names still set the moved settings, and docs/SETTINGS.md is what the model says."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from promptship.cli import app
from promptship.settings import MOVED, Settings, env_name, reference_markdown

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "SETTINGS.md"


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


def test_docs_settings_md_is_up_to_date() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == reference_markdown(), (
        "docs/SETTINGS.md is stale: regenerate it with `promptship settings-reference`"
    )


def test_the_reference_names_every_setting_its_environment_variable_and_old_names() -> None:
    text = reference_markdown()
    for name, info in Settings.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            for field in info.annotation.model_fields:
                assert f"| `{name}.{field}` | `{env_name(name, field)}` |" in text
        else:
            assert f"| `{name}` | `{env_name(None, name)}` |" in text
    row = next(line for line in text.splitlines() if line.startswith("| `health.url` |"))
    assert "`PROMPTSHIP_KUBE__HEALTH_URL`" in row


def test_every_setting_has_a_description() -> None:
    for name, info in Settings.model_fields.items():
        assert info.description, name
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            for field, sub in info.annotation.model_fields.items():
                assert sub.description, f"{name}.{field}"


def test_a_credential_is_rendered_as_secret_never_as_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "ghp_" + "s" * 36
    monkeypatch.setenv("PROMPTSHIP_GITHUB__TOKEN", token)
    text = reference_markdown()
    assert token not in text  # the reference reads no environment
    secret_rows = [line for line in text.splitlines() if line.startswith("| ") and "`SecretStr" in line]
    assert {row.split(" | ")[0] for row in secret_rows} == {
        "| `llm.openrouter_api_key`", "| `github.token`", "| `github.app_private_key`", "| `github.webhook_secret`",
        "| `kube.gitops_token`",
        "| `openhands.session_api_key`",
        "| `store_key`",
    }  # fmt: skip
    assert all(row.split(" | ")[4] == "(secret)" for row in secret_rows)


def test_the_command_writes_and_checks_the_reference(tmp_path: Path) -> None:
    target = tmp_path / "docs" / "SETTINGS.md"
    stale = CliRunner().invoke(app, ["settings-reference", "--check", "--path", str(target)])
    assert stale.exit_code == 1 and "stale" in stale.output
    written = CliRunner().invoke(app, ["settings-reference", "--path", str(target)])
    assert written.exit_code == 0 and target.read_text(encoding="utf-8") == reference_markdown()
    fresh = CliRunner().invoke(app, ["settings-reference", "--check", "--path", str(target)])
    assert fresh.exit_code == 0, fresh.output
