"""`promptship run` / `resume`: bad input and missing configuration end cleanly, before any flow run starts."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from promptship.cli import app

pytestmark = pytest.mark.flow


def test_run_without_configuration_names_the_missing_setting() -> None:
    result = CliRunner().invoke(app, ["run", "--prompt", "Add a GET /version endpoint"])
    assert result.exit_code == 2
    assert "configuration:" in result.output and "PROMPTSHIP_" in result.output


def test_run_rejects_a_bad_repository_naming_the_option() -> None:
    result = CliRunner().invoke(app, ["run", "--prompt", "Add a GET /version endpoint", "--repository", "nope"])
    assert result.exit_code == 2
    assert "--repository" in result.output and "owner/name" in result.output


def test_resume_without_configuration_names_the_missing_setting() -> None:
    result = CliRunner().invoke(app, ["resume", "00000000-0000-0000-0000-000000000000"])
    assert result.exit_code == 2
    assert "configuration:" in result.output
