"""The real scanner (rules + detect-secrets + presidio) over the labelled eval set and whole chat requests,
and the ``classify``/``route`` commands. Floors sit a little below what the benchmark measures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from promptship.adapters.detectors import SensitiveDataScanner, redact_with
from promptship.bench.gate import ISSUE_PLACEHOLDER
from tests.conftest import SHARED, require

EVAL = SHARED / "eval"
GH = "ghp_" + "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz9Xc8"


@pytest.fixture(scope="module")
def gate_rows() -> list[dict]:
    require("shared eval data", (EVAL / "secrets.jsonl").exists(), str(EVAL))
    from promptship.bench.gate import load_gate_eval

    return load_gate_eval(EVAL)


@pytest.fixture(scope="module")
def flagged(scanner: SensitiveDataScanner, gate_rows: list[dict]) -> dict[str, list[bool]]:
    """Flags per group; the sources' secret rows whose value is an obvious placeholder by the issue's own
    definition (an EXAMPLE key, a run of x/z/0 fillers, ``<your-token>``) are a group of their own, since the
    gate deliberately leaves them alone."""
    out: dict[str, list[bool]] = {}
    for row in gate_rows:
        group = row["group"]
        if group == "secret" and ISSUE_PLACEHOLDER.search(row["text"]):
            group = "secret_placeholder"
        out.setdefault(group, []).append(scanner.scan(row["text"]).sensitive)
        if row["group"] == "pii" and row["subtype"] != "other-pii":
            out.setdefault("structured", []).append(out["pii"][-1])
    return out


def _rate(values: list[bool]) -> float:
    return sum(values) / len(values)


@pytest.mark.parametrize(("group", "floor"), [("secret", 0.98), ("structured", 0.95)])
def test_recall_on_eval(flagged, group, floor):
    assert _rate(flagged[group]) >= floor


@pytest.mark.parametrize(("group", "ceiling"), [("benign", 0.02), ("pii-negative", 0.02)])
def test_false_positives_on_eval(flagged, group, ceiling):
    assert _rate(flagged[group]) <= ceiling


# Held-out hard negatives ("this rule must not fire" cases of the sources' own tests) the gate may flag: measured
# 37/153 = 0.242 in session 6 (38/153 before; python -m promptship.bench gate); a router that over-flags keeps work
# local, so the bound leaves two rows of room (39/153) but must not let the rate creep back towards 0.36.
HELD_OUT_HARD_NEGATIVE_CEILING = 0.26


def test_hard_negatives_flagged_on_the_held_out_split(scanner, gate_rows):
    from promptship.bench.gate import held_out_ids

    held = held_out_ids()
    rows = [r for r in gate_rows if r["group"] == "hard-negative" and r["id"] in held]
    assert len(rows) >= 150  # the split file names them; a missing eval file must not make this pass
    flagged = sum(scanner.scan(r["text"]).sensitive for r in rows)
    assert flagged / len(rows) <= HELD_OUT_HARD_NEGATIVE_CEILING, f"{flagged}/{len(rows)}"


# Other scanners' fixtures (tests/data/secret_fixtures/): Nosey Parker's rule examples measured 373/430 = 0.867
# (its weak families were fitted after their scores were seen), the fresh whispers/ripsecrets set 180/240 = 0.750
# with 47/294 = 0.160 of its negatives flagged (python -m promptship.bench gate). Floors a little below.
@pytest.mark.parametrize(("name", "floor", "ceiling"), [("noseyparker.jsonl", 0.85, None), ("fresh.jsonl", 0.73, 0.18)])
def test_other_scanners_fixtures(scanner, name, floor, ceiling):
    from promptship.bench.gate import FIXTURES, load_jsonl

    rows = load_jsonl(FIXTURES.parent / name)
    positives = [r for r in rows if r["label"] == 1]
    negatives = [r for r in rows if r["label"] == 0]
    assert len(positives) >= 200  # the files are in the repository: a truncated one must not make this pass
    found = sum(scanner.scan(r["text"]).sensitive for r in positives)
    assert found / len(positives) >= floor, f"{found}/{len(positives)}"
    if ceiling is not None:
        assert len(negatives) >= 250
        flagged = sum(scanner.scan(r["text"]).sensitive for r in negatives)
        assert flagged / len(negatives) <= ceiling, f"{flagged}/{len(negatives)}"


_TELEGRAM_LIKE = "5512093387:WjwgRRHuAqpZVYSz6jhd4uiVh75aradJIHJ"  # bot id, ':', 35 characters (made up here)


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (f'bot = "{_TELEGRAM_LIKE}"', True),
        (f'bot = "{_TELEGRAM_LIKE}Qx81pL"', False),  # the fixed-length format read inside a longer run
    ],
)
def test_detect_secrets_formats_are_not_read_inside_longer_runs(scanner, text, found):
    assert bool(scanner.scan_layer("detect_secrets", text)) is found


@pytest.mark.parametrize(
    ("text", "entity", "found"),
    [
        ("employee SSN 536-22-8714", "us_ssn", True),
        ("employee SSN 912-34-5678", "us_ssn", False),  # area 900-999: never issued by the SSA
        ("aadhaar 2210 2014 5685", "in_aadhaar", True),
        ("IBAN EE71 B300 2210 2014 5685 is wrong", "in_aadhaar", False),  # digits inside an IBAN-shaped run
    ],
)
def test_presidio_numbers_that_are_no_ones(scanner, text, entity, found):
    assert (entity in {f.subtype for f in scanner.scan_layer("presidio", text)}) is found


def test_an_arn_account_id_is_no_ones_number(scanner):
    # AWS docs: account ids "are not considered secret, sensitive, or confidential information"
    number = "840512345678"
    assert scanner.scan_layer("presidio", f"licence number {number} on file")  # the digits alone are read
    assert not scanner.scan(f"subscribe arn:aws:sqs:eu-west-3:{number}:orders-dlq").sensitive


def test_an_empty_private_key_block_passes_every_layer(scanner):
    empty = "-----BEGIN OPENSSH PRIVATE KEY-----\n-----END OPENSSH PRIVATE KEY-----"
    assert not scanner.scan(empty).sensitive
    assert scanner.scan(empty.replace("\n", "\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAAB\n")).sensitive


def test_hand_written_developer_prompts_are_not_flagged(scanner):
    rows = []
    for name in ("task_class_tests_docs.jsonl", "task_class_holdout.jsonl", "task_class_holdout2.jsonl"):
        path = Path(__file__).resolve().parent.parent / "data" / name
        rows += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    flagged = [r["text"] for r in rows if scanner.scan(r["text"]).sensitive]
    assert len(flagged) <= 0.02 * len(rows), flagged


# What the code agent's tool results look like: repository files and command output. None of it is secret;
# flagging it would pin every agent run to local models.
DEVELOPER_CONTENT = {
    "package-lock": '"node_modules/vite": {"version": "7.0.1", "integrity": '
    '"sha512-BfV0sVjbOBHx2vdGCbRbFyqiDvHcs2C+uQEpbe3BBfK1FbnRZAKQGqjUFzJBt5Fg0GmSOYTN5JzNZtE3M+qxJg=="}',
    "requirements.lock": "httpx==0.28.1 \\\n"
    "    --hash=sha256:d909fcccc110f8c7faf814ca82a9a4d816bc5a6dbfea25d6591d6985b8ba59ad",
    "go.sum": "github.com/stretchr/testify v1.8.4 h1:CcVxjf3Q8PM0mHUKJCdn+eZZtm5yQwehR5yeSVQQcUk=",
    "settings.py": "class Settings(BaseSettings):\n"
    "    db_password: SecretStr = Field(description='Postgres password')\n"
    "    api_token: str | None = None\n\ntoken = settings.api_token.get_secret_value()\n"
    "password = os.environ['DB_PASSWORD']",
    "k8s secretKeyRef": "env:\n  - name: OPENROUTER_API_KEY\n    valueFrom:\n      secretKeyRef:\n"
    "        name: llm-secrets\n        key: openrouter-api-key",
    "git log": "commit 9fceb02d0ae598e95dc970b74767f19372d61af8\nAuthor: Dev <dev@users.noreply.github.com>\n"
    "Date:   Mon Nov 2 10:00:00 2026 +0000\n\n    fix: retry on 503",
    "test with fake token": 'FAKE_TOKEN = "test-token"\nheaders = {"X-Session-API-Key": SESSION_KEY}',
    "pytest": 'r = client.get("/chat", headers={"Authorization": "Bearer invalid"})\nassert r.status_code == 401',
    "docs email": "Contact us at support@example.com for help.",
    "log line": "2026-11-22T10:00:00Z INFO request_id=3fa85f64-5717-4562-b3fc-2c963f66afa6 status=200",
    "digest": "Expected digest: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "secret manifest": "kind: Secret\nstringData:\n  DB_PASSWORD: ${DB_PASSWORD}",
    "agent tool call": '{"command": "create", "path": "/tmp/pytest-of-root/pytest-179/test_probe0/checkout/app/v.py"}'
    "\nFile created successfully at: /tmp/pytest-of-root/pytest-179/test_probe0/checkout/app/v.py (api key rotation)",
    "config": "llm:\n  default_model: mistral\n  timeout_s: 30\n  password_min_length: 12\n  token_ttl_seconds: 3600",
}


@pytest.mark.parametrize("name", sorted(DEVELOPER_CONTENT))
def test_ordinary_repository_content_is_not_flagged(scanner, name):
    text = DEVELOPER_CONTENT[name]
    result = scanner.scan(text)
    assert not result.sensitive, [(f.detector, f.subtype, text[f.start : f.end]) for f in result.findings]


def test_a_recorded_openhands_run_is_not_flagged(scanner):
    """The agent-server's events (system prompt, tool calls, observations, state updates with UUIDs and
    timestamps) carry nothing sensitive: the gate must not pin every agent call to local models."""
    path = SHARED / "specs" / "openhands" / "agent-server-run-recorded.json"
    require("recorded OpenHands run", path.exists(), str(path))

    def strings(node: object) -> list[str]:
        if isinstance(node, dict):
            return [s for v in node.values() for s in strings(v)]
        if isinstance(node, list):
            return [s for v in node for s in strings(v)]
        return [node] if isinstance(node, str) else []

    texts = strings(json.loads(path.read_text(encoding="utf-8")))
    assert len(texts) > 50
    flagged = {t[:80]: scanner.scan(t).labels for t in texts if scanner.scan(t).sensitive}
    assert not flagged


def test_agent_identity_lines_are_not_personal_data(scanner):
    text = "Add Co-authored-by: openhands <openhands@all-hands.dev> to commits; use git as openhands@all-hands.dev"
    assert not scanner.scan(text).sensitive


@pytest.mark.parametrize(
    ("where", "messages", "tools"),
    [
        (
            "system prompt",
            [{"role": "system", "content": f"Use {GH} for git."}, {"role": "user", "content": "hi"}],
            None,
        ),
        (
            "tool-call arguments",
            [
                {"role": "user", "content": "push it"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "1",
                            "type": "function",
                            "function": {
                                "name": "terminal",
                                "arguments": json.dumps({"command": f"git push https://x:{GH}@github.com/o/r"}),
                            },
                        }
                    ],
                },
            ],
            None,
        ),
        (
            "tool result",
            [
                {"role": "user", "content": "show me the env"},
                {"role": "tool", "tool_call_id": "1", "content": "HOME=/root\nDB_PASSWORD=Zq8!vL2@pR5#wT9\n"},
            ],
            None,
        ),
        (
            "content parts",
            [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "mail jane.roe@proton.me the card 4111 1111 1111 1111"}],
                }
            ],
            None,
        ),
        (
            "tool description",
            [{"role": "user", "content": "hello"}],
            [{"type": "function", "function": {"name": "lookup", "description": "Internal only - ne pas diffuser"}}],
        ),
    ],
)
def test_scan_messages_finds_sensitive_data_anywhere_in_a_request(scanner, where, messages, tools):
    assert scanner.scan_messages(messages, tools).sensitive, where


def test_scan_messages_passes_an_ordinary_request(scanner):
    messages = [
        {"role": "system", "content": "You are a careful Python engineer."},
        {"role": "user", "content": "Add a /health endpoint to the FastAPI app and a test for it."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "1",
                    "type": "function",
                    "function": {"name": "file_editor", "arguments": '{"path": "app/main.py"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "1", "content": "from fastapi import FastAPI\napp = FastAPI()\n"},
    ]
    tools = [{"type": "function", "function": {"name": "file_editor", "description": "View and edit files"}}]
    assert not scanner.scan_messages(messages, tools).sensitive


def test_redact_with_hides_what_the_scanner_finds(scanner):
    text = f"token {GH}, write to jane.roe@proton.me, IdNr. 98765432106"
    out = redact_with(scanner, text)
    for secret in (GH, "jane.roe@proton.me"):
        assert secret not in out
    assert out.startswith("token [REDACTED]")


def test_repeated_texts_are_answered_from_the_digest_cache(scanner):
    secret_text = f"deploy with {GH}"
    first = scanner.scan(secret_text)
    assert scanner.scan(secret_text) is first and first.sensitive
    assert not scanner.scan(secret_text.replace(GH, "the token from the vault")).sensitive


def test_scanners_closed_out_of_order_keep_detect_secrets_working():
    line = 'password = "Zq8!vL2@pR5#wT9x"'
    first = SensitiveDataScanner(layers=("rules", "detect_secrets"))
    second = SensitiveDataScanner(layers=("rules", "detect_secrets"))
    first.close()  # detect-secrets' settings are process-global: this must not strip the second's plugins
    try:
        assert second.scan_layer("detect_secrets", line)
    finally:
        second.close()


def test_presidio_engine_mode_agrees_on_national_ids():
    scanner = SensitiveDataScanner(layers=("presidio",), presidio_mode="engine")
    try:
        assert scanner.scan("My finnish id code is 010594Y9032.").sensitive
        assert not scanner.scan("Write a haiku about autumn.").sensitive
    finally:
        scanner.close()


# Texts where the speed-ups of the scanner's layers could differ from the plain per-line / full-length way:
# long blank runs between ID candidates, a credential word on one line and its value on the next, token runs.
_SPEED_CASES = [
    "x\n" * 300 + "ssn 078-05-1120 " + "a" * 3000 + " card 4111 1111 1111 1111\npassword\n= 'hunter2x9'\n",
    "api_key\n\n: abc\nBEGIN RSA\n" + "ordinary prose line\n" * 50 + "id AKCp8" + "x1" * 10 + "\n",
    "first 12345 " + " ".join(["word"] * 2000) + " 010594Y9032 end\nFR76 3000 6000 0112 3456 7890 189",
    "",
    "Straße İstanbul passwort=Geheim99! 4111111111111111",
]


def test_layer_speed_ups_find_what_the_plain_way_finds(scanner, gate_rows):
    """The detect-secrets line hint by whole-text search, and presidio on the shortened candidate text, give the
    same lines and the same findings as the per-line hint and the full-length blanked text."""
    from promptship.adapters import detectors as d

    texts = _SPEED_CASES + [row["text"] for row in gate_rows[::7]]
    for text in texts:
        lines = text.split("\n")
        starts = [0]
        for line in lines[:-1]:
            starts.append(starts[-1] + len(line) + 1)
        assert d._ds_hint_lines(text, starts) == {i for i, line in enumerate(lines) if d._ds_hint(line)}, text
        masked = d._id_candidates_only(text)
        plain = sorted(
            (r.entity_type, r.start, r.end, r.score)
            for recognizer, entities, _ in scanner._recognizers
            for r in (recognizer.analyze(masked, entities, None) if masked is not None else [])
        )
        compact = d._id_candidates_compact(text)
        fast = sorted(
            (r.entity_type, compact[1](r.start), compact[1](r.end), r.score)
            for recognizer, entities, _ in scanner._recognizers
            for r in (recognizer.analyze(compact[0], entities, None) if compact is not None else [])
        )
        assert fast == plain, text


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "promptship.cli", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_classify_command_writes_one_json_line_per_input(tmp_path):
    src = tmp_path / "in.jsonl"
    rows = [
        {"id": "t", "text": "Write pytest tests for the chat endpoint"},
        {"id": "d", "text": "Update the README with the setup steps"},
        {"id": "s", "text": f"Deploy with {GH}"},
        {"id": "c", "text": "Implement a retry decorator in Python"},
    ]
    src.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    proc = _cli("classify", "--jsonl", str(src))
    assert proc.returncode == 0, proc.stderr
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["id"] for o in out] == ["t", "d", "s", "c"]
    assert all(set(o) == {"id", "sensitive", "task_class", "mode", "model", "reasons"} for o in out)
    got = {o["id"]: (o["task_class"], o["mode"], o["model"], o["sensitive"]) for o in out}
    assert got["t"] == ("tests", "local", "mistral", False)
    assert got["d"] == ("docs", "cloud", "claude-3.5-sonnet", False)
    assert got["s"] == ("sensitive", "local", "llama3", True)
    assert got["c"] == ("complex_code", "cloud", "gpt-4o", False)
    assert GH not in proc.stdout  # reasons name kinds, never the data


def test_classify_rejects_a_line_without_text(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"id": 1, "prompt": "x"}\n', encoding="utf-8")
    proc = _cli("classify", "--jsonl", str(src), "--rules-only")
    assert proc.returncode == 2 and "text" in proc.stderr


def test_route_command_explains_and_redacts():
    proc = _cli("route", f"Refactor the deploy script; it uses {GH}")
    assert proc.returncode == 0, proc.stderr
    assert "mode:      local" in proc.stdout and "secret:github_token" in proc.stdout
    assert GH not in proc.stdout
    proc = _cli("route", "Update the README", "--json")
    decision = json.loads(proc.stdout)
    assert (decision["task_class"], decision["mode"], decision["litellm_model"]) == (
        "docs",
        "cloud",
        "openrouter/anthropic/claude-3.5-sonnet",
    )


@pytest.mark.parametrize(
    "prompt",
    [
        "Refactor the login module; the staging login is admin / password hunter2",
        "Refactorise le module de connexion ; le mot de passe de recette est hunter2",
    ],
)
def test_route_keeps_a_plain_language_password_local_and_never_shows_it(prompt):
    proc = _cli("route", prompt, "--task-class", "complex_code")
    assert proc.returncode == 0, proc.stderr
    assert "mode:      local" in proc.stdout and "secret:plain_credential" in proc.stdout
    assert "hunter2" not in proc.stdout


def test_values_the_catalogue_publishes_as_public_are_not_secrets(scanner):
    """Kingfisher's rules carry Betterleaks' allowlists (Google's own SDK sample API keys, say): another layer's
    finding of exactly such a value is dropped; a key of the same shape that no one published still counts. The
    listed value is read from the installed catalogue, never written here."""
    from promptship.adapters.detectors import _kingfisher_allowlist

    published = sorted(v for v in _kingfisher_allowlist() if v.startswith("AIza"))
    assert published, "the catalogue's GCP rule lists no known keys any more"
    assert not scanner.scan(f'"apiKey": "{published[0]}"').sensitive
    assert scanner.scan('"apiKey": "AIzaSyQ4vN7xR2mK9pL3wT8bZ5cF1hJ6dG0sE4y"').sensitive
