"""The store's ``run_waits``: what the receiver and the sweep find, on a real SQLite store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from promptship.domain.waits import RunWait
from promptship.store import Store, make_engine


def _store(tmp_path: Path) -> Store:
    store = Store(make_engine(f"sqlite:///{tmp_path / 'store.db'}"))
    store.create_schema()
    return store


def _wait(run: str, **changes: object) -> RunWait:
    base: dict[str, object] = dict(
        flow_run_id=run,
        request_key=f"key-{run}",
        attempt_id=f"key-{run}-a1",
        label="wait_for_ci#1",
        kind="ci",
        repository="Acme/App",
        sha="AB" * 20,
        deadline=datetime.now(UTC) + timedelta(minutes=30),
    )
    return RunWait.model_validate({**base, **changes})


def test_waits_are_found_by_commit_or_pr_and_counted_per_suspension(tmp_path: Path) -> None:
    waits = _store(tmp_path).waits()
    first = waits.suspending(_wait("r1"))
    again = waits.suspending(_wait("r1"))
    assert (first.suspensions, again.suspensions) == (1, 2) and first.pause_key() != again.pause_key()
    waits.suspending(_wait("r2", label="merge", kind="merge", sha=None, pr_number=7))
    waits.suspending(_wait("r3", kind="image", label="wait_for_image"))

    by_sha = waits.waiting_for("acme/app", sha="ab" * 20)
    assert sorted(w.flow_run_id for w in by_sha) == ["r1", "r3"]  # case-insensitive; the merge wait is not CI
    assert [w.flow_run_id for w in waits.waiting_for("acme/app", pr_number=7)] == ["r2"]
    assert waits.waiting_for("acme/app", pr_number=8) == [] and waits.waiting_for("other/app", sha="ab" * 20) == []
    assert waits.current("r1", "wait_for_ci#1") is not None and waits.current("r1", "merge") is None

    waits.resumed("r1", "event")
    waits.clear("r1")
    assert sorted(w.flow_run_id for w in waits.all()) == ["r2", "r3"]
