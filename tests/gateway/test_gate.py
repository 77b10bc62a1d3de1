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
            + "Hn4vC8mZ2qXy7AA"  # 93 characters, then AA: the documented shape
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
        assert set(rule) - {"fixed_length", "vouched"} == {"subtype", "needles", "pattern", "source"}, rule
        assert isinstance(rule.get("fixed_length", False), bool), rule["subtype"]
        assert isinstance(rule.get("vouched", False), bool), rule["subtype"]
        assert len(rule["source"]) >= 10, rule["subtype"]


def _plain_rows() -> list[dict]:
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "data" / "plain_credentials.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("row", _plain_rows(), ids=lambda r: r["id"])
def test_plain_language_credentials(row):
    """promptship's own labelled examples (EN/FR), written for this rule: a credential given after a word such
    as password/PIN/passphrase/recovery code is found; ordinary sentences about passwords are not. A row that names
    its value (`value`) is found there: every character of it is inside a finding, so redaction hides it all."""
    secrets = [f for f in scan_rules(row["text"]) if f.kind == "secret"]
    assert bool(secrets) == bool(row["label"]), [row["text"][f.start : f.end] for f in secrets]
    if row.get("value"):
        start = row["text"].index(row["value"])
        hidden = {i for f in secrets for i in range(f.start, f.end)}
        assert set(range(start, start + len(row["value"]))) <= hidden, [row["text"][f.start : f.end] for f in secrets]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Log in to the build box as ci-runner / Zq4Wx8Lm2Kd and clear the cache", "Zq4Wx8Lm2Kd"),
        ("login: deploy:Vq3Lm8Tz1Wx6", "Vq3Lm8Tz1Wx6"),
        ("Password changed to Hunter2024! by the admin", "Hunter2024!"),
        ("Le mot de passe devient Sureau-Falaise-Brume-38 lundi", "Sureau-Falaise-Brume-38"),
        ("the license key is currently Kp3Vz8Wq2Lm7", "Kp3Vz8Wq2Lm7"),
        ("La clé Wi-Fi c'est Sureau-Falaise-Brume-38", "Sureau-Falaise-Brume-38"),
        ("Sign in with Google / read-only scope for now", None),
        ("Sign in with SAML/OIDC2 on the staging login", None),  # a slash without blanks: a path or a pair of names
        ("The login flow moved to auth/v2-callback last week", None),
        ("Login: see 1Password / Bitwarden for the vault", None),
        ("Set the password to something long and random", None),
        ("credentials: alice@example.com / <password>", None),
        ("The API key is stored in Vault under ci/deploy", None),
        ("Log in to the console at 10.0.0.5:8443 as root", None),
        ("Le mot de passe devient obligatoire à la connexion", None),
    ],
)
def test_a_password_set_to_given_with_its_user_or_after_a_key_word_is_found_whole(text, value):
    """The value a password is set to, a user / password pair after a login word, a key or token in prose: found
    whole when it looks like a password (letters with digits or symbols, or a passphrase); not in sentences that
    end in ordinary words, paths or placeholders."""
    spans = [text[f.start : f.end] for f in scan_rules(text) if f.kind == "secret"]
    assert spans == ([value] if value else []), spans


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("the ssh key passphrase is quartz meadow ribbon lantern", "quartz meadow ribbon lantern"),
        ("The backup passphrase: walnut copper ember sparrow, keep it offline", "walnut copper ember sparrow"),
        ("the passphrase is quartz meadow ribbon lantern and the user is ops", "quartz meadow ribbon lantern"),
        ("The password is Tulip Orbit, use it once", "Tulip Orbit"),
        ("le mot de passe est bleu ciel lundi matin", "bleu ciel lundi matin"),
        ("My password is marigold and I keep losing it", "marigold"),
        (
            "recovery phrase: anchor bubble cliff dune ember frost glide harbor ivory jungle kettle lunar",
            "anchor bubble cliff dune ember frost glide harbor ivory jungle kettle lunar",
        ),
        (
            'seed phrase: "anchor bubble cliff dune ember frost glide harbor ivory jungle kettle lunar"',
            "anchor bubble cliff dune ember frost glide harbor ivory jungle kettle lunar",
        ),
        ("the passphrase is rotated every quarter", None),
        ("la phrase secrète est trop courte", None),
        ("the vault password is different on each host", None),
        ("Never share the recovery phrase with support", None),
        ("The seed phrase is kept offline in two places", None),
    ],
)
def test_a_passphrase_written_with_blanks_or_a_recovery_phrase_is_found_whole(text, value):
    """Words after the connector that close the clause are one passphrase (or, after a recovery or seed phrase
    word, eight words or more, quoted or not, are one recovery phrase): found whole, so redaction hides every
    word; a word that the sentence carries on from ("is rotated every quarter") is prose."""
    spans = [text[f.start : f.end] for f in scan_rules(text) if f.kind == "secret"]
    assert spans == ([value] if value else []), spans


