"""The sensitive-data gate's pure parts: what leaves the machine, and promptship's own rules (tables)."""

from __future__ import annotations

import json

import pytest

from promptship.domain.gate import GateResult, gate_rules, iban_ok, luhn_ok, outbound_texts, scan_rules
from promptship.domain.redaction import REDACTED, redact

GH = "ghp_" + "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz9Xc8"


def _subtypes(text: str) -> set[str]:
    return {f.subtype for f in scan_rules(text)}


def test_outbound_texts_covers_every_part_of_a_chat_request():
    messages = [
        {"role": "system", "content": "SYSTEM-PROMPT"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "USER-PART"}, {"type": "image_url", "image_url": {"url": "IMG-URL"}}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "run_sql", "arguments": '{"q": "TOOL-ARGS"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "TOOL-RESULT"},
        {
            "role": "assistant",
            "content": "ASSISTANT-TEXT",
            "function_call": {"name": "legacy", "arguments": "LEGACY-ARGS"},
        },
    ]
    tools = [
        {
            "type": "function",
            "function": {
                "name": "run_sql",
                "description": "TOOL-DESCRIPTION",
                "parameters": {"type": "object", "description": "SCHEMA-TEXT"},
            },
        }
    ]
    joined = "\n".join(outbound_texts(messages, tools))
    for part in (
        "SYSTEM-PROMPT",
        "USER-PART",
        "IMG-URL",
        "TOOL-ARGS",
        "run_sql",
        "TOOL-RESULT",
        "ASSISTANT-TEXT",
        "LEGACY-ARGS",
        "TOOL-DESCRIPTION",
        "SCHEMA-TEXT",
    ):
        assert part in joined, part


def test_outbound_texts_accepts_arguments_given_as_objects():
    messages = [
        {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"password": "hunter22!"}}}]}
    ]
    assert any("hunter22!" in t for t in outbound_texts(messages))


@pytest.mark.parametrize(
    ("text", "subtype"),
    [
        (f"export GITHUB_TOKEN={GH}", "github_token"),
        ("key: AKIAIOSFODNN7EXAMPLF", "aws_key"),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----",
            "private_key",
        ),
        ("OPENROUTER_API_KEY=sk-or-v1-" + "ab12" * 16, "openrouter_key"),
        (
            "client = Anthropic(api_key='sk-ant-api03-"
            + "Rk7mQ2xVt9LpZ4nW8bHs3JcY6dFg1TqK5uNe0aPw" * 2
            + "Hn4vC8mZ2q"
            + "')",
            "anthropic_key",
        ),
        ("slack: xoxb-493817260554-8831046279913-Qm7RtZp2KwLx9VbN4sHj8cYd", "slack_token"),
        ("stripe.api_key = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc'", "stripe_key"),
        ('db_password = "Tr0ub4dor&3-horse"', "assigned_credential"),
        ("password: 'correct horse battery staple'", "assigned_credential"),
        ('if ("s3cr3t-Value!" === password) {', "compared_credential"),
        ("postgres://admin:Sup3rS3cret@db.internal:5432/app", "url_credentials"),
        ("curl -u deploy:Pa55w0rd!x https://ci.example.org/api", "basic_auth"),
        ("Authorization: Bearer abcdefghijklmnop1234567890", "auth_header"),
        ("the signing secret is 8f3Kq9Zt2Lm7Xw4Rb6Yc1Vn5Hd0Jp3Ge", "high_entropy"),
        ("write to marie.dupont@example.fr please", "email"),
        ("call me on +33 6 12 34 56 78", "phone"),
        ("Kudryashov (34) 646-869-Office", "phone"),
        ("my card 4111 1111 1111 1111 expires soon", "credit_card"),
        ("IBAN FR14 2004 1010 0505 0001 3M02 606", "iban"),
        ("ssn 123-45-6789", "us_ssn"),
        ("CONFIDENTIAL - internal only roadmap", "marker"),
        ("redis://:p4ssw0rdRedis@10.0.0.5:6379/0", "url_credentials"),
        ("Mot de passe du compte admin : Azerty123!", "password_in_prose"),
        ("mysql -u root -p'Sup3rS3cret!' app", "cli_password"),
        ("<algoliaToken>     5b2ab79a3f19b3188f2f73a340fb39a7 </algoliaToken>", "xml_credential"),
        (
            'harness_TOKEN ::= "sat.yqm6hsi81e5d8wwy2029vv.h34gzke2cxbr7k00e5rdpc1u.h0ij81a34vmrv8g610cj"',
            "assigned_credential",
        ),
        ("token: s.ZC9Ecf4M5g9o34Q6RkzGsj0z", "assigned_credential"),
        ("docker login -u ci --password-stdin <<< dckr_pat_2b3e36beeb386dfdaacb9b46004c", "docker_pat"),
        ("Document interne, ne pas diffuser.", "marker"),
    ],
)
def test_rules_find(text, subtype):
    assert subtype in _subtypes(text)


