"""The sensitive-data gate: what would leave the machine, and the pure rule detectors run on it.

Pure domain code (regular expressions and checksums; no I/O). The heavy detectors (detect-secrets,
presidio-analyzer, the gitleaks rule catalogue) live in ``promptship.adapters.detectors`` and add their
findings to these.

- ``outbound_texts(messages, tools)`` lists EVERY text an OpenAI-format chat request would send out: system,
  user and assistant content (strings or content parts), assistant tool-call names and arguments, tool
  results, and the names/descriptions/parameter schemas of the tools offered.
- ``scan_rules(text)`` finds secrets (token formats, private keys, credentials assigned in code/config or
  embedded in URLs and headers, high-entropy values next to a credential word), structured personal data
  (emails, phones, IBAN with its checksum, cards with Luhn, national IDs) and confidentiality markers.
- A ``Finding`` holds the kind, subtype and span — never the matched text, so findings can be logged.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import tomllib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

FindingKind = Literal["secret", "pii", "confidential"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of sensitive data: what kind, where (character span in the scanned text), found by whom."""

    kind: FindingKind
    subtype: str
    start: int
    end: int
    detector: str

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.subtype}"


@dataclass(frozen=True, slots=True)
class GateResult:
    """The gate's verdict on a text or a request. ``sensitive`` ⇔ at least one finding."""

    sensitive: bool
    findings: tuple[Finding, ...] = field(default=())

    @classmethod
    def of(cls, findings: Iterable[Finding]) -> GateResult:
        found = tuple(sorted(set(findings), key=lambda f: (f.start, f.end, f.kind, f.subtype, f.detector)))
        return cls(sensitive=bool(found), findings=found)

    @property
    def labels(self) -> tuple[str, ...]:
        """Distinct 'kind:subtype' labels, in order of appearance (safe to log: no data)."""
        return tuple(dict.fromkeys(f.label for f in self.findings))

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(f.kind for f in self.findings)

    def spans(self) -> list[tuple[int, int]]:
        return [(f.start, f.end) for f in self.findings]


# --- what leaves the machine ------------------------------------------------------------------------------


def _content_texts(content: Any) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        out: list[str] = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                # {"type":"text","text":...}; anything else (image_url, input_audio, file...) as its JSON
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                rest = {k: v for k, v in part.items() if k not in ("type", "text")}
                if rest:
                    out.append(json.dumps(rest, ensure_ascii=False, default=str))
            else:
                out.append(str(part))
        return out
    if isinstance(content, dict):
        return _content_texts([content])
    return [str(content)]


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def outbound_texts(messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None) -> list[str]:
    """Every text of an OpenAI-format chat request that would leave the machine, in request order."""
    out: list[str] = []
    for message in messages:
        out.extend(_content_texts(message.get("content")))
        for key in ("name", "reasoning_content", "refusal"):
            if isinstance(message.get(key), str):
                out.append(message[key])
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            if function.get("name"):
                out.append(str(function["name"]))
            if function.get("arguments") is not None:
                out.append(_as_text(function["arguments"]))
        legacy = message.get("function_call")  # the pre-tools OpenAI format
        if isinstance(legacy, dict):
            out.extend(_as_text(legacy.get(k)) for k in ("name", "arguments") if legacy.get(k) is not None)
    for tool in tools or []:
        nested = tool.get("function")
        function: dict[str, Any] = nested if isinstance(nested, dict) else tool
        for key in ("name", "description"):
            if isinstance(function.get(key), str):
                out.append(function[key])
        if function.get("parameters") is not None:
            out.append(_as_text(function["parameters"]))
    return [t for t in out if t]


# --- rules ------------------------------------------------------------------------------------------------

# A regex alternation (no groups) of words that name a credential; used by the adapter's line prefilter too.
SECRET_WORDS = (
    r"passw(?:or)?d|passwd|pwd|pass|secret|token|api[_-]?key|apikey|access[_-]?key|secret[_-]?key|"
    r"private[_-]?key|client[_-]?secret|auth[_-]?token|credentials?|mot[_ ]de[_ ]passe|passphrase|"
    r"bearer|session[_-]?key|signing[_-]?key|encryption[_-]?key|license[_-]?key|conn(?:ection)?[_-]?string|"
    r"webhook[_-]?secret|db[_-]?pass|creds|access[_.-]?id|sonar[_.-]?login|[_.]pw(?![a-z])"
)

# Provider token formats with distinctive prefixes, kept as data in ONE file with the source of each rule
# (``secret_rules.toml`` beside this module: subtype, needles, pattern, source). A rule's regex only runs when
# one of its literal needles is in the text (a substring test costs microseconds; 80 regexes over 5 KB cost
# milliseconds). No needles: always run. Reading the package's own data file at import is not outside I/O.
SECRET_RULES_FILE = "secret_rules.toml"


# What ``{value}`` stands for in a rule's pattern (the file's header says what it reads).
_RULE_VALUE = r"""(?!["']?%\w+%)(?:"([^"\n$`]{4,300})"|'([^'\n]{4,300})'|([^\s"'$`<-][^\s"']{3,300}))"""


def load_secret_rules() -> tuple[dict[str, Any], ...]:
    """The rules of ``secret_rules.toml`` as dicts (subtype, needles, pattern, source), ``{value}`` expanded."""
    data = tomllib.loads(resources.files(__package__ or "promptship.domain").joinpath(SECRET_RULES_FILE).read_text())
    return tuple({**r, "pattern": r["pattern"].replace("{value}", _RULE_VALUE)} for r in data["rule"])


# The rules whose value is judged a credential whatever its body spells: a provider's fixed-length format
# (`fixed_length`) or a syntax that says the value is a password or a key (`vouched`).
_TOKEN_RULES: tuple[tuple[str, tuple[str, ...], str, bool], ...] = tuple(
    (r["subtype"], tuple(r["needles"]), r["pattern"], bool(r.get("fixed_length", False) or r.get("vouched", False)))
    for r in load_secret_rules()
)

_CODE_REFERENCE = re.compile(r"[A-Za-z_][A-Za-z_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*(?:\[[^\]]*\])?|[A-Za-z_][\w.]*\(.*")
_PLACEHOLDER_WORD = r"(?:test|testing|fake|dummy|example|sample|invalid|placeholder|changeme|my|your|some|the|secret|"
_PLACEHOLDER_WORD += r"token|key|api|password|pass|value|foo|bar|baz|xxx+|abc|dev|local|demo|default|"
_PLACEHOLDER_WORD += r"user|username|login|email|name)"
_PLACEHOLDER_WORDS = re.compile(rf"(?i){_PLACEHOLDER_WORD}(?:[-_ ]{_PLACEHOLDER_WORD})*")
_PLACEHOLDER = re.compile(
    r"(?i)^(?:x+|\*+|\.+|-+|<[^>]*>|\{\{[^}]*\}\}|\$\{[^}]*\}|\$\{[A-Za-z_]\w*:?\?.*|\$[A-Z_][A-Z0-9_]*|%\([^)]*\)s|"
    r"your[_-]?\w*|changeme|change[_-]?me|example\w*|placeholder|dummy|redacted|none|null|nil|true|false|"
    r"undefined|string|str|int|password|secret|token|test|foo|bar|baz|\*\*\*+|\.\.\.|"
    r"os\.environ.*|getenv.*|process\.env.*|env\(.*|settings\..*|config\..*|self\..*|request\..*)$"
)

