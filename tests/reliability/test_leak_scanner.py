"""The leak scanner finds a planted value in each kind of place it claims to scan (so a clean scan means
something), and the sandbox's own credentials are shaped so that the gate's rules recognise them."""

from __future__ import annotations

import base64
import secrets
import sqlite3
import subprocess
import urllib.parse
from pathlib import Path

import pytest
from sqlalchemy import text

from promptship.adapters.llm import new_key
from promptship.domain.gate import is_not_a_secret, scan_rules
from promptship.store import make_engine
from promptship_sandbox import credentials
from promptship_sandbox.reliability.leaks import ALLOWLIST, Allowed, forms, scan_leaks


def canary() -> str:
    return "canary-" + secrets.token_hex(16)


def test_a_value_in_a_log_file_is_a_leak_with_its_offset(tmp_path: Path) -> None:
    value = canary()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "worker.log").write_text("x" * 100 + f"token={value}\n")
    (tmp_path / "clean.log").write_text("nothing here\n")

    report = scan_leaks([tmp_path], {"token": value}, ())

    assert [(h.canary, h.form, h.place, h.offset) for h in report.leaks] == [
        ("token", "raw", f"{tmp_path.name}/logs/worker.log", 106)
    ]
    assert report.files == 2 and "leaks 1" in report.lines()[-1]


def test_a_value_across_the_boundary_of_two_read_pieces_is_found_once(tmp_path: Path, monkeypatch) -> None:
    from promptship_sandbox.reliability import leaks

    monkeypatch.setattr(leaks, "_CHUNK", 64)
    value = canary()
    (tmp_path / "big.log").write_bytes(b"y" * 50 + value.encode() + b"z" * 200 + value.encode())
    report = scan_leaks([tmp_path], {"token": value}, ())
    assert [h.offset for h in report.leaks] == [50, 50 + len(value) + 200]


def test_a_deleted_row_on_a_sqlite_free_page_is_found_and_secure_delete_erases_it(tmp_path: Path) -> None:
    value = canary()
    plain = tmp_path / "plain" / "prefect.db"
    plain.parent.mkdir()
    with sqlite3.connect(plain) as conn:
        conn.execute("CREATE TABLE t (v TEXT)")
        conn.executemany("INSERT INTO t VALUES (?)", [(value + "-" + "p" * 2000,)] + [("filler",)] * 10)
    with sqlite3.connect(plain) as conn:
        conn.execute("PRAGMA secure_delete=OFF")  # SQLite's default (some builds, e.g. Debian's, turn it on)
        conn.execute("DELETE FROM t WHERE v LIKE 'canary-%'")
    with sqlite3.connect(plain) as conn:
        assert conn.execute("SELECT count(*) FROM t WHERE v LIKE 'canary-%'").fetchone() == (0,)

    report = scan_leaks([plain.parent], {"prompt": value}, ())
    assert report.leaks and report.leaks[0].place == "plain/prefect.db" and "SQLite page" in report.leaks[0].note

    # the promptship store's engine deletes for real (PRAGMA secure_delete=ON), WAL included
    store = tmp_path / "store" / "promptship.db"
    engine = make_engine(f"sqlite:///{store}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v TEXT)"))
        conn.execute(text("INSERT INTO t VALUES (:v)"), {"v": value + "-" + "p" * 2000})
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM t"))
    with engine.begin() as conn:
        conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA secure_delete")).scalar() == 1
    engine.dispose()
    assert scan_leaks([store.parent], {"prompt": value}, ()).leaks == ()


def test_a_value_in_a_git_blob_is_found_in_loose_and_packed_objects(tmp_path: Path) -> None:
    value = canary()
    repo = tmp_path / "repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "config.env").write_text(f"DEPLOY_TOKEN={value}\n")
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "seed"], check=True)
    # the blob is zlib-compressed on disk: only decompressed objects show it
    loose = scan_leaks([tmp_path], {"repo": value}, ())
    places = sorted(h.place for h in loose.leaks)
    assert (
        len(places) == 2
        and places[0].startswith(f"git:{tmp_path.name}/repo/")
        and places[1] == f"{tmp_path.name}/repo/config.env"
    )
    subprocess.run([*git, "gc", "-q", "--aggressive"], check=True)
    (repo / "config.env").write_text("gone\n")
    subprocess.run([*git, "commit", "-qam", "remove it"], check=True)
    packed = scan_leaks([tmp_path], {"repo": value}, ())
    assert (
        len(packed.leaks) == 1
        and packed.leaks[0].place.startswith(f"git:{tmp_path.name}/repo/")
        and packed.git_objects >= 5
    )


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b'{"k": "'])
def test_a_base64_or_url_encoded_value_inside_a_larger_blob_is_found(tmp_path: Path, prefix: bytes) -> None:
    value = canary() + "/+=&"
    blob = prefix + value.encode() + b'", "more": 1}'
    (tmp_path / "result.json").write_bytes(b"data: " + base64.b64encode(blob) + b"\n")
    (tmp_path / "url.log").write_text("GET /?q=" + urllib.parse.quote(value, safe="") + "\n")
    report = scan_leaks([tmp_path], {"token": value}, ())
    by_place = {h.place: h.form for h in report.leaks}
    assert (
        by_place[f"{tmp_path.name}/result.json"].startswith("base64@") and by_place[f"{tmp_path.name}/url.log"] == "url"
    )