def _code_rows() -> list[dict]:
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "data" / "code_credentials.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.mark.parametrize("row", _code_rows(), ids=lambda r: f"{r['id']}-{r['syntax']}")
def test_credentials_in_code_and_config(row):
    """promptship's own labelled examples of credentials in documented code and config syntaxes (setters, login
    calls, basic auth, env name/value pairs, Dockerfile ENV, SQL IDENTIFIED BY, YAML block scalars, CLI flags…):
    a literal credential is found by the rules layer; a variable, a reference or a prompt in its place is not."""
    secrets = [f for f in scan_rules(row["text"]) if f.kind == "secret"]
    assert bool(secrets) == bool(row["label"]), [row["text"][f.start : f.end] for f in secrets]


@pytest.mark.parametrize(
    "text",
    [
        "Pass the -password flag to influx to log in.",
        "Use the -password option only in scripts.",
        "Run sqlcmd with -P when SQL authentication is on.",
        "zip -P is insecure; use -e instead.",
        "7z a -p archive.7z reports/  # -p alone prompts",
        "Set requirepass in redis.conf before opening the port.",
        "rabbitmqctl add_user <username> <password>",
        "AUTH failed for the default user.",
        "The ftp job failed last night.\nuser alice reported it this morning.",
        "CONNECT input/output lines before powering on.",
        "sqlplus app/ORCL is not how you log in.",
        "wpa_passphrase HomeNet prints a network block for wpa_supplicant.conf.",
        "The net use command maps \\\\files\\share drives for everyone.",
        "Pass -Password only in scripts you trust.",
        "cqlsh -u cassandra -p flag is deprecated",
    ],
)
def test_sentences_about_password_flags_are_not_credentials(text):
    """A sentence about a tool's password flag, or the flag with nothing after it, names no credential."""
    assert [text[f.start : f.end] for f in scan_rules(text) if f.kind == "secret"] == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('secret_arn = "arn:aws:secretsmanager:us-east-2:210987654321:secret:payments-db"', False),
        ("SecretId: arn:aws-us-gov:secretsmanager:us-gov-west-1:210987654321:secret:ci", False),
        ('secretsmanager_token = "Vq3Lm8Tz1Wx6Rk4N"', True),  # the same word as a name, with a value
    ],
)
def test_an_arn_names_a_resource_not_a_credential(text, found):
    """An ARN's service field (`secretsmanager`) is not the name of a value assigned to it."""
    assert bool([f for f in scan_rules(text) if f.kind == "secret"]) is found


@pytest.mark.parametrize(
    ("value", "passphrase"),
    [
        ("Lantern-Field-46", True),
        ("correct-horse-battery-staple", True),
        ("Lantern-Field", False),  # two words: a name (`read-only`, `dry-run`)
        ("hello-42", False),
        ("my-api-key", False),  # a credential word in it: a name
        ("your-password-here", False),
        ("db_password_prod", False),  # snake_case: an identifier
    ],
)
def test_passphrases(value, passphrase):
    from promptship.domain.gate import is_passphrase

    assert is_passphrase(value) is passphrase
    found = [f for f in scan_rules(f"db_password: {value}") if f.kind == "secret"]
    assert bool(found) is passphrase, found


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("SESSION_SECRET=Larch-Osprey-Tundra-52", True),  # a shared secret's name: the passphrase is the secret
        ("cookie_secret_key: 'Dahlia-Ember-Sextant'", True),
        ("cookie_secret_key: 'Dahlia-Ember'", False),  # two words and no number: a name
        ("webhookSecret: Quill-Marsh-Beacon-17", True),
        ("existingSecret: Quill-Marsh-Beacon-17", False),  # Helm: the name of a Kubernetes Secret object
        ("tlsSecret: storefront-ingress-prod", False),
        ("secretName: storefront-ingress-prod", False),
        ("secret_key_name = Larch-Osprey-Tundra-52", False),  # the name says it is a name
        ("cache_key = Larch-Osprey-Tundra-52", False),  # not a credential's name at all
        ("APP_SECRET=${APP_SECRET:?APP_SECRET must be set}", False),  # a shell reference that fails when unset
        ("app.secret_key = secrets.token_hex(32)", False),  # a call that makes the value at run time
        ("secret: [settings.signKeyCurrent, settings.signKeyPrevious],", False),  # an array of references
    ],
)
def test_a_passphrase_in_a_shared_secrets_place_is_that_secret(text, found):
    """Names that end in `secret`, `secret_key` or `secret_key_base` hold a chosen secret, so a passphrase there
    is a credential; a reference, a generator call or a Kubernetes Secret's name is not."""
    assert bool([f for f in scan_rules(text) if f.kind == "secret"]) is found, text