# A credential word assigned a value: password = "hunter2", "api_key": "…", export TOKEN=…, --password=…
_ASSIGNMENT = re.compile(
    rf"(?i)(?:{SECRET_WORDS})[A-Za-z0-9_.-]*(?:\[\d*\])?[\"']?\]?"
    r"(?:[ \t]+(?:string|str|const|final))?[ \t]*"
    # a quote right after the name opens the value only after a blank (`PASSWORD 'x'`): in `["PASSWORD"] = …`
    # the quote closes the name
    r"(?:!==?|===?|:{1,3}=|\?=|\.=|\+=|=>|=|:|,|[ \t]+is[ \t]+|[ \t]+est[ \t]+|(?<=[ \t])(?=[\"']))[ \t]*"
    # YAML's core-schema tags `!!str`/`!!binary` keep the value a value; a list's first element is read
    # (`SECRET_KEY_FALLBACKS = ['…']`, express-session's `secret: ['…', '…']`)
    r"(?:!!(?:str|binary)[ \t]+)?(?:\[[ \t]*)?"
    r"(?:(?:b|r|u|f|@)?[\"'`]([^\"'`\n]{4,300})[\"'`]|([^\s\"'`,;]{4,300}))"
)
# "value" == password  (the literal first, as in `if ("…" === password)`)
# <apiToken> value </apiToken>
_XML_CREDENTIAL = re.compile(rf"(?i)<([\w.-]*(?:{SECRET_WORDS}|key))>\s*([^<\s][^<]{{5,300}}?)\s*</\1>")
_COMPARED = re.compile(rf"(?i)[\"'`]([^\"'`\n]{{4,300}})[\"'`]\s*(?:!==?|===?)\s*[\w.]*(?:{SECRET_WORDS})")
_URL_CREDENTIALS = re.compile(r"(?i)\b[a-z][a-z0-9+.-]{1,20}://([^/\s:@'\"]{0,100}):([^/\s@'\"]{3,200})@[\w.-]+")
# "the password is Xy7!kP2#", "mot de passe du compte admin : Azerty123!" — prose, value must look like one
_PROSE_PASSWORD = re.compile(
    r"(?i)\b(?:password|passwd|passphrase|mot de passe|passwort|kennwort|contraseña|senha|pin code)\b"
    r"[^\n:=]{0,40}?(?:\bis\b|\best\b|:|=)\s*[\"'`]?([^\s\"'`]{6,64})"
)
_CLI_PASSWORD = re.compile(
    r"(?i)\b(?:docker|podman|helm|mysql|mysqladmin|sshpass|htpasswd|smbclient|mongo|mongosh|mongodump|mongorestore|"
    r"mongoexport|mongoimport|oc|az|cf)\b[^\n]{0,120}?\s-p\s*[\"']?([^\s\"']{6,})"
)
_AUTH_HEADER = re.compile(
    r"(?i)\b(?:authorization|x-api-key|x-auth-token|api-key|private-token|x-access-token)\s*[:=]\s*[\"']?"
    r"(?:(?:bearer|basic|token|bot|digest|apikey)\s+)?([A-Za-z0-9._~+/=:-]{8,})"
)
_BEARER = re.compile(r"(?i)\bbearer\s+([A-Za-z0-9._~+/-]{16,}=*)")
_CURL_USER = re.compile(
    r"(?i)\bcurl\b[^\n]{0,300}(?:\\\n[^\n]{0,300}){0,8}?\s(?:-u|--user|--proxy-user)[\s=]*(\S*:\S*)"
)
_HIGH_ENTROPY = re.compile(r"[A-Za-z0-9+/=_-]{20,}")
_ENTROPY_CONTEXT = re.compile(rf"(?i)(?:{SECRET_WORDS}|key|auth(?!or)|credential|hmac|salt)")
# Digests are not secrets: package-lock integrity, go.sum, pip hashes, git commits.
# An excerpt: a run with an ellipsis right before and right after it was cut out of something longer (a blob,
# a log line); the whole value is not there, and a cut credential does not authenticate.
_ELLIPSES = ("...", "…")
_DIGEST_PREFIX = re.compile(r"(?i)(?:sha(?:1|224|256|384|512)[-:=]|h1:|md5[-:=])$")
_DIGEST_WORDS = re.compile(r"(?i)\b(?:commit|sha|hash|digest|checksum|revision|rev|merge|parent|tree|blob|etag)\b")
# RFC 2606/6761 documentation domains, no-reply senders and agents' bot identities are not someone's address.
_EMAIL_PLACEHOLDER = re.compile(
    r"(?i)^(?:no-?reply|donotreply)@|@(?:[\w-]+\.)*(?:example\.(?:com|org|net)|example|test|invalid|localhost)$"
    r"|@users\.noreply\.github\.com$"
    # documentation markers in the local part: fake.name@…, dummy@…
    r"|^[\w.+-]*(?<![a-z])(?:fake|dummy|example|sample|placeholder)(?![a-z])[\w.+-]*@"
    # bot identities written into coding agents' own system prompts (commit co-author lines)
    r"|^openhands@all-hands\.dev$"
)

