"""The webhook receiver's durable state, in the one store (same ``Base`` as ``store.tables``):

- ``webhook_deliveries``: every ``X-GitHub-Delivery`` seen, so a redelivery (GitHub's "Redeliver" button,
  a retry after a timeout, a replay) starts nothing twice — also across receiver restarts;
- ``ci_events``: a counter per (repository, sha) behind ``StoreCIWakeups``, for CI waits in other processes;
- ``app_installation_repositories``: what ``installation`` / ``installation_repositories`` events said about
  each repository (``InstalledRepositories``), so a repository removed from the GitHub App stays off the
  allowlist across restarts.

``InProcessCIWakeups`` is the same ``CIWakeups`` port (``promptship.ports``) in memory, for a receiver and CI
waits in one process (tests, the demo, a receiver started inside the worker).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Boolean, DateTime, Engine, Integer, String, Text, delete, event, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from promptship.domain.webhooks import CISignal, InstallationChange
from promptship.store.db import make_engine
from promptship.store.tables import Base

# A delivery whose handling failed may be delivered again and handled then; any other outcome is final.
RETRYABLE_OUTCOME = "failed"


class WebhookDeliveryRow(Base):
    """One GitHub delivery, by its ``X-GitHub-Delivery`` id."""

    __tablename__ = "webhook_deliveries"

    delivery_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    event: Mapped[str] = mapped_column(String(64))
    repository: Mapped[str | None] = mapped_column(String(200), nullable=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    outcome: Mapped[str] = mapped_column(String(32))
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)


class CIEventRow(Base):
    """How many CI events of one commit the receiver has seen."""

    __tablename__ = "ci_events"

    repository: Mapped[str] = mapped_column(String(200), primary_key=True)
    sha: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class InstallationRepositoryRow(Base):
    """The last thing the GitHub App's installation events said about one repository."""

    __tablename__ = "app_installation_repositories"

    repository: Mapped[str] = mapped_column(String(200), primary_key=True)
    installed: Mapped[bool] = mapped_column(Boolean)
    installation_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    delivery_id: Mapped[str | None] = mapped_column(String(100), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def webhook_engine(url: str) -> Engine:
    """The store's engine for the receiver. On SQLite, commits skip the fsync (``synchronous=NORMAL`` in WAL
    mode: an application crash loses nothing, a power cut may lose the last deliveries — then a redelivery is
    handled again, and ``run_deployment``'s idempotency key still prevents a second run). That turns a 20-50 ms
    acknowledgement into about a millisecond."""
    engine = make_engine(url)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _no_fsync_per_commit(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    return engine


def _now() -> datetime:
    return datetime.now(UTC)


class WebhookDeliveries:
    """Claims and outcomes of deliveries."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def create_schema(self) -> None:
        """Create this module's tables if missing (migration 0001 creates the same ones)."""
        tables = [WebhookDeliveryRow.__table__, CIEventRow.__table__, InstallationRepositoryRow.__table__]
        Base.metadata.create_all(self.engine, tables=tables)  # type: ignore[arg-type]

    def claim(self, delivery_id: str, event: str, repository: str | None) -> bool:
        """True for the first delivery of ``delivery_id`` (or a redelivery of one that failed); False for a
        duplicate. Atomic: of two concurrent deliveries of one id, exactly one claims it."""
        with self._sessions.begin() as s:
            try:
                with s.begin_nested():
                    s.execute(
                        insert(WebhookDeliveryRow).values(
                            delivery_id=delivery_id,
                            event=event,
                            repository=repository,
                            received_at=_now(),
                            outcome="received",
                        )
                    )
                return True
            except IntegrityError:
                pass
            retried = s.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.delivery_id == delivery_id, WebhookDeliveryRow.outcome == RETRYABLE_OUTCOME)
                .values(outcome="received", received_at=_now(), detail=None)
            )
            return retried.rowcount == 1  # type: ignore[attr-defined]

    def finish(self, delivery_id: str, outcome: str, detail: str | None = None) -> None:
        """Record how the delivery ended (``started``, ``refused``, ``ignored``, ``ci``, ``failed`` …)."""
        with self._sessions.begin() as s:
            s.execute(
                update(WebhookDeliveryRow)
                .where(WebhookDeliveryRow.delivery_id == delivery_id)
                .values(outcome=outcome, detail=(detail or None) and detail[:2000])
            )

    def outcome(self, delivery_id: str) -> str | None:
        """The recorded outcome of a delivery, or None if it was never seen."""
        with self._sessions() as s:
            return s.scalar(select(WebhookDeliveryRow.outcome).where(WebhookDeliveryRow.delivery_id == delivery_id))

    def outcomes(self) -> dict[str, str]:
        """Every delivery id seen, with its outcome."""
        with self._sessions() as s:
            return dict(s.execute(select(WebhookDeliveryRow.delivery_id, WebhookDeliveryRow.outcome)).tuples().all())