@pytest.mark.parametrize(
    ("text", "spans"),
    [
        ("db_password: !!str Vq3Lm8Tz1Wx6", ["Vq3Lm8Tz1Wx6"]),  # the core schema's tag: the value after it
        ("session_secret: !!str Larch-Osprey-Tundra-52", ["Larch-Osprey-Tundra-52"]),
        ("MasterUserPassword: !Ref DbMasterPassword", []),  # CloudFormation: a reference to a parameter
        ("db_pass: !Sub '{{resolve:ssm-secure:/orders/db}}'", []),
        ("wifi_password: !secret home_wifi_password", []),  # Home Assistant / ESPHome: a key in secrets.yaml
        ("admin_password: !vault |", []),  # Ansible: an encrypted block follows
        ("signing_secrets = ['Vq3Lm8Tz1Wx6Rk4N', 'Pz2Kc7Hw5Jt9Qd1M']", ["Vq3Lm8Tz1Wx6Rk4N", "Pz2Kc7Hw5Jt9Qd1M"]),
        (
            "secret: ['Larch-Osprey-Tundra-52', 'Quill-Marsh-Beacon-17'],",
            ["Larch-Osprey-Tundra-52", "Quill-Marsh-Beacon-17"],
        ),
        ("api_keys = ['Vq3Lm8Tz1Wx6Rk4N', 'primary']", ["Vq3Lm8Tz1Wx6Rk4N"]),  # a word in the list is no secret
        ("SECRET_KEY_FALLBACKS = ['Larch-Osprey-Tundra-52']", ["Larch-Osprey-Tundra-52"]),
        ("signing_secrets = [settings.primarySigningKey, settings.olderSigningKey]", []),
        ("api_tokens = [os.environ['PRIMARY_TOKEN']]", []),
    ],
)
def test_yaml_tags_and_lists_after_a_credentials_name(text, spans):
    """A YAML `!!str` tag keeps the value a value and the redaction covers the value, not the tag; other tags
    (`!Ref`, `!secret`, `!vault`) introduce a reference or an encrypted block; a list's quoted elements are values,
    each redacted; a list of references is not."""
    assert [text[f.start : f.end] for f in scan_rules(text) if f.kind == "secret"] == spans


@pytest.mark.parametrize(
    ("text", "spans"),
    [
        ("az keyvault secret set --vault-name kv-ops --name redis-pass --value=Wq8Nr3Kt6Zp", ["Wq8Nr3Kt6Zp"]),
        ("az keyvault secret set --vault-name kv-ops --name redis-pass --value @redis-pass.txt", []),  # a file
        ("aws ssm put-parameter --name /ops/redis --value 'Lq5Hz8Wm2Rt' --type=SecureString", ["Lq5Hz8Wm2Rt"]),
        ("aws ssm put-parameter --name /ops/redis --type SecureString --value fileb://redis.bin", []),
        ("aws ssm put-parameter --name /ops/flag --type String --value 'Lq5Hz8Wm2Rt'", []),  # not a secure one
        ("echo 'Falcon-Meadow-Rune-33' | npx wrangler secret put REDIS_PASSWORD", ["Falcon-Meadow-Rune-33"]),
        ('echo "$REDIS_PASSWORD" | npx wrangler secret put REDIS_PASSWORD', []),
        ("printf '%s' \"Zr6Kp9Wq3Tn\" | gcloud secrets create redis-pass --data-file=-", ["Zr6Kp9Wq3Tn"]),
        ("printf '%s' \"Zr6Kp9Wq3Tn\" | gcloud secrets create redis-pass --data-file=-.txt", []),  # a file's name
        ("gcloud secrets versions add redis-pass --data-file=- <<< 'Zr6Kp9Wq3Tn'", ["Zr6Kp9Wq3Tn"]),
        ('gh secret set REDIS_PASSWORD --repo ops/cache <<< "Zr6Kp9Wq3Tn"', ["Zr6Kp9Wq3Tn"]),
        ("echo Zr6Kp9Wq3Tn | gh secret set REDIS_PASSWORD", ["Zr6Kp9Wq3Tn"]),
        ("gh secret set REDIS_PASSWORD < redis.txt", []),
        ("vercel env add REDIS_URL preview < redis.txt", []),
        ("netlify env:set REDIS_PASSWORD Zr6Kp9Wq3Tn", ["Zr6Kp9Wq3Tn"]),
        ("netlify env:set BUILD_HOOK_ID Zr6Kp9Wq3Tn --secret", ["Zr6Kp9Wq3Tn"]),  # marked secret by the flag
        ('netlify env:set SITE_TITLE "Acme Docs"', []),
        ("eas secret:create --name REDIS_PASSWORD --value=Zr6Kp9Wq3Tn", ["Zr6Kp9Wq3Tn"]),
        ("eas secret:create --name FIREBASE_PLIST --value ./GoogleService-Info.plist --type=file", []),
    ],
)
def test_a_value_handed_to_a_secret_stores_command_line_is_a_secret(text, spans):
    """A secret store's CLI stores the value it is given (an option, a pipe or a here-string) as a secret, so that
    value is one, passphrases included; a variable, a file (`@file`, `file://`, `< file`, `--type file`) or a plain
    parameter is not."""
    assert [text[f.start : f.end] for f in scan_rules(text) if f.kind == "secret"] == spans


