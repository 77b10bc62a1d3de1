"""A prompt that carries a credential never sits in Prefect or in the store's tables in clear text.

Prefect holds what it is given as flow-run parameters and event payloads (its API, its UI, its database): the
runs promptship starts get the sealed form (prompt redacted, ``sealed`` naming the request kept encrypted in
promptship's store); a run started with the prompt itself (the UI form) replaces its own parameter with the
sealed form as it opens. The agent still works on the real prompt.
"""

from __future__ import annotations

import secrets
import string
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client

from flows.dev_cycle import dev_cycle
from promptship.domain.request import DevRequest
from promptship.errors import ConfigError
from promptship.store import Store, make_engine
from promptship.store.sealing import PromptCipher, prompt_cipher

pytestmark = pytest.mark.flow


def github_token() -> str:
    """A token in GitHub's classic format, made up now (nothing secret is committed, nothing reused)."""
    alphabet = string.ascii_letters + string.digits
    return "ghp_" + "".join(secrets.choice(alphabet) for _ in range(36))


def _request(token: str, **kw: Any) -> DevRequest:
    return DevRequest(
        prompt=f"Configure the deploy job to use the token {token} and add GET /version ({uuid.uuid4().hex[:8]})",
        **kw,
    )


def _store_bytes(services: Any) -> bytes:
    database = Path(services.sink.engine.url.database)
    return b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*") if p.is_file())


def test_a_run_started_with_a_secret_in_its_prompt_keeps_it_out_of_prefect_and_the_store(make_services) -> None:
    services = make_services()
    token = github_token()
    request = _request(token, auto_merge=True)

    report = dev_cycle(request)

    assert report.outcome == "deployed"
    with get_client(sync_client=True) as client:
        parameters = client.read_flow_run(uuid.UUID(report.flow_run_id)).parameters
    held = DevRequest.model_validate(parameters["request"])
    assert token not in str(parameters) and held.sealed and "[REDACTED" in held.prompt
    assert held.run_key == request.run_key  # the sealed form still names its request
    assert token.encode() not in _store_bytes(services)  # the store keeps it encrypted only
    assert token not in report.prompt_redacted
    # the agent worked on the real prompt
    assert any(token in str(c) for c in services.agent.conversations.values())
    # and what Prefect holds is enough to run again: the request comes back from the store
    again = dev_cycle(held)
    assert (again.outcome, again.run_key) == ("already_done", request.run_key)
    assert services.code_host.pr_creations == 1


def test_a_sealed_request_this_store_does_not_have_fails_clearly_and_does_nothing(make_services) -> None:
    services = make_services()
    other = Store(make_engine("sqlite://"), cipher=PromptCipher(PromptCipher.new_key()))
    other.create_schema()
    foreign = other.seal(_request(github_token()))

    with pytest.raises(Exception, match="is not in this store"):
        dev_cycle(foreign)
    assert services.code_host.pr_creations == 0
    assert services.sink.attempts(foreign.run_key) == []


def test_a_sealed_prompt_opens_only_with_its_key_and_a_shared_store_needs_one(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = Store(make_engine(url), cipher=prompt_cipher(url, None))
    store.create_schema()
    request = _request(github_token())
    sealed = store.seal(request)
    assert store.unseal(sealed) == request
    assert (tmp_path / "store.db.key").stat().st_mode & 0o077 == 0  # the key file is the owner's only
    assert prompt_cipher(url, None).open(_token_of(store, sealed)) == request  # the same key file next time

    stranger = Store(store.engine, cipher=PromptCipher(PromptCipher.new_key()))
    with pytest.raises(ConfigError, match="another"):
        stranger.unseal(sealed)
    with pytest.raises(ConfigError, match="PROMPTSHIP_STORE_KEY"):
        prompt_cipher("postgresql+psycopg://promptship@127.0.0.1:5432/promptship", None)
    with pytest.raises(ConfigError, match="Fernet"):
        PromptCipher("not-a-key")


def _token_of(store: Store, sealed: DevRequest) -> str:
    from promptship.store.tables import SealedRequestRow

    with store.session() as s:
        row = s.get(SealedRequestRow, sealed.sealed)
    assert row is not None
    return row.token


def test_requests_kept_in_clear_by_an_older_store_are_sealed_when_it_is_opened_with_its_key(tmp_path: Path) -> None:
    from promptship.store.tables import RequestRow

    url = f"sqlite:///{tmp_path / 'store.db'}"
    old = Store(make_engine(url))
    old.create_schema()
    token = github_token()
    request = _request(token, issue_number=7)
    with old.session() as s, s.begin():  # what a store before migration 0006 wrote
        s.add(
            RequestRow(
                run_key=request.run_key,
                repository=request.repository,
                issue_number=7,
                source_pr=None,
                request=request.model_dump(mode="json"),
                updated_at=request_time(),
            )
        )

    opened = Store(make_engine(url), cipher=prompt_cipher(url, None))
    opened.create_schema()

    found = opened.request_of(request.repository, 7)
    assert found is not None
    key, kept = found
    assert key == request.run_key and kept.sealed and token not in kept.prompt
    assert opened.unseal(kept) == request
    with opened.session() as s:
        (row,) = s.query(RequestRow).all()
    assert token not in str(row.request)


def request_time() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _prefect_database() -> Path:
    from prefect.settings import get_current_settings

    url = get_current_settings().server.database.connection_url
    assert url is not None
    return Path(url.get_secret_value().split(":///", 1)[1])


def _copies(path: Path, value: bytes) -> int:
    return path.read_bytes().count(value) if path.exists() else 0


def test_a_run_started_with_the_prompt_itself_leaves_no_copy_in_prefects_sqlite_files(make_services) -> None:
    """What the UI form does: Prefect stores the prompt before the run opens; once the run has replaced its
    parameter with the sealed form, no copy of the planted token is left in ``prefect.db``, its ``-wal`` or its
    ``-shm`` — raw bytes, free pages and old WAL frames included — while the server still runs."""
    make_services()
    token = github_token()

    report = dev_cycle(_request(token, auto_merge=True))

    assert report.outcome == "deployed"
    database = _prefect_database()
    assert database.exists()
    files = [database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")]
    copies = {p.name: _copies(p, token.encode()) for p in files}
    assert copies == {p.name: 0 for p in files}