class InstalledRepositories:
    """Repositories the GitHub App was added to or removed from, as its installation events said."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def create_schema(self) -> None:
        WebhookDeliveries(self.engine).create_schema()

    def record(self, change: InstallationChange, delivery_id: str | None = None) -> None:
        """Remember ``change`` (the latest event wins for each repository)."""
        rows = [(r.lower(), True) for r in change.added] + [(r.lower(), False) for r in change.removed]
        with self._sessions.begin() as s:
            for repository, installed in rows:
                s.execute(delete(InstallationRepositoryRow).where(InstallationRepositoryRow.repository == repository))
                s.execute(
                    insert(InstallationRepositoryRow).values(
                        repository=repository,
                        installed=installed,
                        installation_id=change.installation_id,
                        delivery_id=delivery_id,
                        updated_at=_now(),
                    )
                )

    def uninstalled(self) -> frozenset[str]:
        """Repositories (lower-case owner/name) the App was last removed from."""
        with self._sessions() as s:
            rows = s.scalars(
                select(InstallationRepositoryRow.repository).where(InstallationRepositoryRow.installed.is_(False))
            )
            return frozenset(rows.all())


def _key(repository: str, sha: str) -> tuple[str, str]:
    return repository.lower(), sha.lower()


class InProcessCIWakeups:
    """``CIWakeups`` inside one process (a condition variable per process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._cond = threading.Condition()
        self._counts: dict[tuple[str, str], int] = {}
        self.signals: list[CISignal] = []

    def notify(self, signal: CISignal) -> None:
        with self._cond:
            key = _key(signal.repository, signal.sha)
            self._counts[key] = self._counts.get(key, 0) + 1
            self.signals.append(signal)
            self._cond.notify_all()

    def generation(self, repository: str, sha: str) -> int:
        with self._cond:
            return self._counts.get(_key(repository, sha), 0)

    def wait(self, repository: str, sha: str, *, after: int, timeout_s: float) -> int:
        key = _key(repository, sha)
        deadline = self._clock() + max(0.0, timeout_s)
        with self._cond:
            while self._counts.get(key, 0) <= after:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._counts.get(key, 0)


class StoreCIWakeups:
    """``CIWakeups`` through the store, for a receiver and CI waits in different processes.

    ``wait`` looks at one row every ``interval_s`` — a local query, not a request to GitHub.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        interval_s: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._interval_s = interval_s
        self._clock = clock
        self._sleep = sleep

    def create_schema(self) -> None:
        """Create the tables if missing (the receiver does it too; a worker may start first)."""
        WebhookDeliveries(self.engine).create_schema()

    def notify(self, signal: CISignal) -> None:
        repo, sha = signal.repository.lower(), signal.sha.lower()
        for _ in range(3):
            with self._sessions.begin() as s:
                bumped = s.execute(
                    update(CIEventRow)
                    .where(CIEventRow.repository == repo, CIEventRow.sha == sha)
                    .values(count=CIEventRow.count + 1, updated_at=_now())
                )
                if bumped.rowcount == 1:  # type: ignore[attr-defined]
                    return
                try:
                    with s.begin_nested():
                        s.execute(insert(CIEventRow).values(repository=repo, sha=sha, count=1, updated_at=_now()))
                    return
                except IntegrityError:
                    continue  # another notifier inserted it first: bump again

    def generation(self, repository: str, sha: str) -> int:
        with self._sessions() as s:
            count = s.scalar(
                select(CIEventRow.count).where(
                    CIEventRow.repository == repository.lower(), CIEventRow.sha == sha.lower()
                )
            )
        return int(count or 0)

    def wait(self, repository: str, sha: str, *, after: int, timeout_s: float) -> int:
        deadline = self._clock() + max(0.0, timeout_s)
        while True:
            current = self.generation(repository, sha)
            remaining = deadline - self._clock()
            if current > after or remaining <= 0:
                return current
            self._sleep(min(self._interval_s, remaining))