@pytest.mark.parametrize(
    ("text", "spans"),
    [
        ("gh secret set SIGNING_KEY \\\n  --env production \\\n  --body 'Jv4Tq8Wn2Rz6'", ["Jv4Tq8Wn2Rz6"]),
        ("gh secret set SIGNING_KEY \\\r\n  --body 'Jv4Tq8Wn2Rz6'", ["Jv4Tq8Wn2Rz6"]),  # CRLF line ends
        ('gh secret set SIGNING_KEY \\\n  --body "$SIGNING_KEY"', []),
        ("mysql -h db.ops.internal -u auditor \\\n  -pJv4Tq8Wn2Rz6 audit", ["Jv4Tq8Wn2Rz6"]),
        ("htpasswd -b \\\n  /srv/www/.htpasswd auditor Jv4Tq8Wn2Rz6", ["Jv4Tq8Wn2Rz6"]),  # the value, not a name
        ("ConvertTo-SecureString `\n  -String 'Jv4Tq8Wn2Rz6' `\n  -AsPlainText -Force", ["Jv4Tq8Wn2Rz6"]),
        ("net user svc_audit ^\n  Jv4Tq8Wn2Rz6 /add", ["Jv4Tq8Wn2Rz6"]),
        ("net user svc_audit\t^\r\n  Jv4Tq8Wn2Rz6 /add", ["Jv4Tq8Wn2Rz6"]),  # a tab before the caret, CRLF
        ("net user svc_audit ^\n  * /add", []),  # `*` asks for the password
    ],
)
def test_a_command_continued_over_lines_is_read_as_one(text, spans):
    """A backslash at a line's end (POSIX shells), a backtick (PowerShell) or a caret (cmd) continues the command, so
    the command's rules read it as one line and the redaction covers the value; a variable or `*` is no value."""
    assert [text[f.start : f.end] for f in scan_rules(text) if f.kind == "secret"] == spans


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


# --- values that are not secrets: one policy each, with examples written for these tests ---------------------

_B64_LINES = (
    "DT/z1qbdg4wfOU32F6zZuJIjanIU2rcFG5KlApwcyvswPlRCLBW5S0W8Tl8RYZwq\n"
    "qaHB6ilhv5XzpPWSobEJY2vM10VRst2FwbYoKHIT3lfAJIdrGzve32ACbB8VD9+w\n"
    "tpr4fYQM+mPAhBrij8Lc18VPRMuH3Vqp06ssyv69zAr4zEtY6jwKjLQq9WanMtU1\n"
)
# {"alg":"ES256","typ":"JWT","kid":"build-7"}
_JOSE_HEADER = "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImJ1aWxkLTcifQ"
_CLAIMS = "eyJzdWIiOiJzdmMtZGVwbG95IiwiZXhwIjoxODkzNDU2MDAwfQ"  # {"sub":"svc-deploy","exp":1893456000}
_ANTHROPIC_BODY = "5P_vUXBprPnQQowksdDWdcJR9yTcJfDPaBn53OAKFHMnjuzYjcmdfitlkN7vF4yJgahAoEgy5yaZT9cphDK7ZNBa8E50J"


@pytest.mark.parametrize(
    ("value", "public"),
    [
        ("pk_live_118o1OMDaMe40MvNIj5mpf0f", True),  # Stripe publishable key: meant for client-side code
        ("pk_test_118o1OMDaMe40MvNIj5mpf0f", True),
        ("sk_live_118o1OMDaMe40MvNIj5mpf0f", False),  # the secret key is a credential
        ("rk_live_118o1OMDaMe40MvNIj5mpf0f", False),
        (_JOSE_HEADER, True),  # a JOSE header alone grants nothing
        (f"{_JOSE_HEADER}.{_CLAIMS}.POx860qkia7MafVK8B2yrX4xcwuovr-I1nyfag4PCVd", False),  # a whole JWT does
        (_CLAIMS, False),  # claims are not a header
    ],
)
def test_values_public_by_design(value, public):
    from promptship.domain.gate import is_not_a_secret, is_public_value

    assert is_public_value(value) is public
    assert is_not_a_secret(value) is public


def test_a_publishable_key_passes_and_a_secret_key_does_not():
    publishable = 'stripe.setPublishableKey("pk_live_118o1OMDaMe40MvNIj5mpf0f")'
    assert not [f for f in scan_rules(publishable) if f.kind == "secret"]
    assert "stripe_key" in _subtypes('Stripe::API_KEY = "sk_live_118o1OMDaMe40MvNIj5mpf0f"')


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n{_B64_LINES}-----END PGP PUBLIC KEY BLOCK-----", False),
        (f"-----BEGIN CERTIFICATE-----\n{_B64_LINES}-----END CERTIFICATE-----", False),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDT/z1qbdg4wfOU32F6zZuJIjanIU2rcFG5KlApwcyvsw deploy@ci", False),
        # the same lines in a private key block, or after a credential word, are secrets
        (f"-----BEGIN RSA PRIVATE KEY-----\n{_B64_LINES}-----END RSA PRIVATE KEY-----", True),
        (f"signing_secret = {_B64_LINES.splitlines()[0]}", True),
    ],
)
def test_armoured_public_material_is_not_a_secret(text, secret):
    assert bool([f for f in scan_rules(text) if f.kind == "secret"]) is secret


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("-----BEGIN OPENSSH PRIVATE KEY-----\n-----END OPENSSH PRIVATE KEY-----", False),  # a block with no key
        (f"-----BEGIN OPENSSH PRIVATE KEY-----\n{_B64_LINES}-----END OPENSSH PRIVATE KEY-----", True),
        ("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIDT/z1qbdg4wfOU32F6zZuJIjanIU2rcFG5Kl", True),  # cut off: still a key
    ],
)
def test_an_empty_private_key_block_is_no_key(text, secret):
    assert ("private_key" in _subtypes(text)) is secret


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ('<input type="hidden" name="csrf_token" value="OhdDpG3z2ZERh3QUsFNikuVq7Tx">', False),
        ('<meta name="csrf-token" content="FNKypchQv4Nbbdem4VYuGrBrMT2VbH9u5AFvZNzZ">', False),
        ("authenticity_token=FNKypchQv4Nbbdem4VYuGrBrMT2VbH9u5AFvZNzZ", False),
        ("session_token=FNKypchQv4Nbbdem4VYuGrBrMT2VbH9u5AFvZNzZ", True),  # a session token is a credential
        (f"Authorization: Bearer {_JOSE_HEADER}.{_CLAIMS}.POx860qkia7MafVK8B2yrX4xcwuovr-I1nyfag4PCVd", True),
        (f"the JWS header is {_JOSE_HEADER}", False),
    ],
)
def test_anti_forgery_values_and_lone_headers_are_not_secrets(text, secret):
    assert bool([f for f in scan_rules(text) if f.kind == "secret"]) is secret