# --- PII ---
_EMAIL = re.compile(r"(?i)(?<![\w.+-])[a-z0-9._%+-]{1,64}@(?:[a-z0-9-]{1,63}\.)+(?:xn--[a-z0-9-]{2,59}|[a-z]{2,24})\b")
_PHONE_PATTERNS = (
    re.compile(r"(?<![\w+])\+\d{1,3}[\s.-]?(?:\(?\d{1,4}\)?[\s.-]?){2,5}\d{2,4}(?![\w])"),  # international
    re.compile(
        r"(?<![\w(])\((?!(?:19|20)\d\d\))\d{2,4}\)\s?\d{2,4}[\s.-]?\d{3,4}(?:[\s.-]\d{2,4})?(?![\w)])"
    ),  # (415) 555-0132
    re.compile(r"(?<![\w-])(?:1[ .-])?\d{3}[.-]\d{3}[.-]\d{4}(?![\w-])"),  # 415-555-0132, 1-800-555-0199
    re.compile(
        r"(?<![\w.+:-])0\d{1,4}[ .-]\d{3,4}(?:[ .-]?\d{2,4}){0,2}(?![\w:-])"
        r"(?!\s+(?:[A-Z][a-z]+\s+)?(?:St|Street|Ave|Avenue|Rd|Road|Blvd|Boulevard|Lane|Ln|Dr|Drive|Way|Court|Ct|"
        r"Place|Pl|Square|Sq|Terrace|Highway|Hwy)\b)"  # "04213 1187 Oak Ave" is a street address
    ),  # 020 7946 0958, 06-12345678
    re.compile(r"(?<![\w-])0\d(?:[ .]\d{2}){4}(?![\w-])"),  # 01 42 68 53 00 (FR)
    re.compile(r"(?<![\w-])0\d{1,4}-\d{3,4}-\d{4}(?![\w-])"),  # 090-1234-5678 (JP)
)
_PHONE_CONTEXT = re.compile(
    r"(?i)\b(?:phone|tel|telephone|téléphone|mobile|cell|portable|call|fax|whatsapp|sms|number|numéro|contact|"
    r"reach(?: me)?|text me|dial|ring|messages? to|answering at|registered|landline|hotline)\b"
    r"[^\n\d]{0,25}(\+?\(?\d[\d\s().-]{6,18}\d)"
)
_CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")  # not glued into a hex id or a file name
_IBAN = re.compile(r"\b([A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30})\b")
_SSN = re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}([- ]?)(?!00)\d{2}\1(?!0000)\d{4}(?![\d-])")
_SSN_CONTEXT = re.compile(r"(?i)\b(?:ssn|social security|sécurité sociale)\b")
_NINO = re.compile(r"(?i)\b(?![DFIQUV])[A-CEGHJ-PR-TW-Z](?![DFIQUVO])[A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
_FR_NIR = re.compile(r"\b[12] ?\d{2} ?(?:0[1-9]|1[0-2]|[2-9]\d) ?(?:\d{2}|2[AB]) ?\d{3} ?\d{3} ?(\d{2})\b")
_ID_CONTEXT = re.compile(
    r"(?i)\b(?:passport|passeport|driver'?s? licen[cs]e|permis|national id|id card|carte d'identité|tax id|"
    r"steuer-?id|idnr|nif|nie|dni|codice fiscale|aadhaar|sin|itin|nino|hetu|henkilötunnus|personnummer|"
    r"bsn|pesel|cpf|curp)\b[^\n]{0,30}?\b([A-Za-z0-9][A-Za-z0-9 -]{5,16}[A-Za-z0-9])\b"
)
_CONFIDENTIAL = re.compile(
    r"(?i)\b(?:confidential|strictly confidential|internal use only|internal only|for internal use|"
    r"do not (?:share|distribute|forward)|not for (?:distribution|public release)|proprietary and confidential|"
    r"under nda|trade secret|classified|top secret|confidentiel|diffusion restreinte|ne pas diffuser|"
    r"usage interne(?: uniquement)?|strictement confidentiel|vertraulich|nur für den internen gebrauch)\b"
)


def _shannon(s: str) -> float:
    counts = Counter(s)
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_KEY_NAME_BEFORE = re.compile(r"(?i)(?:key|token|secret|api|auth|pass\w*|credential)[\"'`]?\s*(?::=|=>|=|:)\s*[\"'`]?$")
# Words: lowercase, Capitalized, ACRONYM; CamelCase runs of at least 3-letter words, joined by separators.
_WORD = r"(?:[A-Z]{2,}(?![a-z])|[A-Z]?[a-z]{2,})"
_WORDS_JOINED = re.compile(rf"{_WORD}+(?:[/_+=.-]+{_WORD}+)*[/_=-]*")


def _looks_random(value: str) -> bool:
    """A value that looks like a generated secret: long, mixed classes, high entropy, not a word or path."""
    if len(value) < 16 or _PLACEHOLDER.match(value):
        return False
    if value.isalpha() and (value.islower() or value.isupper()):
        return False
    if _is_path(value):
        return False
    if not any(c.isdigit() for c in value) and _WORDS_JOINED.fullmatch(value):
        return False  # "message/comment/issue/PR", "Content-Type", "snake_case_name": words, not a key
    classes = sum(bool(re.search(p, value)) for p in (r"[a-z]", r"[A-Z]", r"\d"))
    threshold = 3.0 if re.fullmatch(r"[0-9a-f]+", value) else 3.5
    return classes >= 2 and _shannon(value) >= threshold


def _is_path(value: str) -> bool:
    """/tmp/pytest-of-root/x/app/v.py, src/promptship/domain: segments that are not random on their own."""
    segments = [seg for seg in value.split("/") if seg]
    return len(segments) >= 2 and not any(
        _looks_random(seg) for seg in segments if len(seg) >= 16 and not _SHORT_HEX_ID.fullmatch(seg)
    )


# A lowercase hex id shorter than a 128-bit key (run keys, short commit SHAs) as one segment of a path:
# /work/.promptship/workspaces/0cd6e1ca8afb3fb0 is a directory, not a credential.
_SHORT_HEX_ID = re.compile(r"[0-9a-f]{16,31}")


def _looks_random_anywhere(value: str) -> bool:
    """Stricter: a long generated-looking value with no credential word nearby (git SHAs and UUIDs excluded)."""
    if _is_path(value):
        return False
    if len(value) < 32 or re.fullmatch(r"[0-9a-f-]+|[0-9A-F-]+|[a-z_-]+|[A-Z_-]+|\d+", value):
        return False
    if re.search(r"[_-]{2}|[a-z]{12}|[A-Z]{12}", value) or value.count("_") + value.count("-") > 4:
        return False  # identifiers and slugs, not keys
    classes = sum(bool(re.search(p, value)) for p in (r"[a-z]", r"[A-Z]", r"\d"))
    return (classes == 3 or (classes == 2 and len(value) >= 40)) and _shannon(value) >= 4.0


# Capitalised words of three letters or more, or a lowercase/UPPERCASE word standing alone between separators.
_NAME_WORD = re.compile(r"[A-Z][a-z]{2,}|(?<![A-Za-z])[a-z]{3,}(?![a-z])|[A-Z]{3,}(?![a-z])")


# A PowerShell command name: an approved verb, a hyphen, a noun of words (Microsoft Learn, "Approved Verbs for
# PowerShell Commands": Verb-Noun, Pascal case).
_POWERSHELL_COMMAND = re.compile(
    r"(?:Add|Approve|Assert|Backup|Block|Build|Checkpoint|Clear|Close|Compare|Complete|Compress|Confirm|Connect|"
    r"Convert|ConvertFrom|ConvertTo|Copy|Debug|Deny|Deploy|Disable|Disconnect|Dismount|Edit|Enable|Enter|Exit|"
    r"Expand|Export|Find|Format|Get|Grant|Group|Hide|Import|Initialize|Install|Invoke|Join|Limit|Lock|Measure|"
    r"Merge|Mount|Move|New|Open|Optimize|Out|Ping|Pop|Protect|Publish|Push|Read|Receive|Redo|Register|Remove|"
    r"Rename|Repair|Request|Reset|Resize|Resolve|Restart|Restore|Resume|Revoke|Save|Search|Select|Send|Set|Show|"
    r"Skip|Split|Start|Step|Stop|Submit|Suspend|Switch|Sync|Test|Trace|Unblock|Undo|Uninstall|Unlock|Unprotect|"
    r"Unpublish|Unregister|Update|Use|Wait|Watch|Write)-(?:[A-Z][a-z]+|[A-Z]{2,}(?=[A-Z][a-z]))+"
)


def _words_mostly(value: str) -> bool:
    """Four or more words (``PrimaryMenu``, ``header-``) that make up at least 85 % of the value: an
    identifier built of words — a generated value's letters fall in random case and do not split into words."""
    words = _NAME_WORD.findall(value)
    return sum(w[0].isupper() and w[1:].islower() for w in words) >= 4 and sum(map(len, words)) >= 0.85 * len(value)


def _tokenish(value: str) -> bool:
    """Some dot/colon-separated part looks generated: 8+ characters mixing letters and digits."""
    return any(
        len(part) >= 8 and any(c.isdigit() for c in part) and any(c.isalpha() for c in part)
        for part in re.split(r"[.:]", value)
    )


_PASSWORD_NAME = re.compile(r"(?i)passw(?:or)?d|passwd|pwd|pass(?:phrase)?\b|mot[_ ]de[_ ]passe")
# A shared secret's name — one that ends in `secret`, `secret_key` or `secret_key_base` (Django's SECRET_KEY,
# Flask's app.secret_key, Rails' secret_key_base, express-session's `secret:`, Strapi's JWT_SECRET, OAuth's
# client_secret): people choose these as they choose passwords, so a passphrase there is the secret. A name
# that only ends in `secret` after `existing`, `tls`, `pull`… (Helm's existingSecret, tlsSecret) names a
# Kubernetes Secret object, and its value is that object's name.
_SHARED_SECRET_NAME = re.compile(
    r"(?i)secret(?:[_-]?key(?:[_-]?base|[_-]?fallbacks)?)?[\"'`\]]*[ \t]*(?:=>|:|=)[ \t]*"
    r"(?:!!\w+[ \t]+)?\[?[ \t]*[\"'`]?$"
)
_SECRET_OBJECT_PREFIX = re.compile(r"(?i)(?:existing|tls|pull|cert|ca|sealed|external|ref|kube|k8s|image)[_.-]?$")


def _passphrase_place(text: str, start: int, value_start: int) -> bool:
    """The assignment's name (``text[start:value_start]``) is a password's or a shared secret's."""
    if _PASSWORD_NAME.search(text, start, value_start):
        return True
    m = _SHARED_SECRET_NAME.search(text, start, value_start)
    return bool(m) and not _SECRET_OBJECT_PREFIX.search(text, max(0, m.start() - 9), m.start())


_PASSPHRASE = re.compile(r"[A-Za-z]{3,}(?:-[A-Za-z]{3,})*(?:-\d{1,6})?")
_SECRET_WORD = re.compile(rf"(?i){SECRET_WORDS}")


def is_passphrase(value: str) -> bool:
    """Words joined by hyphens, three or more, or two or more and a number (``Lantern-Field-46``,
    ``correct-horse-battery-staple``): a memorable password; a credential word or a placeholder word in it
    (``my-api-key``, ``your-password-here``) makes it a name."""
    if not _PASSPHRASE.fullmatch(value):
        return False
    parts = value.split("-")
    words = parts[:-1] if parts[-1].isdigit() else parts
    if len(words) < (2 if len(words) < len(parts) else 3):
        return False
    return not any(_PLACEHOLDER_WORDS.fullmatch(p) or _SECRET_WORD.fullmatch(p) for p in parts)


def _plausible_secret_value(value: str, *, names: bool = True) -> bool:
    """``names=False``: the syntax says the value is a password (a CLI's password flag), so a value of words
    joined by separators (a passphrase) is not taken for a name."""
    value = value.strip()
    if len(value) < 4 or _PLACEHOLDER.match(value) or _PLACEHOLDER_WORDS.fullmatch(value):
        return False
    if is_not_a_secret(value, names=names):
        return False
    if re.fullmatch(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*\(.*\)?", value):  # a call: get_password(), os.urandom(24)
        return False
    if re.fullmatch(r"[a-z_][a-z0-9_]*(?:\.[a-z_][a-z0-9_]*)+", value) and not _tokenish(value):
        return False  # attribute access (cfg.db.password), not a dotted token (sat.yqm6hsi81e5d8wwy2029vv.h34gz…)
    if " " in value and len(value.split()) > 6:  # prose ("token is used to sign the requests we send …")
        return False
    if value.isdigit() and len(value) < 6:  # counts and ports: "passes = 1000"
        return False
    if re.fullmatch(r"[a-z]+", value) and len(value) < 8:
        return False
    return True


def is_placeholder_email(address: str) -> bool:
    """A documentation-domain (example.com, .test, .invalid…) or no-reply address: not personal data."""
    return bool(_EMAIL_PLACEHOLDER.search(address))


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# IBAN lengths per country, from SWIFT's IBAN Registry (ISO 13616): an IBAN of a registered country has exactly
# this many characters. Countries not listed are checked by their checksum alone.
_IBAN_LENGTH = {
    **dict.fromkeys(("NO",), 15),
    **dict.fromkeys(("BE",), 16),
    **dict.fromkeys(("DK", "FI", "FK", "FO", "GL", "NL", "SD"), 18),
    **dict.fromkeys(("MK", "SI"), 19),
    **dict.fromkeys(("AT", "BA", "EE", "KZ", "LT", "LU", "MN", "XK"), 20),
    **dict.fromkeys(("CH", "HR", "LI", "LV"), 21),
    **dict.fromkeys(("BG", "BH", "CR", "DE", "GB", "GE", "IE", "ME", "RS", "VA"), 22),
    **dict.fromkeys(("AE", "GI", "IL", "IQ", "OM", "SO", "TL"), 23),
    **dict.fromkeys(("AD", "CZ", "ES", "MD", "PK", "RO", "SA", "SE", "SK", "TN", "VG"), 24),
    **dict.fromkeys(("LY", "PT", "ST"), 25),
    **dict.fromkeys(("IS", "TR"), 26),
    **dict.fromkeys(("BI", "DJ", "FR", "GR", "IT", "MC", "MR", "SM"), 27),
    **dict.fromkeys(("AL", "AZ", "BY", "CY", "DO", "GT", "HU", "LB", "NI", "PL", "SV"), 28),
    **dict.fromkeys(("BR", "EG", "PS", "QA", "UA"), 29),
    **dict.fromkeys(("JO", "KW", "MU", "YE"), 30),
    **dict.fromkeys(("MT", "SC"), 31),
    **dict.fromkeys(("LC",), 32),
    **dict.fromkeys(("RU",), 33),
}


def iban_ok(iban: str) -> bool:
    s = iban.replace(" ", "").upper()
    if not 15 <= len(s) <= 34 or len(s) != _IBAN_LENGTH.get(s[:2], len(s)):
        return False
    rearranged = s[4:] + s[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|2131|1800|3[47]|3[068]|6(?:011|5|4[4-9]|2)|35|50|5[6-9]|1)")
_CA_SIN = re.compile(r"(?<![\d-])[1-79]\d{2}([ -]?)\d{3}\1\d{3}(?![\d-])")


def _card_ok(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and bool(_CARD_PREFIX.match(digits)) and luhn_ok(digits) and len(set(digits)) > 1


# A command continued on the next line: a backslash right before the line's end (POSIX shells), or a backtick
# (PowerShell) or a caret (cmd) after a blank there. The rules of ``secret_rules.toml`` read a command as one line
# (`gh secret set NAME \⏎ --body …`), so these are replaced by blanks of the same length: spans stay the text's.
_CONTINUATION = re.compile(r"\\\r?\n|(?<=[ \t])[`^]\r?\n")
# The characters a continuation ends in (the pattern judges the blank before a backtick or a caret).
_CONTINUATION_NEEDLES = tuple(c + end for c in "\\`^" for end in ("\n", "\r\n"))


def continued_lines_joined(text: str) -> str:
    """``text`` with each line continuation replaced by as many blanks (the same length, the same offsets)."""
    if not any(n in text for n in _CONTINUATION_NEEDLES):
        return text
    return _CONTINUATION.sub(lambda m: " " * len(m.group()), text)


def scan_rules(text: str) -> list[Finding]:
    """promptship's own rules (pure regex + checksums). Returns findings with spans into ``text``."""
    found: list[Finding] = []

    def add(kind: FindingKind, subtype: str, span: tuple[int, int], detector: str = "rules") -> None:
        found.append(Finding(kind, subtype, span[0], span[1], detector))

    folded = text.lower()
    one_line = continued_lines_joined(text)
    for subtype, needles, pattern, judged_whole, any_case in _COMPILED_TOKENS:
        if needles and not any(n in (folded if any_case else text) for n in needles):
            continue
        for m in pattern.finditer(one_line):
            # a rule with capture groups names its value: the first group that took part in the match
            group = next((g for g in range(1, pattern.groups + 1) if m.start(g) >= 0), 0)
            value = m.group(group)
            if value.lower() in _PROSE_AFTER_FLAG:
                continue  # "pass the -password flag", "run sqlcmd with -P when…": a sentence about the flag
            if not is_not_a_secret(value, names=not judged_whole):
                add("secret", subtype, m.span(group))
    # Case-insensitive alternations are ~5x slower in ``re`` than case-sensitive ones on lowercased text;
    # lowercasing keeps offsets unless a character changes length (then the (?i) patterns are used).
    low = folded
    lowered = len(low) == len(text)
    hay = low if lowered else text

    def ci(pattern: re.Pattern[str]) -> re.Pattern[str]:
        return _LOWERED[pattern] if lowered else pattern

    for m in ci(_ASSIGNMENT).finditer(hay):
        group = 1 if m.group(1) is not None else 2
        value = text[m.start(group) : m.end(group)]
        if group == 2 and _CODE_REFERENCE.fullmatch(value.rstrip(")}];")) and not _tokenish(value):
            continue  # `password: SecretStr`, `key = SESSION_KEY`, `secret: [env.KEY_A, …]`: a type or a name
        if group == 2 and _YAML_TAG.fullmatch(value) and text[m.end(group) : m.end(group) + 1] in (" ", "\t"):
            continue  # `password: !vault |`, `!secret db_password`, `!Ref DbPassword`: a tag before its node
        if _NOT_A_SECRET_NAME.search(text, m.start(), m.start(group)):
            continue  # credentialsId, secret_length, credentials.url: the name says what the value is
        if _ANTI_FORGERY.search(text, max(0, m.start() - 16), m.start(group)):
            continue  # csrf_token=…, authenticity_token: …: an anti-forgery value sent to every browser
        if _ARN_PREFIX.search(text, max(0, m.start() - 24), m.start()) or _ARN.match(value):
            continue  # arn:aws:secretsmanager:region:account:secret:name — a resource's name, not a credential
        if group == 2 and value.lower() in _FILLER_WORDS:
            continue  # "le mot de passe est désormais obligatoire": a word about time, not the value
        if _CODE_VALUE.search(value) or (group == 2 and _PROSE_VALUE.fullmatch(value)):
            continue  # `$(cat …)`, "token = ": code, not a value; unquoted lowercase words: prose
        # a passphrase (words joined by hyphens, NIST SP 800-63B's long memorable secrets) given to a password's
        # or a shared secret's name is that secret, not a name made of words
        passphrase = _passphrase_place(hay, m.start(), m.start(group)) and is_passphrase(value)
        if _plausible_secret_value(value, names=not passphrase) and not named_as_fake(text, m.start(group)):
            add("secret", "assigned_credential", m.span(group))
            if group == 1 and _LIST_OPENED.search(text, max(0, m.start(1) - 4), m.start(1)):
                place = _passphrase_place(hay, m.start(), m.start(group))
                item = _LIST_ITEM.match(text, m.end())
                while item:  # the list's other elements: `secret: ['…', '…']`
                    other = item.group(1)
                    if _plausible_secret_value(other, names=not (place and is_passphrase(other))):
                        add("secret", "assigned_credential", item.span(1))
                    item = _LIST_ITEM.match(text, item.end())
    for m in ci(_XML_CREDENTIAL).finditer(hay):
        value = text[m.start(2) : m.end(2)]
        passphrase = bool(_PASSWORD_NAME.search(m.group(1))) and is_passphrase(value.strip())
        if _plausible_secret_value(value, names=not passphrase):
            add("secret", "xml_credential", m.span(2))
    for m in ci(_COMPARED).finditer(hay):
        if _plausible_secret_value(text[m.start(1) : m.end(1)]):
            add("secret", "compared_credential", m.span(1))
    one_line_hay = hay if one_line is text else continued_lines_joined(hay)  # no continuation: no second look
    for pattern, subtype in ((_PROSE_PASSWORD, "password_in_prose"), (_CLI_PASSWORD, "cli_password")):
        for m in ci(pattern).finditer(one_line_hay if pattern is _CLI_PASSWORD else hay):
            if pattern is _CLI_PASSWORD:
                flag = hay.rfind("-p", m.start(), m.start(1))
                if text[flag : flag + 2] != "-p":  # `docker run -P` publishes ports; only -p is a password
                    continue
            value = text[m.start(1) : m.end(1)].rstrip(".,;)")
            if (
                re.search(r"[A-Za-z]", value)
                and re.search(r"[\d\W_]", value)
                and _plausible_secret_value(value, names=pattern is not _CLI_PASSWORD)
                and not _CODE_REFERENCE.fullmatch(value)
                and not value.startswith("//")  # `[PASSWORD] http://…`: the URL after a placeholder's colon
            ):
                add("secret", subtype, (m.start(1), m.start(1) + len(value)))
    for span in _plain_credentials(text, hay if lowered else None):
        add("secret", "plain_credential", span)
    for m in _URL_CREDENTIALS.finditer(text):
        # RFC 3986's userinfo `user:password`: the place says it is a password, so a passphrase is no name
        password = m.group(2)
        if not _PLACEHOLDER.match(password) and not is_placeholder_secret(password, names=not is_passphrase(password)):
            add("secret", "url_credentials", m.span(2))
    for pattern, subtype in ((_AUTH_HEADER, "auth_header"), (_BEARER, "bearer_token")):
        for m in pattern.finditer(text):
            if not _PLACEHOLDER.match(m.group(1)) and not is_placeholder_secret(m.group(1)):
                add("secret", subtype, m.span(1))
    for m in _CURL_USER.finditer(text):
        user, _, password = m.group(1).strip("\"'{}").partition(":")
        value = max(user.strip("\"'{}"), password.strip("\"'{}"), key=len)
        names = not is_passphrase(password.strip("\"'{}"))  # `-u user:Lantern-Field-46`: the password's place
        if _PLACEHOLDER_WORDS.fullmatch(password.strip("\"'{}") or "x") and _PLACEHOLDER_WORDS.fullmatch(
            user.strip("\"'{}") or "x"
        ):
            continue  # user:pass, username:password
        if len(value) >= 3 and not _PLACEHOLDER.match(value) and not is_placeholder_secret(m.group(1), names=names):
            add("secret", "basic_auth", m.span(1))
    random_check = _looks_random if ci(_ENTROPY_CONTEXT).search(hay) else _looks_random_anywhere
    public = public_spans(text)
    for m in _HIGH_ENTROPY.finditer(text):
        value = m.group(0)
        name, eq, rest = value.partition("=")
        if eq and rest and all(_NAME_SEGMENT.fullmatch(seg) for seg in re.split(r"[_-]+", name) if seg):
            value = rest  # `primaryKey=…`, `version=…`: judge the value, not the name glued to it
            if _NOT_A_SECRET_NAME.search(name + "=") or _ANTI_FORGERY.search(name):
                continue
        if _in_url_path(text, m.start()) or (len(value) > 100 and random_check is _looks_random_anywhere):
            continue  # ids in URL paths (documents, assets); long blobs with no credential word (images, certs)
        if text.endswith(_ELLIPSES, 0, m.start()) and text.startswith(_ELLIPSES, m.end()):
            continue  # "…6wqX…": an excerpt cut from a longer blob on both sides, not a whole value
        if public and _inside(public, m.start(), m.end()):
            continue  # a public key, a certificate, a signature
        if is_jwt_header_only(value):
            continue  # a JOSE header alone
        if _ANTI_FORGERY.search(text, max(0, m.start() - 40), m.start()):
            continue  # name="authenticity_token" value="…": an anti-forgery value sent to every browser
        if re.match(r"(?i)sha(?:1|224|256|384|512)-", value) or _DIGEST_PREFIX.search(text, 0, m.start()):
            continue
        if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", value) and _DIGEST_WORDS.search(
            text, max(0, m.start() - 40), m.start()
        ):
            continue
        if _UUID.fullmatch(value):
            # ids are everywhere in logs and JSON; a UUID is a secret only as the value of a key-ish name
            if _KEY_NAME_BEFORE.search(text, max(0, m.start() - 48), m.start()):
                add("secret", "uuid_credential", m.span())
            continue
        if _words_mostly(value):
            continue  # `header-nav_PrimaryMenuDropdownLinkV2`: a CamelCase name, not a generated value
        if _POWERSHELL_COMMAND.fullmatch(value):
            continue  # `ConvertTo-SecureString`: a PowerShell command's name
        if random_check(value) and not is_not_a_secret(value) and not named_as_fake(text, m.start()):
            add("secret", "high_entropy", m.span())

    for m in _EMAIL.finditer(text):
        if not is_placeholder_email(m.group(0)):
            add("pii", "email", m.span())
    ibans = iban_shaped_spans(text) + arn_account_spans(text)  # their digits are no one's phone or id
    for pattern in _PHONE_PATTERNS:
        for m in pattern.finditer(text):
            if 8 <= sum(c.isdigit() for c in m.group(0)) <= 15 and not _inside(ibans, *m.span()):
                add("pii", "phone", m.span())
    for m in ci(_PHONE_CONTEXT).finditer(hay):
        digits = sum(c.isdigit() for c in m.group(1))
        if 8 <= digits <= 15 and (not m.group(1).isdigit() or 9 <= digits <= 12):
            add("pii", "phone", m.span(1))
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group(0))
        if _card_ok(digits):
            add("pii", "credit_card", m.span())
    for m in _IBAN.finditer(text):
        candidate = m.group(1).rstrip()
        # the match may have swallowed following words; shrink until the checksum holds
        compact = candidate.replace(" ", "")
        for length in range(len(compact), 14, -1):
            if iban_ok(compact[:length]):
                add("pii", "iban", m.span(1))
                break
    for m in _CA_SIN.finditer(text):
        if luhn_ok(re.sub(r"\D", "", m.group(0))):
            add("pii", "ca_sin", m.span())
    for m in _SSN.finditer(text):
        if m.group(1) or ci(_SSN_CONTEXT).search(hay):
            add("pii", "us_ssn", m.span())
    for m in _NINO.finditer(text):
        add("pii", "uk_nino", m.span())
    for m in _FR_NIR.finditer(text):
        compact = re.sub(r"\D", "", m.group(0).replace("2A", "19").replace("2B", "18"))
        if len(compact) == 15 and 97 - int(compact[:13]) % 97 == int(compact[13:]):
            add("pii", "fr_nir", m.span())
    for m in ci(_ID_CONTEXT).finditer(hay):
        if sum(c.isdigit() for c in m.group(1)) >= 5:
            add("pii", "national_id", m.span(1))
    for m in ci(_CONFIDENTIAL).finditer(hay):
        add("confidential", "marker", m.span())
    return found


def _lowered(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """The same pattern without IGNORECASE, for lowercased text (its classes already include a-z)."""
    return re.compile(pattern.pattern.replace("(?i)", "", 1), pattern.flags & ~re.IGNORECASE)


_LOWERED: dict[re.Pattern[str], re.Pattern[str]] = {
    p: _lowered(p)
    for p in (
        _ASSIGNMENT,
        _COMPARED,
        _ENTROPY_CONTEXT,
        _PHONE_CONTEXT,
        _SSN_CONTEXT,
        _ID_CONTEXT,
        _CONFIDENTIAL,
        _PROSE_PASSWORD,
        _CLI_PASSWORD,
        _XML_CREDENTIAL,
    )
}

# A rule whose pattern reads some of its text in any case (`(?i:psexec)`: Windows commands and PowerShell parameters
# are case-insensitive) tests its needles against the lowercased text, so `Schtasks` or `-PassWord` is not skipped
# for want of the needle's exact case; the other rules test them as written.
_COMPILED_TOKENS: tuple[tuple[str, tuple[str, ...], re.Pattern[str], bool, bool], ...] = tuple(
    (s, tuple(x.lower() for x in n) if "(?i" in p else n, re.compile(p), whole, "(?i" in p)
    for s, n, p, whole in _TOKEN_RULES
)


def gate_rules(text: str) -> GateResult:
    """The gate with promptship's own rules only (the adapter adds detect-secrets, presidio, gitleaks)."""
    return GateResult.of(scan_rules(text))


def is_placeholder_secret(value: str, *, names: bool = True) -> bool:
    """A documentation or test placeholder, not a credential: a masked run (``xxxx``, ``****``, ``<…>``),
    a template (``${VAR}``, ``{{ x }}``, ``[PASSWORD]``), a documentation marker (``EXAMPLE``, ``fake``,
    ``dummy``, ``your…``, ``…here``), a counting or alphabet run (``123456789``, ``abcdefghij``), a run of
    at most four distinct characters (``aaaa…``), or words joined into a name (``insert_key_here``, ``real_key``).
    Every layer applies this one policy to the value it found; the context decides nothing here — a value that
    looks real is kept even when its line says "test"."""
    v = value.strip().strip("\"'`")
    if not v or _PLACEHOLDER.match(v) or _MASKED.search(v) or _TEMPLATE.search(v) or _doc_marker(v):
        return True
    body = _TOKEN_PREFIX.sub("", v)
    if not any(c.isalnum() for c in body) or _SEQUENCE.search(body):
        return True
    if len(body) >= 12 and len(set(body)) <= 4:
        return True  # aaaaaaaa…, 0000-0000-0000 (abcd1234abcd1234… is kept: detect-secrets' tests call it a key)
    if is_counting_run(body):
        return True  # ghs_3456789012345: the digits one types when a number is needed
    return names and _identifier_like(v)


def is_counting_run(value: str) -> bool:
    """Eight digits or more counting up (``12345678``, ``3456789012``) or one digit repeated (``44444444``): the
    number one types when a form or an example needs one, not a generated value."""
    if len(value) < 8 or not value.isascii() or not value.isdigit():
        return False
    return len(set(value)) == 1 or all((int(b) - int(a)) % 10 == 1 for a, b in zip(value, value[1:], strict=False))


# The name a value is given says it is not a real one (`fakeToken = …`, `invalid_key: …`, `wrongLength := …`).
# Test credentials (`test_key`, `sk_test_…`) are real credentials of a test account: "test" is not such a word.
_FAKE_NAME = re.compile(
    r"(?i)(?:fake|dummy|example|sample|mock|invalid|wrong|bogus|non_?matching|unrelated)[\w.-]*[\"'`]?[ \t]*"
    r"(?::=|=>|==|=|:)[ \t]*[@\"'`]?$"
)


def named_as_fake(text: str, start: int) -> bool:
    """The name the value at ``start`` is assigned to (on its line) says the value is fake or an example."""
    line_start = text.rfind("\n", 0, start) + 1
    return bool(_FAKE_NAME.search(text, max(line_start, start - 80), start))


# --- values that are not credentials by design --------------------------------------------------------------

# Stripe's publishable keys are meant for client-side code ("can be publicly accessible in your web or mobile
# app", Stripe docs, API keys); the secret (sk_) and restricted (rk_) keys are the credentials.
_PUBLIC_TOKEN = re.compile(r"^pk_(?:live|test)_[A-Za-z0-9]{10,}$")
# The names a JOSE header may hold (RFC 7515 §4.1, RFC 7519 §5): a header alone says how to check a token,
# it grants nothing.
_JOSE_HEADER_NAMES = frozenset({"alg", "typ", "cty", "kid", "jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256", "crit"})


def _b64url_json(segment: str) -> Any:
    """The JSON value a base64url segment encodes, or None (not base64url, not UTF-8, not JSON)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", segment):
        return None
    try:
        raw = base64.urlsafe_b64decode(segment.rstrip("=") + "=" * (-len(segment.rstrip("=")) % 4))
        return json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, binascii.Error):
        return None


def is_jwt_header_only(value: str) -> bool:
    """``eyJhbGciOi…`` alone: a JOSE header (algorithm, type, key id), not a token."""
    header = _b64url_json(value.strip().strip("\"'`"))
    return isinstance(header, dict) and "alg" in header and set(header) <= _JOSE_HEADER_NAMES


def is_public_value(value: str) -> bool:
    """A value that is public by design, so it is no secret wherever it appears: a Stripe publishable key, a JWT
    header on its own."""
    v = value.strip().strip("\"'`")
    return bool(_PUBLIC_TOKEN.match(v)) or is_jwt_header_only(v)


def is_not_a_secret(value: str, *, names: bool = True) -> bool:
    """The one test every layer applies to a value it found: a placeholder (``is_placeholder_secret``) or a value
    public by design (``is_public_value``). ``names=False``: a value in a provider's fixed-length format, whose
    body is not judged as words joined into a name."""
    return is_placeholder_secret(value, names=names) or is_public_value(value)


# Armoured blocks that hold public material (RFC 4880 public keys and signatures, RFC 7468 certificates and
# public keys, OpenSSH public keys): their base64 lines are not secrets.
_PUBLIC_BLOCK = re.compile(
    r"-----BEGIN (?:PGP PUBLIC KEY BLOCK|PGP SIGNATURE|CERTIFICATE|TRUSTED CERTIFICATE|X509 CRL|CERTIFICATE REQUEST|"
    r"NEW CERTIFICATE REQUEST|PUBLIC KEY|RSA PUBLIC KEY|SSH2 PUBLIC KEY)-----(?:.*?-----END [A-Z0-9 ]+-----|.*\Z)"
    r"|\b(?:ssh-(?:rsa|dss|ed25519)|ecdsa-sha2-nistp(?:256|384|521)|sk-ssh-ed25519@openssh\.com) AAAA[A-Za-z0-9+/=]+",
    re.DOTALL,
)
# Anti-forgery values (OWASP CSRF cheat sheet: a per-session value the server sends to the browser in every
# form) and nonces: handed to whoever loads the page, they grant nothing on their own.
# An Amazon Resource Name (AWS docs, 'Identify AWS resources with ARNs': arn:partition:service:region:account:resource)
# names a resource: the ARN is no credential, and its service field (`secretsmanager`) is no credential's name.
_ARN_PREFIX = re.compile(r"\barn:aws(?:-[a-z]+)*:$")
_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:[a-z0-9-]+:[a-z0-9-]*:\d{12}:")
_ANTI_FORGERY = re.compile(r"(?i)(?:csrf|xsrf|authenticity)[_-]?(?:token|middlewaretoken)?|\bnonce")


def public_spans(text: str) -> list[tuple[int, int]]:
    """Where ``text`` holds armoured public material (public keys, certificates, signatures)."""
    if "-----BEGIN" not in text and "AAAA" not in text:
        return []
    return [m.span() for m in _PUBLIC_BLOCK.finditer(text)]


# An IBAN-shaped run (ISO 13616: country, two check digits, groups of four): its digits belong to an account
# number — valid or not, no other number is read inside it (a phone, a national id).
_IBAN_SHAPED = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")


def iban_shaped_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _IBAN_SHAPED.finditer(text)]


# The account-id field of an Amazon Resource Name (AWS docs, 'Amazon Resource Names': arn:partition:service:
# region:account-id:resource; the account id is 12 digits). AWS docs ('View AWS account identifiers'): account
# ids "are not considered secret, sensitive, or confidential information" — and they are no one's personal number.
_ARN_ACCOUNT = re.compile(r"\barn:aws[\w-]*:[\w-]+:[\w-]*:(\d{12}):")


def arn_account_spans(text: str) -> list[tuple[int, int]]:
    """Where ``text`` holds an ARN's account id: no phone or national id is read there."""
    if "arn:aws" not in text:
        return []
    return [m.span(1) for m in _ARN_ACCOUNT.finditer(text)]


def _inside(spans: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    return any(a <= start and end <= b for a, b in spans)


# The end of a credential-looking name that says its value is something else: an id, a length, a location.
_NOT_A_SECRET_NAME = re.compile(
    r"(?i)(?:id|ids|_?length|_?len|_?size|_?name|_?file|_?path|_?dir|\.?url|_?uri|_?type|_?version|_?count)"
    r"[\"'`]?\s*(?:[:=]{1,3}|=>)?\s*(?:!!\w+\s+)?\[?\s*[\"'`@]?$"
)
_LIST_OPENED = re.compile(r"\[[ \t]*(?:b|r|u|f|@)?[\"'`]$")
_LIST_ITEM = re.compile(r"[ \t]*,[ \t]*(?:b|r|u|f|@)?[\"'`]([^\"'`\n]{4,300})[\"'`]")
# A YAML tag (YAML 1.2: `!local` or `!!global` before a node): Ansible's `!vault` (an encrypted block), Home
# Assistant's `!secret name` (a reference into secrets.yaml), CloudFormation's `!Ref`/`!Sub`.
_YAML_TAG = re.compile(r"!{1,2}[A-Za-z][\w-]*")
_CODE_VALUE = re.compile(r"^\$\(|^[a-z]+ [a-z-]+ /|\s[:=]{1,2}\s*$|[:=]$")
_PROSE_VALUE = re.compile(r"[a-z]+(?: [a-z']+){1,5}")
_URL_PATH_START = re.compile(r"(?:https?:)?//[^\s/]+/|(?:src|href)=[\"']\.?/")


def _in_url_path(text: str, start: int) -> bool:
    """The run starts inside the path of a URL (after its host) — not in its query string."""
    line_start = text.rfind("\n", 0, start) + 1
    prefix = text[max(line_start, start - 200) : start + 1]
    ends = [m.end() for m in _URL_PATH_START.finditer(prefix)]
    return bool(ends) and not re.search(r"[\s?#&\"'<>]", prefix[ends[-1] :])


# Credentials in plain words (English, French): a password, PIN, passphrase or recovery code given after such a
# word, with or without ":"/"=" ("the staging login is admin / password hunter2", "mot de passe : Chaton#88",
# "PIN 4821", "code de récupération 5KQ9-22XP"). Group 1 = the word, 2 = a connector (is/est/:/=), 3 = value.
# A wallet's recovery (seed, mnemonic) phrase: BIP-39 writes it as 12 to 24 words; a run of eight or more words
# closing the clause is taken for one, and nothing shorter.
_RECOVERY_WORDS = r"(?:recovery|seed|backup|mnemonic) phrase|mnemonic|phrase (?:de récupération|mnémonique)"
_RECOVERY_WORD = re.compile(_RECOVERY_WORDS)
_PLAIN_WORD = (
    r"(?P<word>pass(?:word|wd|phrase|code)|pwd|pass|pin(?: code)?|code pin|(?:recovery|backup) codes?|"
    r"mot de passe|mdp|phrase (?:secrète|de passe)|codes? (?:de récupération|de secours|confidentiel)|"
    rf"{_RECOVERY_WORDS})"
)
_RECOVERY_QUOTED = re.compile(  # in quotes, where it is longer than a quoted password may be
    rf"(?i)(?<![\w-])(?:{_RECOVERY_WORDS})(?![\w-])[^\n\"'`«“]{{0,40}}?[\"'`«“][ \t]*"
    r"(?P<quoted>[^\W\d_]+(?:[ \t]+[^\W\d_]+){7,23})[ \t]*[\"'`»”]"
)
# "is now", "est désormais": a word about time between the connector and the value
_FILLER_WORDS = ("now", "still", "currently", "already", "désormais", "maintenant", "toujours", "actuellement", "déjà")
_PLAIN_FILLER = rf"(?:[ \t]*(?<![\w-])(?:{'|'.join(_FILLER_WORDS)})(?![\w-]))?"
_PLAIN_CREDENTIAL = re.compile(
    rf"(?i)(?<![\w-]){_PLAIN_WORD}(?![\w-])"
    r"(?P<conn>[^\n.:=?!]{0,40}?(?:(?<![\w'])(?:is|was|est|sera|c['’]est)(?![\w'])[ \t]*:?|[ \t]*[:=]))?"
    rf"{_PLAIN_FILLER}[ \t]*"
    r"(?:[\"'`«“][ \t]*(?P<quoted>[^\"'`»”\n]{3,64}?)[ \t]*[\"'`»”]|(?P<value>[^\s\"'`,;]{3,64}))"
)
# The value a password is set to ("set the admin password to …", "password changed to …", "mot de passe admin
# en …"), an API key or token in prose ("the wifi key is …", "la clé d'API est …", "le jeton d'accès : …"), and a
# user / password pair after a login word ("the staging login is deploy / …", "identifiants : recette / …",
# "log in as ops with …"): in these the value must look like a password (letters with digits or symbols, or a
# passphrase), since the same sentences also end in ordinary words ("set the password to expire").
_PLAIN_SET_TO = re.compile(
    rf"(?i)(?<![\w-]){_PLAIN_WORD}(?![\w-])(?:[ \t]+[\w-]+)?[ \t]+(?:to|en|devient|becomes)[ \t]+"
    r"[\"'`«“]?[ \t]*(?P<value>[^\s\"'`»”,;]{6,64})"
)
_KEY_WORD = (
    r"(?:(?:wi-?fi|wpa2?|api|access|secret|licen[cs]e) key|(?:api|access|auth) token|"
    r"clé (?:d['’]api|api|wi-?fi|wpa2?|d['’]accès|secrète|de licence)|jeton(?: d['’](?:accès|api))?)"
)
_LOGIN_WORDS = (
    r"(?:logins?|log[ -]?in|sign[ -]?in|creds|credentials|identifiants?|connexion|connecte[sz]?-(?:toi|vous))"
)
_PLAIN_KEY = re.compile(
    rf"(?i)(?<![\w-]){_KEY_WORD}(?![\w-])"
    r"[^\n.:=?!]{0,20}?(?:(?<![\w'])(?:is|was|est|sera|c['’]est)(?![\w'])|[ \t]*[:=])"
    rf"{_PLAIN_FILLER}[ \t]*[\"'`«“]?[ \t]*(?P<value>[^\s\"'`»”,;]{{6,128}})"
)
# One scan finds where any of the three may start; each is then matched there.
_PLAIN_OPENER = re.compile(rf"(?i)(?<![\w-])(?:{_PLAIN_WORD}|(?P<key>{_KEY_WORD})|(?P<login>{_LOGIN_WORDS}))(?![\w-])")
# `user / password` (blanks around the slash: `auth/v2` is a path), `user:password`, `user with password`,
# starting within 40 characters of the login word
_LOGIN_PAIR = re.compile(
    r"(?<![\w.@+-])(?P<user>[A-Za-z][\w.@+-]{1,40})(?:[ \t]+/[ \t]+|:(?=\S)|[ \t]+(?:with|using|avec)[ \t]+)"
    r"(?P<value>[^\s\"'`»”,;)]{4,64})"
)
_LOWERED.update({p: _lowered(p) for p in (_PLAIN_SET_TO, _PLAIN_KEY, _PLAIN_OPENER)})
# Words that follow a credential word in ordinary sentences about credentials, not a credential.
_PLAIN_STOP = frozenset(
    """a an the this that it its to of for in on at by with from as and or not no must should can will may be
    is are was set reset field fields form input hash hashed hashes stored wrong incorrect invalid correct
    required empty missing expired changed change used needed sent shown page screen prompt dialog policy
    length strength manager managers protected entry entered before after again rules rule has have
    le la les un une de des du au aux doit est et ou pas sur pour par avec dans incorrect incorrecte
    demandé demandée requis requise obligatoire oublié vide haché hachée stocké changé changer modifier
    utilisateur utilisateurs compte champ formulaire saisi saisie celui celle ceux celles cela ça ceci qui que
    dont""".split()
)
# Words that follow a flag or a keyword in a sentence about it ("the -password flag", "-P when SQL auth is on"),
# not its value.
_PROSE_AFTER_FLAG = _PLAIN_STOP | frozenset(
    "flag flags option options argument arguments parameter parameters switch when if then only instead here".split()
)
# Words that carry a sentence on after a credential word's first word ("is rotated every quarter", "is typed twice
# when …"), so the words after the connector are prose, not a passphrase written with blanks.
_CLAUSE_JOIN = frozenset("and but so or then et mais donc ou puis alors".split())
_RUN_STOP = (
    _PLAIN_STOP
    | _CLAUSE_JOIN
    | frozenset(_FILLER_WORDS)
    | frozenset(
        """when while if because since until unless every each all both twice once only also too very than
    quand lorsque lorsqu si parce car chaque tous toutes tout deux fois aussi très trop plus moins""".split()
    )
)
_RUN_WORD = re.compile(r"[ \t]+([^\W\d_]+)")
_CLAUSE_END = re.compile(r"[ \t]*(?:[.,;:!?()\"'`»”]|$)", re.MULTILINE)


def _word_run(text: str, end: int) -> tuple[int, int, bool]:
    """The words of letters that follow ``end`` in its clause, none of them a word of prose: how many, where
    they end, and whether the clause ends there (``velvet harbor pickle summit,``, ``… summit and``)."""
    count = 0
    while (w := _RUN_WORD.match(text, end)) and w.group(1).lower() not in _RUN_STOP:
        count, end = count + 1, w.end()
    joined = _RUN_WORD.match(text, end)  # "… pickle summit and the user is ops": a new clause
    return count, end, bool(_CLAUSE_END.match(text, end) or joined and joined.group(1).lower() in _CLAUSE_JOIN)


_LOGIN_CONTEXT = re.compile(
    r"(?i)\b(?:user(?:name)?|login|log in|sign in|account|identifiant|utilisateur|compte|admin|root)\b"
)


# lowercase words joined by underscores, one of them naming a credential (``real_key``, ``db_password_prod``,
# ``api_token``): how code names the variable that holds it, not the value
_SNAKE_NAME = re.compile(
    r"(?=.*(?<![a-z])(?:key|secret|password|passwd|pass|pwd|token|credentials?|auth)(?![a-z]))[a-z]{2,}(?:_[a-z]{2,})+"
)


def _looks_like_password(value: str) -> bool:
    """Letters with digits or symbols other than a hyphen (`hunter2`, `Fjord7-Saber`; not `read-only`) or a
    passphrase, and no placeholder: the place says it is a password, so it is not judged as a name."""
    mixed = bool(re.search(r"[A-Za-z]", value) and re.search(r"[\d!#$%&*+=?@^~]", value))
    return (
        (mixed or is_passphrase(value))
        and value[0] not in "-/"
        and not is_masked_value(value)
        and not _SNAKE_NAME.fullmatch(value)
        and _plausible_secret_value(value, names=False)
    )


def _plain_values(hay: str, lowered: bool) -> Iterator[re.Match[str]]:
    """The candidates of the value-must-look-like-a-password sentences (``_PLAIN_SET_TO`` and its kin), read in
    ``hay`` (the lowercased text when ``lowered``: the same offsets, and faster without IGNORECASE)."""

    def ci(pattern: re.Pattern[str]) -> re.Pattern[str]:
        return _LOWERED[pattern] if lowered else pattern

    for word in ci(_PLAIN_OPENER).finditer(hay):
        if word.group("login") is None:
            found = ci(_PLAIN_KEY if word.group("key") else _PLAIN_SET_TO).match(hay, word.start())
            if found:
                yield found
            continue
        line_end = hay.find("\n", word.end())
        for pair in _LOGIN_PAIR.finditer(hay, word.end(), len(hay) if line_end < 0 else line_end):
            if pair.start() > word.end() + 40:
                break
            yield pair


def _plain_credentials(text: str, hay: str | None = None) -> list[tuple[int, int]]:
    """``hay``: ``text`` lowercased, when lowercasing kept every offset."""
    spans: list[tuple[int, int]] = []
    for m in _plain_values(text if hay is None else hay, hay is not None):
        value = text[m.start("value") : m.end("value")].rstrip(".,;:)")
        if _looks_like_password(value):
            spans.append((m.start("value"), m.start("value") + len(value)))
    for m in _PLAIN_CREDENTIAL.finditer(text):
        group = "quoted" if m.group("quoted") is not None else "value"
        value = m.group(group).rstrip(".,;:)")
        word = m.group("word").lower()
        if (
            len(value) < 3
            or value.lower() in _PLAIN_STOP
            or not any(c.isalnum() for c in value)
            or value[0] in "-/"  # a command-line flag (`--digest`), a path or a URL
            or _YAML_TAG.fullmatch(value)  # `password: !!str …`, `!vault |`, `!Sub '…'`: a tag before its node
            and text[m.start(group) + len(value) : m.start(group) + len(value) + 1] in (" ", "\t")
            or m.start(group) == m.end("word")  # glued to the word: `password.txt`, `password[i]`: code
            or is_masked_value(value)
            or _SNAKE_NAME.fullmatch(value)
            or _CODE_REFERENCE.fullmatch(value)
            and ("." in value or "(" in value or "[" in value)
        ):
            continue
        start = m.start(group)
        recovery = bool(_RECOVERY_WORD.fullmatch(word))
        if group == "value" and m.group("conn") is not None and value.isalpha():
            # more words after the first: a passphrase written with blanks, a recovery phrase, or a sentence
            more, run_end, closes = _word_run(text, start + len(value))
            if recovery:
                if closes and more >= 7:
                    spans.append((start, run_end))
                continue
            if more and closes and (more >= 2 or not value.islower()):
                spans.append((start, run_end))  # three words or more, or capitalised: the whole run
                continue
            if (more or not closes) and value.islower():  # "is rotated every quarter", "est trop courte": prose
                continue
        elif recovery:
            continue  # a quoted one: below
        has_digit = any(c.isdigit() for c in value)
        if word.startswith("pin") or word == "code pin" or word == "passcode":
            if not re.fullmatch(r"\d{4,8}", value):
                continue
        elif "code" in word:  # recovery / backup codes: groups with digits
            if not (has_digit and len(value) >= 6):
                continue
        elif m.group("conn") is None:  # "password hunter2": no connector, the value must look like one
            mixed = re.search(r"[A-Za-z]", value) and re.search(r"[\d\W_]", value)
            login = _LOGIN_CONTEXT.search(text, max(0, m.start() - 80), m.start())
            if word == "pass" and not login:
                continue  # "pass" is also a verb and a Python statement
            if not (mixed or (login and len(value) >= 5 and value.isalpha())):
                continue
        spans.append((start, start + len(value)))
        if "code" in word:  # more codes after the first: "codes 3f9k-2m1q 8d7s-0p4x"
            tail = re.match(r"(?:[ \t,]+[A-Za-z0-9]{3,8}(?:-[A-Za-z0-9]{3,8})+)+", text[start + len(value) :])
            if tail:
                spans.append((start + len(value), start + len(value) + tail.end()))
    lowered = text.lower() if hay is None else hay
    if "phrase" in lowered or "mnem" in lowered:
        spans.extend(m.span("quoted") for m in _RECOVERY_QUOTED.finditer(text))
    return spans


def is_masked_value(value: str) -> bool:
    """The weaker test for a value a credential word introduces in prose ("the passphrase is
    correct-horse-battery"): masked runs, templates and documentation markers only — words are allowed."""
    v = value.strip().strip("\"'`")
    return not v or bool(_PLACEHOLDER.match(v) or _MASKED.search(v) or _TEMPLATE.search(v) or _doc_marker(v))


_MASKED = re.compile(r"(?i)x{4,}|\*{3,}|•{3,}|#{4,}|\.{3}|<[^<>]{1,60}>|(?<![A-Za-z0-9])(?:0{6,}|1{6,}|9{6,})")
_TEMPLATE = re.compile(
    r"\$\{\{?\s*[A-Za-z_][\w.:-]*\s*\}|\{\{\s*[\w.-]+\s*\}\}|\$\([a-z]|%\(\w+\)s|\[[A-Z_ ]{3,}\]"
    r"|^\{[A-Za-z_]+\}$|^\$[A-Za-z_]\w*$"
)
_DOC_MARKER = re.compile(
    r"(?i)example|fake|dummy|sample|placeholder|redacted|changeme|insert|replace[_-]?me|"
    r"your[_-]?(?:own|real|api|secret|token|key|pass)|(?:here|goes[_-]?here)$|^(?:my|some|the|a)[_-]"
)


_ONE_WORD_MARKERS = frozenset({"example", "fake", "dummy", "sample", "placeholder", "redacted", "insert"})


def _doc_marker(value: str) -> bool:
    """A documentation marker, a one-word marker written as words are (``EXAMPLE``, ``fake``, ``Dummy``) — not
    the same letters in the mixed case of a generated run (``…Lx9FaKe``: random letters that spell it)."""
    for m in _DOC_MARKER.finditer(value):
        word = m.group(0)
        if word.lower() not in _ONE_WORD_MARKERS or word.islower() or word.isupper() or word.istitle():
            return True
    return False


# a character set written out (the alphabet, or digits then the alphabet): a charset constant, not a key
_SEQUENCE = re.compile(r"(?i)abcdefghijklmnopq|0123456789abcdefghij")
# a provider's prefix: letters and a separator (``ghs_``, ``sk_live_``, ``glpat-``), or GitLab's runner
# registration prefix GR1348941 (GitLab docs, 'Token overview')
_TOKEN_PREFIX = re.compile(r"^[A-Za-z]{2,8}[_-](?:[A-Za-z]{2,8}[_-])?|^[A-Za-z]{2,8}\.|^GR1348941")
# possessive quantifiers: a long lowercase run must not be split every possible way (exponential backtracking)
_NAME_SEGMENT = re.compile(r"(?:[A-Z]{2,12}+(?![a-z])|[A-Z]?+[a-z]{2,}+)++\d{0,4}+")


def _identifier_like(value: str) -> bool:
    """Words joined by separators (``insert_key_here``, ``checking_Length-Is``, ``struct_X509_pubkey_st``):
    a name, not a generated value. Random tokens do not split into pronounceable chunks."""
    segments = [seg for seg in re.split(r"[_\-./=]+", value) if seg]
    if len(segments) < 2:
        return False
    long_words = 0
    for seg in segments:
        if _NAME_SEGMENT.fullmatch(seg):
            long_words += len(seg) >= 4 and any(c.islower() for c in seg) or seg.isupper() and len(seg) >= 3
        elif len(seg) > 4:
            return False
    return long_words >= 1


_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# OpenAI's messages of these roles carry content (an assistant's may be only tool calls). Without it, LiteLLM's
# translation of the request raised inside the provider call (KeyError 'content'): a 502, retried, for a client's
# mistake (found by schemathesis against the gateway's OpenAPI description)
_CONTENT_REQUIRED = frozenset({"system", "developer", "user", "tool"})
# OpenAI's content part types; a part of another (or no) type made LiteLLM raise a bare Exception before any call
# (a 500; schemathesis)
CONTENT_PART_TYPES = ("text", "image_url", "input_audio", "file", "refusal")


def chat_request_problem(body: dict[str, Any]) -> str | None:
    """What makes ``body`` not an OpenAI chat request the gateway can gate and forward (None: nothing).

    Checked at the door, before the gate reads the request, so a malformed one is a 400 naming the field —
    never a crash — and nothing is sent anywhere."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty array"
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            return f"{where} must be an object"
        if m.get("role") not in _ROLES:
            return f"{where}.role must be one of {', '.join(sorted(_ROLES))}"
        content = m.get("content")
        if content is None and m["role"] in _CONTENT_REQUIRED:
            return f"{where}.content is required for a {m['role']} message"
        if content is not None and not isinstance(content, str | list):
            return f"{where}.content must be a string, an array of parts or null"
        # a bare string as a part (OpenAI refuses it too) made LiteLLM raise inside its prompt code for every
        # provider (AttributeError: 'str' object has no attribute 'get'): a 502 after every group of the chain
        if isinstance(content, list) and not all(isinstance(p, dict) for p in content):
            return f"{where}.content parts must be objects"
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") not in CONTENT_PART_TYPES for p in content
        ):
            return f"{where}.content parts need a type: one of {', '.join(CONTENT_PART_TYPES)}"
        # an image or audio part without its data made LiteLLM's token counter or its Ollama prompt code fail
        # (for audio, after the provider had answered): a 502 (schemathesis)
        for j, part in enumerate(content if isinstance(content, list) else []):
            kind = part.get("type")
            data = part.get(kind) if isinstance(kind, str) else None
            if kind == "image_url" and not (isinstance(data, str) or isinstance(data, dict) and "url" in data):
                return f'{where}.content[{j}] is an image_url part: it needs "image_url": {{"url": ...}}'
            if kind == "input_audio" and not isinstance(data, dict):
                return f'{where}.content[{j}] is an input_audio part: it needs "input_audio": {{"data", "format"}}'
        calls = m.get("tool_calls")
        if calls is not None:
            if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
                return f"{where}.tool_calls must be an array of objects"
            if not all(isinstance(c.get("function", {}), dict) for c in calls):
                return f"{where}.tool_calls[].function must be an object"
        for key in ("function_call",):
            if m.get(key) is not None and not isinstance(m.get(key), dict):
                return f"{where}.{key} must be an object"
    tools = body.get("tools")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        return "tools must be an array of objects"
    # a tool that is not {"type": "function", "function": {"name": ...}} made LiteLLM raise inside the provider
    # call ('str' object has no attribute 'get'): a 502 (schemathesis)
    for i, t in enumerate(tools or []):
        function = t.get("function")
        if t.get("type") != "function" or not isinstance(function, dict) or not isinstance(function.get("name"), str):
            return f'tools[{i}] must be {{"type": "function", "function": {{"name": …}}}}'
    if tools and not all(isinstance(t.get("function", {}), dict) for t in tools):
        return "tools[].function must be an object"
    for key, kinds in (("model", (str,)), ("stream", (bool,)), ("max_tokens", (int,)), ("temperature", (int, float))):
        value = body.get(key)
        if value is not None and (not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds):
            return f"{key} has the wrong type"
    return None
