"""``RunWaits``: the ``run_waits`` table — what each suspended flow run waits for (``promptship.domain.waits``).

Written by the run before it suspends, read by the webhook receiver (which run waits for this commit or PR?) and
by ``promptship sweep``; cleared when the run goes on."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import sessionmaker

from promptship.domain.waits import RunWait
from promptship.store.tables import RunWaitRow


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _wait(r: RunWaitRow) -> RunWait:
    return RunWait(
        flow_run_id=r.flow_run_id,
        request_key=r.request_key,
        attempt_id=r.attempt_id,
        label=r.label,
        kind=r.kind,  # type: ignore[arg-type]  # written from the WaitKind literal
        repository=r.repository,
        sha=r.sha,
        pr_number=r.pr_number,
        deadline=_utc(r.deadline),  # type: ignore[arg-type]
        suspensions=r.suspensions,
        suspended_at=_utc(r.suspended_at),
        resumed_at=_utc(r.resumed_at),
    )


class RunWaits:
    """Waits of suspended flow runs, in the one store (its schema comes with ``Store.create_schema``)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def current(self, flow_run_id: str, label: str) -> RunWait | None:
        """The flow run's wait in step ``label``, if it suspended there before."""
        with self._sessions() as s:
            row = s.get(RunWaitRow, flow_run_id)
        return _wait(row) if row is not None and row.label == label else None

    def suspending(self, wait: RunWait) -> RunWait:
        """Record that the run suspends in ``wait`` (replacing any earlier wait of the run); the wait's
        ``suspensions`` counts this one."""
        now = datetime.now(UTC)
        with self._sessions.begin() as s:
            row = s.get(RunWaitRow, wait.flow_run_id)
            count = row.suspensions + 1 if row is not None and row.label == wait.label else 1
            if row is not None:
                s.delete(row)
                s.flush()
            s.add(
                RunWaitRow(
                    flow_run_id=wait.flow_run_id,
                    request_key=wait.request_key,
                    attempt_id=wait.attempt_id,
                    label=wait.label,
                    kind=wait.kind,
                    repository=wait.repository.lower(),
                    sha=wait.sha.lower() if wait.sha else None,
                    pr_number=wait.pr_number,
                    deadline=wait.deadline,
                    suspensions=count,
                    suspended_at=now,
                    resumed_at=None,
                    resumed_by=None,
                )
            )
        return wait.model_copy(update={"suspensions": count, "suspended_at": now, "resumed_at": None})

    def resumed(self, flow_run_id: str, by: str) -> None:
        """Note who resumed the run (``event``, ``condition``, ``deadline``); the row stays until the run goes on."""
        with self._sessions.begin() as s:
            s.execute(
                update(RunWaitRow)
                .where(RunWaitRow.flow_run_id == flow_run_id)
                .values(resumed_at=datetime.now(UTC), resumed_by=by[:32])
            )

    def clear(self, flow_run_id: str) -> None:
        """The run went on (or ended): it waits for nothing."""
        with self._sessions.begin() as s:
            s.execute(delete(RunWaitRow).where(RunWaitRow.flow_run_id == flow_run_id))

    def waiting_for(self, repository: str, *, sha: str | None = None, pr_number: int | None = None) -> list[RunWait]:
        """Waits a CI event of ``sha`` (kinds ci and image) or a ``pull_request`` event of ``pr_number`` (kind
        merge) in ``repository`` ends."""
        query = select(RunWaitRow).where(RunWaitRow.repository == repository.lower())
        if sha is not None:
            query = query.where(RunWaitRow.sha == sha.lower(), RunWaitRow.kind.in_(("ci", "image")))
        elif pr_number is not None:
            query = query.where(RunWaitRow.pr_number == pr_number, RunWaitRow.kind == "merge")
        else:
            return []
        with self._sessions() as s:
            return [_wait(r) for r in s.scalars(query).all()]

    def all(self) -> list[RunWait]:
        """Every recorded wait (the sweep's worklist)."""
        with self._sessions() as s:
            return [_wait(r) for r in s.scalars(select(RunWaitRow).order_by(RunWaitRow.deadline)).all()]