@pytest.mark.parametrize(
    ("key", "found"),
    [
        (f"sk-ant-api03-{_ANTHROPIC_BODY[:93]}AA", True),  # 93 characters, then AA (the documented shape)
        (f"sk-ant-admin01-{_ANTHROPIC_BODY[:93]}AA", True),
        (f"sk-ant-api03-{_ANTHROPIC_BODY[:60]}AA", False),  # too short: not an Anthropic key
        (f"sk-ant-api03-{_ANTHROPIC_BODY[:93]}BB", False),
    ],
)
def test_anthropic_keys_have_their_documented_shape(key, found):
    assert ("anthropic_key" in _subtypes(f"ANTHROPIC_API_KEY: {key}")) is found


@pytest.mark.parametrize(
    ("text", "subtype", "found"),
    [
        ("avatar-4111111111111111.png", "credit_card", False),  # glued into a file name
        ("pay with 4111 1111 1111 1111 today", "credit_card", True),
        ("IBAN XK48 3456 7890 1234 5678 for the refund", "phone", False),  # the digits of an account number
        ("IBAN XK48 3456 7890 1234 5678 for the refund", "iban", True),
        ("call +44 20 7946 0958 tomorrow", "phone", True),
        ("write to jane.fake@mailhost.io", "email", False),  # a made-up address says so
        ("write to dummy@mailhost.io", "email", False),
        ("write to jane.doe@mailhost.io", "email", True),
        ("write to fakhri@mailhost.io", "email", True),  # a name that merely starts like one
    ],
)
def test_numbers_and_addresses_that_are_no_ones(text, subtype, found):
    assert (subtype in _subtypes(text)) is found


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ('fakeToken = "Qm9aT3x7LpR2vY8sW4kZ"', False),
        ('invalid_api_key: "Qm9aT3x7LpR2vY8sW4kZ"', False),
        ('exampleSecret := "Qm9aT3x7LpR2vY8sW4kZ"', False),
        ('apiToken = "Qm9aT3x7LpR2vY8sW4kZ"', True),
        ('test_token = "Qm9aT3x7LpR2vY8sW4kZ"', True),  # a test account's token is a real credential
        ('mock_secret = "x"; real_secret = "Qm9aT3x7LpR2vY8sW4kZ"', True),  # the name next to the value decides
    ],
)
def test_a_name_that_says_fake_keeps_generic_detectors_quiet(text, found):
    generic = {"assigned_credential", "high_entropy"}
    assert bool(_subtypes(text) & generic) is found


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("curl -u username:password https://api.internal/v1", False),
        ("curl --user user:pass https://api.internal/v1", False),
        ("curl -u deploy:Tq8vL2pWz https://api.internal/v1", True),
        ("cat ./password.txt | docker login --password-stdin", False),  # a file name, not a password
        ("hash(password[i]) for each entry", False),
        ("curl --user admin:[PASSWORD] http://[HOST]:7474/db", False),  # placeholders, then a URL
        ("the password: Tr0ub4dor&3", True),
        ("login admin password Tr0ub4dor&3", True),
    ],
)
def test_credentials_in_commands_and_words_not_code(text, found):
    assert bool([f for f in scan_rules(text) if f.kind == "secret"]) is found


# Session 5: formats written from provider documentation (secret_rules.toml names each source). Every value here
# is made up for this table in the documented shape; none comes from an evaluation set or a fixture.
_B64_PEM_KEY = "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpNSUlFb3dJQkFBS0NBUUVBdjRx"