def test_api_objects_and_the_allowlist(tmp_path: Path) -> None:
    value = canary()
    (tmp_path / "promptship.db.key").write_text(value)
    report = scan_leaks(
        [tmp_path],
        {"store_key": value},
        ALLOWLIST,
        objects={"prefect:flow_run/1": f'{{"parameters": {{"k": "{value}"}}}}', "prefect:log/2": "clean"},
    )
    assert [h.place for h in report.allowed] == [f"{tmp_path.name}/promptship.db.key"]
    assert [h.place for h in report.leaks] == ["prefect:flow_run/1"]
    printed = "\n".join(report.lines())
    assert "*.key" in printed and "LEAK: store_key [raw] in prefect:flow_run/1" in printed
    assert report.api_objects == 2


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty"):
        scan_leaks([tmp_path], {"x": ""}, ())
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_leaks([tmp_path / "nope"], {"x": canary()}, ())


def test_every_base64_form_is_long_enough_to_mean_something() -> None:
    assert all(len(v) >= 16 for v in forms(canary()).values())
    assert Allowed(("a",), "*.key", "why").covers("a", "x/promptship.db.key")


@pytest.mark.parametrize(
    ("make", "subtype"),
    [
        (lambda: credentials.github_token("ghp_"), "github_token"),
        (lambda: credentials.github_token("ghs_"), "github_token"),
        (credentials.openrouter_key, "openrouter_key"),
        (credentials.session_key, "promptship_key"),
        (lambda: new_key("psk-run-"), "promptship_key"),
        (lambda: new_key("psk-app-"), "promptship_key"),
    ],
)
def test_the_sandboxs_credentials_are_recognised_by_the_gates_rules(make, subtype: str) -> None:
    for _ in range(50):  # made up each time: every draw must match, not a lucky one
        value = make()
        found = [f for f in scan_rules(f"the key is {value} ok") if f.kind == "secret"]
        assert any(f.subtype == subtype and f.end - f.start == len(value) for f in found), value


def test_the_webhook_secret_and_store_key_look_like_secrets() -> None:
    from cryptography.fernet import Fernet

    Fernet(credentials.store_key().encode())  # a valid Fernet key
    secret = credentials.webhook_secret()
    assert secret.startswith("whsec_") and len(secret) == 70
    assert any(f.kind == "secret" for f in scan_rules(f"webhook_secret = {secret}"))


def test_a_random_key_that_spells_a_placeholder_word_is_drawn_again(monkeypatch) -> None:
    """The gate reads a token whose random part spells ``fake`` as a placeholder (its documentation-marker test
    is unanchored; since session 6 a one-word marker counts only in one case, ``fake``/``FAKE``/``Fake``, so a
    mixed-case ``fAKE`` no longer does), so such a draw would leak unseen: promptship's minting redraws it."""
    unlucky = "psk-run-yqz8xQod03XLkdRkNTpXIIbcyfakeq81aqwWobOJlls"  # a draw of token_urlsafe(32), one case changed
    assert is_not_a_secret(unlucky)
    draws = iter([unlucky.removeprefix("psk-run-"), "Xb7kQ2mZp9LrT4vN8wYc1HsD6jFg3Ua5Ee0Ri2Ko7Wq"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda _n: next(draws))
    assert new_key("psk-run-") == "psk-run-" + "Xb7kQ2mZp9LrT4vN8wYc1HsD6jFg3Ua5Ee0Ri2Ko7Wq"


def test_part_3bs_llm_stand_in_log_is_scanned_by_the_campaign_and_a_planted_value_there_is_a_leak(
    tmp_path: Path,
) -> None:
    """Part 3b's real parts stop before the campaign scans; what they kept only in memory (the LLM stand-in's
    request log) comes to the scan through ``Parts.objects``: a secret in a cloud request's body is a leak, the
    OpenRouter key in a cloud request's ``Authorization`` header is where it is meant to go (allowed)."""
    from contextlib import ExitStack

    from starlette.testclient import TestClient

    from promptship_sandbox.llm_server import LLMStandIn
    from promptship_sandbox.reliability.campaign import CAMPAIGN_ALLOWLIST
    from promptship_sandbox.reliability.wholeruns import Parts

    planted = {"prompt_secret": credentials.github_token("ghp_"), "openrouter_key": credentials.openrouter_key()}
    stand_in = LLMStandIn()
    with TestClient(stand_in.app) as http:  # in-process ASGI calls: the stand-in's own request log, no server
        answer = http.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {planted['openrouter_key']}"},
            json={"model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": planted["prompt_secret"]}]},
        )
        assert answer.status_code == 200
    with ExitStack() as stack:
        parts = Parts(stack, tmp_path / "whole-parts", tmp_path, set())  # no real part started
        parts.llm = stand_in
        objects = parts.objects()

    report = scan_leaks({"work": tmp_path}, planted, ALLOWLIST + CAMPAIGN_ALLOWLIST, objects=objects)

    assert [(h.canary, h.place) for h in report.leaks] == [
        ("prompt_secret", "llm-stand-in:cloud0.body /v1/chat/completions")
    ]
    assert [(h.canary, h.place) for h in report.allowed] == [("openrouter_key", "llm-stand-in:cloud0.headers")]