@pytest.mark.parametrize(
    "text",
    [
        "Write a Python function that returns the nth Fibonacci number.",
        "Explain how to rotate the OpenRouter API key without downtime.",
        "The password field must be at least 12 characters; show an error otherwise.",
        "Commit 3f2a9c1e8b7d6a5f4e3d2c1b0a9f8e7d6c5b4a39 broke the build, please revert it.",
        "Use the request id 123e4567-e89b-12d3-a456-426614174000 in the log line.",
        "token = os.environ['API_TOKEN']",
        'password = "${DB_PASSWORD}"',
        "api_key: <your-api-key>",
        "What is 1234 + 5678?",
        "Sort [4111, 1111, 1111, 1111] in place.",
        "The bakery is at 20488 3120 Elm St",
        "Ship it to 04213 1187 Oak Ave",
        "IBAN FR00 0000 0000 0000 0000 0000 000 is a bad checksum",
        "call get_password() and cache the result",
        "The password field is required and must be 12+ characters.",
        "Enter your password: ********",
        "docker run -P nginx:latest",
        "api_key = settings.openrouter_api_key",
        "<tokenizer>bert-base</tokenizer>",
        "Sales in the range (1999) 2000-2010 grew.",
    ],
)
def test_rules_do_not_flag_ordinary_developer_prompts(text):
    assert scan_rules(text) == [], [(f.subtype, text[f.start : f.end]) for f in scan_rules(text)]


@pytest.mark.parametrize(
    ("digits", "ok"), [("4111111111111111", True), ("4111111111111112", False), ("79927398713", True)]
)
def test_luhn(digits, ok):
    assert luhn_ok(digits) is ok


@pytest.mark.parametrize(
    ("iban", "ok"),
    [("GB82 WEST 1234 5698 7654 32", True), ("GB82 WEST 1234 5698 7654 33", False), ("DE89370400440532013000", True)],
)
def test_iban_checksum(iban, ok):
    assert iban_ok(iban) is ok


def test_findings_carry_spans_and_labels_but_not_the_data():
    text = f"deploy with {GH} now"
    result = gate_rules(text)
    assert result.sensitive and "secret:github_token" in result.labels
    finding = next(f for f in result.findings if f.subtype == "github_token")
    assert text[finding.start : finding.end] == GH
    assert GH not in json.dumps([f.label for f in result.findings])
    assert redact(text, result.spans()) == f"deploy with {REDACTED} now"


def test_empty_result_is_not_sensitive():
    assert GateResult.of([]) == GateResult(sensitive=False, findings=())


@pytest.mark.parametrize(
    "text",
    [
        "working_dir: /work/main/.promptship/demo/20261122T225647/workspaces/0cd6e1ca8afb3fb0",
        "cd /tmp/promptship/workspaces/0cd6e1ca8afb3fb0 && git status",
    ],
)
def test_a_workspace_path_named_by_a_run_key_is_not_a_secret(text):
    from promptship.domain.gate import scan_rules

    assert not [f for f in scan_rules(text) if f.subtype == "high_entropy"]


# --- the rules file and credentials in plain words ----------------------------------------------------------


def test_every_rule_of_the_rules_file_names_its_source():
    from promptship.domain.gate import load_secret_rules

    rules = load_secret_rules()
    assert len(rules) >= 70
    for rule in rules:
        assert set(rule) == {"subtype", "needles", "pattern", "source"}, rule
        assert len(rule["source"]) >= 10, rule["subtype"]


def _plain_rows() -> list[dict]:
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "data" / "plain_credentials.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("row", _plain_rows(), ids=lambda r: r["id"])
def test_plain_language_credentials(row):
    """promptship's own labelled examples (EN/FR), written for this rule: a credential given after a word such
    as password/PIN/passphrase/recovery code is found; ordinary sentences about passwords are not."""
    secrets = [f for f in scan_rules(row["text"]) if f.kind == "secret"]
    assert bool(secrets) == bool(row["label"]), [row["text"][f.start : f.end] for f in secrets]


@pytest.mark.parametrize(
    ("value", "placeholder"),
    [
        ("AKIAIOSFODNN7EXAMPLE", True),
        ("ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", True),
        ("<your-token>", True),
        ("${GITHUB_TOKEN}", True),
        ("insert_key_here", True),
        ("sntryu_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", True),
        ("ghp_Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz9Xc8", False),
        ("hunter2", False),
        ("xoxb-493817260554-8831046279913-Qm7RtZp2KwLx9VbN4sHj8cYd", False),
    ],
)
def test_placeholders(value, placeholder):
    from promptship.domain.gate import is_placeholder_secret

    assert is_placeholder_secret(value) is placeholder