@pytest.mark.parametrize(
    ("text", "subtype", "value"),
    [
        ("ssh in and run: psexec \\\\build07 -u ci\\runner -p Ruby9Tulip cmd", "cli_password", "Ruby9Tulip"),
        ('PsExec64.exe \\\\10.9.8.7 -u ops -p "Seven Blue 7" -s hostname', "cli_password", "Seven Blue 7"),
        ("smbclient //nas/share -U backup%Fern4Lamp -c ls", "cli_password", "Fern4Lamp"),
        ("xfreerdp /v:win01 /u:ops /p:Otter5Maple /cert:ignore", "cli_password", "Otter5Maple"),
        ("net use Z: \\\\nas\\media Pebble8Sky /user:home\\ana", "cli_password", "Pebble8Sky"),
        # Windows commands and PowerShell parameters in any case: the needle test folds case for such rules
        ("Schtasks /create /tn nightly /tr run.cmd /ru svc /rp Heron-Vault-52", "cli_password", "Heron-Vault-52"),
        ("Invoke-Sqlcmd -ServerInstance db01 -Username sa -PassWord Heron-Vault-52", "cli_password", "Heron-Vault-52"),
        ("NET Use Z: \\\\nas\\media Heron-Vault-52 /user:home\\ana", "cli_password", "Heron-Vault-52"),
        ("REACT_APP_ADMIN_PASSWORD=Quill3Harbor", "react_app_credential", "Quill3Harbor"),
        ('REACT_APP_DEMO_USER = "mkoval82"', "react_app_credential", "mkoval82"),
        (
            "repositories { maven { credentials { username 'ci-bot'\n password 'Lumen7Dock' } } }",
            "gradle_credential",
            "ci-bot",
        ),
        ('echo "pg.lan:5432:sales:etl:Cobalt6Reed" > ~/.pgpass', "pgpass_line", "Cobalt6Reed"),
        ("*:*:*:report:Cobalt6Reed", "pgpass_line", "Cobalt6Reed"),
        ("$1$Tq4mZk9w$" + "Hc7Jd2Lq9Wx4Rz8Vb1Nm6p", "password_hash", "$1$Tq4mZk9w$Hc7Jd2Lq9Wx4Rz8Vb1Nm6p"),
        ("ana:$apr1$R2d4Vq8z$" + "Xk9mB3nQ7wL1pT5sC8vZ0.", "password_hash", "$apr1$R2d4Vq8z$Xk9mB3nQ7wL1pT5sC8vZ0."),
        (
            "$2y$10$" + "Qv3Lk8Tz1Wq7Mn4Rb9Xc2Ohd6Fs0Gj5Ue3Ya8Pi1Kl7No4Wm9Vb2C",
            "password_hash",
            "$2y$10$Qv3Lk8Tz1Wq7Mn4Rb9Xc2Ohd6Fs0Gj5Ue3Ya8Pi1Kl7No4Wm9Vb2C",
        ),
        (
            "$8$Wq3Lk8Tz1Wq7Mn$" + "Rb9Xc2Ohd6Fs0Gj5Ue3Ya8Pi1Kl7No4Wm9Vb2Cq8Lp3",
            "password_hash",
            "$8$Wq3Lk8Tz1Wq7Mn$Rb9Xc2Ohd6Fs0Gj5Ue3Ya8Pi1Kl7No4Wm9Vb2Cq8Lp3",
        ),
        (
            "pbkdf2_sha256$600000$Tq4mZk9wHc7J$" + "Xk9mB3nQ7wL1pT5sC8vZ0aQ2rE4tY6uI8oP1sD3fG5h=",
            "password_hash",
            "pbkdf2_sha256$600000$Tq4mZk9wHc7J$Xk9mB3nQ7wL1pT5sC8vZ0aQ2rE4tY6uI8oP1sD3fG5h=",
        ),
        (
            "svc_sql:1107:" + "aad3b435b51404eeaad3b435b51404ee:" + "4c9e2a7f1b3d5e8a0c6f9b2d4e7a1c3f:::",
            "password_hash",
            "aad3b435b51404eeaad3b435b51404ee:4c9e2a7f1b3d5e8a0c6f9b2d4e7a1c3f",
        ),
        (
            "Authorization: SSWS 00" + "Tq4mZk9wHc7JdLq9-Wx4Rz8Vb1Nm6pQ2rE4tY6uI8o",
            "okta_token",
            "00Tq4mZk9wHc7JdLq9-Wx4Rz8Vb1Nm6pQ2rE4tY6uI8o",
        ),
        (
            "OKTA_API_TOKEN=00" + "Tq4mZk9wHc7JdLq9_Wx4Rz8Vb1Nm6pQ2rE4tY6uI",
            "okta_token",
            "00Tq4mZk9wHc7JdLq9_Wx4Rz8Vb1Nm6pQ2rE4tY6uI",
        ),
        ("key id AKIA" + "Q8ZP1M0RX9T4V6W2", "aws_key", "AKIAQ8ZP1M0RX9T4V6W2"),
        (
            "amzn.mws." + "1c9e2a7f-1b3d-5e8a-0c6f-9b2d4e7a1c3f",
            "aws_mws_key",
            "amzn.mws.1c9e2a7f-1b3d-5e8a-0c6f-9b2d4e7a1c3f",
        ),
        ("NRAK-" + "Q8ZP1M0RX9T4V6W2K7L3N5B8C1D", "newrelic_key", "NRAK-Q8ZP1M0RX9T4V6W2K7L3N5B8C1D"),
        (
            "license_key: 1c9e2a7f1b3d5e8a0c6f9b2d4e7a1c3f5b7dNRAL",
            "newrelic_key",
            "1c9e2a7f1b3d5e8a0c6f9b2d4e7a1c3f5b7dNRAL",
        ),
        ("GOCSPX-" + "Tq4mZk9wHc7JdLq9Wx4Rz8Vb1Nm6", "google_oauth_secret", "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"),
        ("token ya29." + "a0Tq4mZk9wHc7JdLq9Wx4Rz8Vb1Nm6", "google_oauth_token", "ya29.a0Tq4mZk9wHc7JdLq9Wx4Rz8Vb1Nm6"),
        ("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbmEifQ.", "jwt", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbmEifQ."),
        (
            "ewogICJhbGciOiAiSFMyNTYiCn0.ewogICJzdWIiOiAiYW5hIgp9.Tq4mZk9wHc7JdLq9Wx4Rz8",
            "jwt",
            "ewogICJhbGciOiAiSFMyNTYiCn0.ewogICJzdWIiOiAiYW5hIgp9.Tq4mZk9wHc7JdLq9Wx4Rz8",
        ),
        (
            "CC_TEST_REPORTER_ID=" + "1c9e2a7f1b3d5e8a0c6f9b2d4e7a1c3f" * 2,
            "codeclimate_token",
            "1c9e2a7f1b3d5e8a0c6f9b2d4e7a1c3f" * 2,
        ),
        (
            "kubeadm join 10.1.1.1:6443 --token q8zp1m.x9t4v6w2k7l3n5b8",
            "kubernetes_bootstrap_token",
            "q8zp1m.x9t4v6w2k7l3n5b8",
        ),
        ("    client-key-data: " + _B64_PEM_KEY, "kubeconfig_key", _B64_PEM_KEY),
        ("TAVILY_API_KEY=tvly-dev-" + "Tq4mZk9wHc7JdLq9Wx4Rz8Vb", "tavily_key", "tvly-dev-Tq4mZk9wHc7JdLq9Wx4Rz8Vb"),
        ("vSphere license: Q8ZP1-M0RX9-T4V6W-2K7L3-N5B8C", "license_key", "Q8ZP1-M0RX9-T4V6W-2K7L3-N5B8C"),
        (
            "POST https://prod-11.westeurope.logic.azure.com:443/workflows/ab12/triggers/manual/paths/invoke?"
            "api-version=2016-06-01&sv=1.0&sig=" + "Tq4mZk9wHc7JdLq9Wx4Rz8Vb1Nm6",
            "azure_logic_app_sas",
            "Tq4mZk9wHc7JdLq9Wx4Rz8Vb1Nm6",
        ),
        ("psexec.py corp.local/ops:Walnut7Gate@10.0.0.9 cmd.exe", "cli_password", "Walnut7Gate"),
        (
            "wmiexec.py -hashes :4c9e2a7f1b3d5e8a0c6f9b2d4e7a1c3f ops@10.0.0.9",
            "password_hash",
            ":4c9e2a7f1b3d5e8a0c6f9b2d4e7a1c3f",
        ),
        (
            "okta:\n  client:\n    token: 00Tq4mZk9wHc7JdLq9_Wx4Rz8Vb1Nm6pQ2rE4tY6uI",
            "okta_token",
            "00Tq4mZk9wHc7JdLq9_Wx4Rz8Vb1Nm6pQ2rE4tY6uI",
        ),
        (
            "GET /r.pdf?X-Amz-Expires=600&X-Amz-Signature=" + "4c9e2a7f1b3d5e8a0c6f9b2d4e7a1c3f" * 2,
            "aws_presigned_url",
            "4c9e2a7f1b3d5e8a0c6f9b2d4e7a1c3f" * 2,
        ),
        (
            "key=AAAAQ8zP1m0:APA91b" + "Tq4mZk9wHc7JdLq9Wx4Rz8Vb1Nm6pQ2rE4tY6uI8o" * 3,
            "firebase_fcm_key",
            "AAAAQ8zP1m0:APA91b" + "Tq4mZk9wHc7JdLq9Wx4Rz8Vb1Nm6pQ2rE4tY6uI8o" * 3,
        ),
        (
            "HMAC access id GOOG1E" + "Q8ZP1M0RX9T4V6W2K7L3N5B8C1D" * 2 + "Q",
            "google_hmac_key",
            "GOOG1E" + "Q8ZP1M0RX9T4V6W2K7L3N5B8C1D" * 2 + "Q",
        ),
    ],
)
def test_documented_formats_are_found_with_their_value(text, subtype, value):
    spans = {text[f.start : f.end] for f in scan_rules(text) if f.subtype == subtype}
    assert value in spans, (subtype, spans)


@pytest.mark.parametrize(
    ("text", "subtype"),
    [
        ("psexec \\\\build07 -u ci\\runner -p <password> cmd", "cli_password"),  # a placeholder
        ("REACT_APP_ADMIN_PASSWORD=changeme", "react_app_credential"),
        ("REACT_APP_API_URL=https://api.example.org", "react_app_credential"),  # not a credential name
        ("credentials { username 'your-username'\n password '<password>' }", "gradle_credential"),
        ("meeting at 10:30:45:12:99 on monday", "pgpass_line"),  # no such line: the port field is a time
        ("$1$Tq4mZk9w$short", "password_hash"),  # MD5-crypt's hash is 22 characters
        ("$2y$10$tooShortForBcrypt", "password_hash"),
        ("$8$Wq3Lk8Tz1Wq7Mn$" + "Rb9Xc2Ohd6Fs0Gj5Ue3Ya8Pi1Kl7No4Wm9Vb2Cq8Lp3sX", "password_hash"),  # 44: not type 8
        ("AKIA" + "q8zp1m0rx9t4v6w2", "aws_key"),  # lowercase: not an access key id
        ("release notes v1.2 token list: abc.def", "kubernetes_bootstrap_token"),
        ("part number Q8ZP1-M0RX9-T4V6W-2K7L3-N5B8C in the catalogue", "license_key"),  # no license context
        ("Authorization: SSWS ${OKTA_API_TOKEN}", "okta_token"),
    ],
)
def test_documented_formats_reject_what_fails_the_format(text, subtype):
    assert subtype not in _subtypes(text)


# Session 6: hard-negative policies, each with a value that passes and a real-shaped one still caught. The values
# are made up for this table (a random-looking run typed here); none comes from an evaluation set or a fixture.
_RUN = "Qx7mN2pLw9Rv4Kt8Zb3Hs6Jd1Fy5Gc0Ae"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (f"the blob reads ...{_RUN}Tq... and goes on", False),  # an excerpt cut on both sides
        (f"the blob reads \u2026{_RUN}Tq\u2026 and goes on", False),
        (f"the blob reads {_RUN}Tq and goes on", True),
        (f"the blob reads ...{_RUN}Tq and goes on", True),  # cut on one side only: the value may be whole
        ('div[data-role="header-nav_PrimaryMenuDropdownLinkV2SearchPanel"]', False),  # a name made of words
        (f'div[data-role="header-nav_{_RUN}"]', True),
    ],
)
def test_excerpts_and_names_made_of_words_are_not_credentials(text, found):
    assert bool([f for f in scan_rules(text) if f.kind == "secret"]) is found


@pytest.mark.parametrize(
    ("value", "counting"),
    [
        ("12345678", True),
        ("3456789012", True),  # counting on past 9
        ("4444444444", True),
        ("1234567", False),  # too short to say
        ("3456789013", False),
        ("48291736", False),
    ],
)
def test_counting_runs(value, counting):
    from promptship.domain.gate import is_counting_run

    assert is_counting_run(value) is counting


@pytest.mark.parametrize(
    ("value", "placeholder"),
    [
        ("ghs_3456789012345", True),  # a provider's prefix, then digits counting up
        ("ghs_3456789012345Wq8z", False),
        ("sk_live_FakeKeyForTheDocs", True),  # a documentation marker written as a word
        ("xoxb-493817260554-8831046279913-Qm7RtZp2KwLxFaKe", False),  # the same letters in a random run's case
        ("ExampleToken", True),
    ],
)
def test_placeholders_after_a_prefix_and_markers_as_words(value, placeholder):
    from promptship.domain.gate import is_placeholder_secret

    assert is_placeholder_secret(value) is placeholder


# Session 7: hard-negative policies (tune split only), each with a value that passes and a real-shaped one still
# caught. Every value is made up here; none comes from an evaluation set or a fixture.
@pytest.mark.parametrize(
    ("text", "found"),
    [
        # a signature is what a key produces, not the key (RFC 7515: sent beside what it signs): the word is no
        # credential context, its value is judged as any run (a short one passes, a long random one is kept)
        (f'{{"payload": "aGVsbG8", "signature": "{_RUN[:24]}"}}', False),
        (f'{{"payload": "aGVsbG8", "signing_key": "{_RUN[:24]}"}}', True),
        (f'{{"payload": "aGVsbG8", "signature": "{_RUN}Tq"}}', True),
        # a snake_case name that names a credential, after a password word, is a variable, not the password
        ("password: staging_db_secret", False),
        ("password: staging_orchard_lamp", True),  # words of a passphrase, no credential among them
        ("password: Staging_db_2024!", True),
        ("the password is hunter_two_77", True),
    ],
)
def test_signatures_and_names_are_not_credentials(text, found):
    assert bool([f for f in scan_rules(text) if f.kind == "secret"]) is found


@pytest.mark.parametrize(
    ("iban", "ok"),
    [
        ("DE47702918340066281935", True),  # 22 characters: Germany's length in SWIFT's IBAN Registry
        ("DE387029183400662819354", False),  # a valid checksum, one character too many for Germany
        ("NO3282173046519", True),  # 15: Norway's
        ("NO52821730465192", False),
        ("DZ3558002100001113000000", True),  # not in the registry: its checksum decides
    ],
)
def test_iban_lengths_per_country(iban, ok):
    from promptship.domain.gate import iban_ok

    assert iban_ok(iban) is ok


@pytest.mark.parametrize(
    ("value", "placeholder"),
    [
        ("GR134894145645645645645645645", True),  # GitLab's runner registration prefix, then a unit repeated
        ("GR1348941Qm7RtZp2KwLx9Vb4Nc8Hs", False),
    ],
)
def test_placeholders_after_gitlabs_runner_prefix(value, placeholder):
    from promptship.domain.gate import is_placeholder_secret

    assert is_placeholder_secret(value) is placeholder


# A provider's fixed-length format vouches for a value even when its body spells words (made-up values).
_WORDY_40 = "Orchard-lamp_Kettle-42-river_Stone-maple"  # 40 characters of words


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (f"trigger with glptt-{_WORDY_40}", True),  # GitLab's trigger-token length (SecureRandom.hex(20))
        (f"trigger with glptt-{_WORDY_40}s", False),  # one character too many: not that format, and words
        ("trigger with glptt-" + "x" * 40, False),  # a masked body still passes
        ("trigger with glptt-" + "Example_Token_" * 2 + "for_the_docs", False),  # a documentation marker
    ],
)
def test_fixed_length_formats_judge_words_as_a_token(text, found):
    assert ("gitlab_token" in _subtypes(text)) is found
