"""The sensitive-data scanner: promptship's own rules + detect-secrets + presidio-analyzer, run together.

``SensitiveDataScanner`` is built once (it loads detect-secrets' plugins and presidio's recognizers, ~1 s)
and then scans texts or whole OpenAI-format requests. Its findings are domain ``Finding`` values; no vendor
object leaves this module.

Layers (each can be switched off, the benchmark measures each):
- ``rules``: ``promptship.domain.gate.scan_rules`` (token formats, assignments, URLs, PII with checksums,
  confidentiality markers).
- ``detect_secrets``: Yelp's detect-secrets 1.5 plugins through its line-based scan (the one that applies
  its heuristic filters), inside one ``default_settings()`` kept open while any scanner lives.
- ``kingfisher``: the built-in catalogue of Kingfisher (``kingfisher-secret-scanner``, MongoDB, Apache-2.0):
  ~490 rules of ~300 providers (Betterleaks' rules and Google's Veles detectors) compiled into one vectorscan
  database and run in memory, offline (scanning never uses the network; validation is not called). The values
  its rules' filters list as known and public (Betterleaks' allowlists) are dropped from every layer's findings.
- ``presidio``: presidio-analyzer's pattern recognizers (all of them, country IDs included) on a blank
  spaCy pipeline (no NER model can be installed offline, so names and addresses are not found).
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import os
import re
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

from promptship.domain.gate import (
    SECRET_WORDS,
    Finding,
    GateResult,
    arn_account_spans,
    iban_shaped_spans,
    is_not_a_secret,
    is_placeholder_email,
    named_as_fake,
    outbound_texts,
    scan_rules,
)
from promptship.domain.redaction import redact

Layer = str
PresidioMode = Literal["direct", "engine"]
ALL_LAYERS: tuple[Layer, ...] = ("rules", "kingfisher", "detect_secrets", "presidio")

# presidio entities that are not personal data worth keeping local (or that a blank pipeline cannot judge).
_PRESIDIO_IGNORED = frozenset(
    {
        "DATE_TIME",
        "URL",
        "NRP",
        "LOCATION",
        "PERSON",
        "ORGANIZATION",
        "UUID",
        "IP_ADDRESS",
        "MAC_ADDRESS",
        "DE_PLZ",  # German postal codes: any 5-digit number
        "CA_POSTAL_CODE",
        "DE_KFZ",  # car plates
        "IN_VEHICLE_REGISTRATION",
        "NG_VEHICLE_REGISTRATION",
        "DE_HANDELSREGISTER",
        "AU_ABN",
        "AU_ACN",
        "IN_GSTIN",
        "IT_VAT_CODE",
        "DE_VAT_ID",
        "KR_BRN",
        "TR_LICENSE_PLATE",
        "UK_VEHICLE_REGISTRATION",
        "UK_POSTCODE",
        "ZA_LICENSE_PLATE",
        "IN_PAN",  # its weak pattern backtracks: ~110 ms on 5 KB of prose, for scores of 0.01
    }
)
# Minimum presidio score per entity (pattern scores without context words are low by design).
_PRESIDIO_MIN_SCORE: dict[str, float] = {
    "US_DRIVER_LICENSE": 0.5,  # its weak pattern (letter + digits) matches identifiers like x1, l2, c617
}

# "-----BEGIN … PRIVATE KEY-----" directly followed by its END line: a block with no key in it.
_EMPTY_KEY_BLOCK = re.compile(r"PRIVATE KEY(?: BLOCK)?-----\s*-----END")
# SSA: area numbers 000, 666 and 900-999 are never assigned to a Social Security number.
_SSN_NEVER_ISSUED = re.compile(r"^(?:000|666|9\d\d)")


_TOKEN_CHAR = re.compile(r"[A-Za-z0-9_]")


def _glued(line: str, start: int, end: int) -> bool:
    """``line[start:end]`` has more token characters right before or after it."""
    return bool(start > 0 and _TOKEN_CHAR.match(line[start - 1]) or end < len(line) and _TOKEN_CHAR.match(line[end]))


def _not_personal_number(entity: str, value: str, start: int, end: int, ibans: list[tuple[int, int]]) -> bool:
    """A number presidio's patterns match that is no one's: read inside an IBAN-shaped run (its digits are the
    account's) or as an ARN's AWS account id, or a US SSN the SSA never issues. (Numbers that look made up,
    ``55555555K``, are kept: presidio's own tests use such numbers as valid ids.)"""
    if entity != "IBAN_CODE" and any(a <= start and end <= b for a, b in ibans):
        return True
    return entity == "US_SSN" and bool(_SSN_NEVER_ISSUED.match(re.sub(r"\D", "", value)))


# detect-secrets plugins whose hits on prose are mostly noise (we have our own entropy rule).
_DS_NOISY = frozenset({"Base64 High Entropy String", "Hex High Entropy String"})
# A line goes through detect-secrets only if it could hold a secret: a credential word followed by an
# assignment, a URL with credentials, a key block, a long token-like run with letters and digits, or an
# Artifactory-style prefix. (Its plugins and filters cost ~1 ms per line.)
_DS_KEYWORD_HINT = re.compile(
    rf"(?i)(?:{SECRET_WORDS})|(?:key|auth|login|user|cloudant|softlayer|ibm)[\w.\-\[\]]*[\"'`]?\s*[:=,(]"
    r"|://|BEGIN|\b(?:AKC|AP[\dA-F])[A-Za-z0-9]{8,}|\b(?:AKIA|ABIA|ACCA|ASIA|SK|AC)[A-Za-z0-9]{14,}"
)
_DS_TOKEN_RUN = re.compile(r"[A-Za-z0-9+/=_-]{16,}")
# The same hint without IGNORECASE, for lowercased text: ``re``'s case-insensitive alternations are ~2.5x slower
# (as in ``domain.gate``). Only when lowercasing the pattern cannot change an escape's meaning (``\S``, ``\D``).
_DS_KEYWORD_HINT_LOWER = (
    None
    if re.search(r"\\[A-Z]", _DS_KEYWORD_HINT.pattern)
    else re.compile(_DS_KEYWORD_HINT.pattern.replace("(?i)", "", 1).lower())
)


def _ds_hint(line: str) -> bool:
    if _DS_KEYWORD_HINT.search(line):
        return True
    return any(_mixed_run(m.group(0)) for m in _DS_TOKEN_RUN.finditer(line))


def _mixed_run(run: str) -> bool:
    return not run.isalpha() and any(map(str.isdigit, run)) and any(map(str.isalpha, run))


def _ds_hint_lines(text: str, starts: Sequence[int]) -> set[int]:
    """The indexes of the lines of ``text`` (``starts``: where each begins) for which ``_ds_hint`` holds — the
    same lines, found by whole-text searches instead of two searches per line (most lines have no hint).

    A keyword match found from the start of line L either starts in a line whose own check then decides, or
    proves that no line before it matches (a match of a line alone is a match in the whole text at the same
    place: the pattern has no anchors or lookahead); the search goes on from the next line's start."""
    hinted: set[int] = set()
    for m in _DS_TOKEN_RUN.finditer(text):  # runs never cross a newline: the same runs as line by line
        if _mixed_run(m.group(0)):
            hinted.add(bisect.bisect_right(starts, m.start()) - 1)
    hint, hay = _DS_KEYWORD_HINT, text
    low = text.lower()
    if _DS_KEYWORD_HINT_LOWER is not None and len(low) == len(text):  # offsets hold
        hint, hay = _DS_KEYWORD_HINT_LOWER, low
    pos = 0
    while (m := hint.search(hay, pos)) is not None:
        index = bisect.bisect_right(starts, m.start()) - 1
        if index not in hinted:
            end = starts[index + 1] - 1 if index + 1 < len(starts) else len(text)
            if hint.search(hay[starts[index] : end]):
                hinted.add(index)
        if index + 1 >= len(starts):
            break
        pos = starts[index + 1]
    return hinted


class _DetectSecretsSettings:
    """detect-secrets keeps its settings in process-global state, and ``default_settings()`` restores the
    previous ones on exit: two scanners closed out of order would leave the survivor with no plugins. So the
    context is entered once for all scanners of the process and left when the last one closes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._stack: contextlib.ExitStack | None = None

    def acquire(self, default_settings: Any) -> None:
        with self._lock:
            if self._users == 0:
                stack = contextlib.ExitStack()
                settings = stack.enter_context(default_settings())
                # promptship's own entropy rule replaces these two (on prose they flag ordinary long words)
                settings.disable_plugins("Base64HighEntropyString", "HexHighEntropyString")
                self._stack = stack
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._stack is not None:
                self._stack.close()
                self._stack = None

    @property
    def lock(self) -> threading.Lock:
        return self._lock


_DETECT_SECRETS = _DetectSecretsSettings()


_KINGFISHER_LOCK = threading.Lock()


@functools.cache
def _kingfisher_scanner() -> Any:
    """Kingfisher's built-in rules compiled once per process (~5 s the first time on a machine, then ~0.5 s from
    its own on-disk cache): the database is immutable, so every scanner of the process shares it.
    Base64 decoding is off: it added ~0.7 ms to the 5 KB p99 for secrets that are rarely sent encoded."""
    try:
        import kingfisher_sdk
    except ImportError as exc:  # a security layer must not vanish silently
        raise ImportError(
            "the gate's kingfisher layer needs kingfisher-secret-scanner (in requirements.lock): run `make install`"
        ) from exc
    return kingfisher_sdk.Scanner(kingfisher_sdk.Rules(confidence="medium"), base64=False)


# A literal the catalogue's filters list whole (``^…$`` or bare): a value its maintainers publish as known and
# public — Google's own SDK sample keys in the GCP API key rule, say — or a charset constant.
_FILTER_LITERAL = re.compile(r"\^?([A-Za-z0-9_+/=.-]{16,})\$?")


@functools.cache
def _kingfisher_allowlist() -> frozenset[str]:
    """The values Kingfisher's rules (Betterleaks' allowlists) name as not secrets, read from the installed
    catalogue (~1 s, once per process): another layer's finding of exactly such a value is dropped."""
    import kingfisher_sdk

    rules = kingfisher_sdk.Rules(confidence="medium")
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("kind") == "string" and isinstance(node.get("value"), str):
                m = _FILTER_LITERAL.fullmatch(node["value"])
                if m:
                    found.add(m.group(1))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for meta in rules.metadata():
        walk(rules.detail(meta["id"]).get("betterleaks_filter"))
    return frozenset(found)


class SensitiveDataScanner:
    """Finds secrets, personal data and confidentiality markers in everything that would leave the machine."""

    def __init__(
        self,
        layers: Iterable[Layer] = ALL_LAYERS,
        *,
        presidio_min_score: float = 0.3,
        presidio_mode: PresidioMode = "direct",
        cache_size: int = 4096,
    ):
        self.layers = tuple(layers)
        unknown = set(self.layers) - set(ALL_LAYERS)
        if unknown:
            raise ValueError(f"unknown scanner layers {sorted(unknown)}; choose among {list(ALL_LAYERS)}")
        self._lock = threading.Lock()  # presidio's recognizers are not documented as thread-safe
        self._stack = contextlib.ExitStack()
        # leave detect-secrets' settings context before interpreter shutdown, not during it
        self._finalizer = weakref.finalize(self, self._stack.close)
        self._presidio: Any = None
        self._presidio_entities: list[str] = []
        self._min_score = presidio_min_score
        self.presidio_mode: PresidioMode = presidio_mode
        self._recognizers: list[tuple[Any, list[str], tuple[str, ...]]] = []
        self._cache: OrderedDict[bytes, GateResult] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()
        self._kingfisher: Any = _kingfisher_scanner() if "kingfisher" in self.layers else None
        self._allowlisted = _kingfisher_allowlist() if "kingfisher" in self.layers else frozenset()
        if "detect_secrets" in self.layers:
            self._init_detect_secrets()
        if "presidio" in self.layers:
            self._init_presidio()

    # --- construction -------------------------------------------------------------------------------------

    def _init_detect_secrets(self) -> None:
        from detect_secrets.core import scan as ds_scan
        from detect_secrets.settings import default_settings

        _DETECT_SECRETS.acquire(default_settings)
        self._stack.callback(_DETECT_SECRETS.release)
        self._ds_scan = ds_scan

    def _init_presidio(self) -> None:
        os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")  # tldextract must not go online
        import inspect
        import logging

        import spacy
        from presidio_analyzer import AnalyzerEngine, PatternRecognizer, RecognizerRegistry
        from presidio_analyzer import predefined_recognizers as predefined
        from presidio_analyzer.nlp_engine import SpacyNlpEngine

        logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)

        class _BlankSpacyEngine(SpacyNlpEngine):
            """presidio's spaCy engine on ``spacy.blank('en')``: tokens only, no model download."""

            def __init__(self) -> None:
                super().__init__(models=[{"lang_code": "en", "model_name": "blank"}])
                self.nlp = {"en": spacy.blank("en")}

            def load(self) -> None:  # nothing to load
                return None

        registry = RecognizerRegistry(supported_languages=["en"])
        entities: set[str] = set()
        for name in dir(predefined):
            cls: Any = getattr(predefined, name)
            if not (inspect.isclass(cls) and issubclass(cls, PatternRecognizer)) or cls is PatternRecognizer:
                continue
            try:
                factory: Any = cls  # each subclass has its own defaults; only the language is given
                recognizer = factory(supported_language="en")
            except Exception:  # a recognizer that needs more than a language (none today); skip it
                continue
            wanted = [e for e in recognizer.supported_entities if e not in _PRESIDIO_IGNORED]
            if not wanted:
                continue
            registry.add_recognizer(recognizer)
            entities.update(wanted)
            context = tuple(w.lower() for w in (getattr(recognizer, "context", None) or ()))
            self._recognizers.append((recognizer, wanted, context))
        self._presidio_entities = sorted(entities)
        if self.presidio_mode == "engine":
            self._presidio = AnalyzerEngine(
                registry=registry, nlp_engine=_BlankSpacyEngine(), supported_languages=["en"]
            )

    def close(self) -> None:
        """Leave detect-secrets' settings context."""
        self._finalizer()

    # --- layers -------------------------------------------------------------------------------------------

    def _detect_secrets(self, text: str) -> list[Finding]:
        # Only lines that could hold a secret go through detect-secrets' plugins (~25 regexes and filters
        # per line): a credential word, a long token-like run, or an Artifactory-style prefix.
        all_lines = text.split("\n")
        starts: list[int] = []
        pos = 0
        for line in all_lines:
            starts.append(pos)
            pos += len(line) + 1
        hinted = sorted(_ds_hint_lines(text, starts))
        lines = [all_lines[i] for i in hinted]
        offsets = [starts[i] for i in hinted]
        if not lines:
            return []
        numbered = list(enumerate(lines, start=1))
        found: list[Finding] = []
        for secret in self._ds_scan._process_line_based_plugins(numbered, filename="prompt.txt"):
            if secret.type in _DS_NOISY:
                continue
            index = secret.line_number - 1
            line = lines[index]
            value = secret.secret_value or ""
            if value and is_not_a_secret(value):
                continue
            at = line.find(value) if value else -1
            if secret.type != "Secret Keyword" and len(value) >= 16 and at >= 0 and _glued(line, at, at + len(value)):
                continue  # a fixed-length format read inside a longer run of token characters: not that token
            # (some plugins report only a captured prefix, GitHub's `ghp`: the check needs the whole token)
            if secret.type == "Private Key" and _EMPTY_KEY_BLOCK.search(text, offsets[index], offsets[index] + 200):
                continue  # the BEGIN line followed by its END line (the block may span lines)
            if secret.type == "Secret Keyword" and at >= 0 and named_as_fake(line, at):
                continue
            start = offsets[index] + (at if at >= 0 else 0)
            end = start + (len(value) if at >= 0 else len(line))
            subtype = re.sub(r"[^a-z0-9]+", "_", secret.type.lower()).strip("_")
            found.append(Finding("secret", subtype, start, end, "detect-secrets"))
        return found

    def _kingfisher_scan(self, text: str) -> list[Finding]:
        data = text.encode("utf-8", "surrogatepass")
        ascii_only = len(data) == len(text)
        found: list[Finding] = []
        with _KINGFISHER_LOCK:  # the native scanner is shared by every scanner of the process
            results = self._kingfisher.scan(data)
        for f in results:
            if not f.visible or is_not_a_secret(f.secret):
                continue  # helper parts (an id that is only a secret next to its key), placeholders
            start, end = f.location["start_offset"], f.location["end_offset"]
            if not ascii_only:  # its offsets are UTF-8 byte offsets
                start = len(data[:start].decode("utf-8", "ignore"))
                end = start + len(data[f.location["start_offset"] : end].decode("utf-8", "ignore"))
            subtype = re.sub(r"[^a-z0-9]+", "_", f.rule_id.split(".", 1)[-1].split("/")[-1].lower()).strip("_")
            found.append(Finding("secret", subtype, start, end, "kingfisher"))
        return found

    def _presidio_scan(self, text: str) -> list[Finding]:
        if self.presidio_mode == "engine":
            scored = [
                (r.entity_type, r.start, r.end, r.score)
                for r in self._presidio.analyze(text=text, language="en", entities=self._presidio_entities)
            ]
        else:
            scored = self._presidio_direct(text)
        ibans = iban_shaped_spans(text) + arn_account_spans(text) if scored else []
        return [
            Finding("pii", entity.lower(), start, end, "presidio")
            for entity, start, end, score in scored
            if score >= _PRESIDIO_MIN_SCORE.get(entity, self._min_score)
            and not (entity == "EMAIL_ADDRESS" and is_placeholder_email(text[start:end]))
            and not _not_personal_number(entity, text[start:end], start, end, ibans)
        ]

    def _presidio_direct(self, text: str) -> list[tuple[str, int, int, float]]:
        """presidio's pattern recognizers called directly (their regexes, checksums and invalidation), with
        presidio's context rule done cheaply: a context word in the 60 characters before a match adds 0.35
        (at least 0.4), as its LemmaContextAwareEnhancer does. The AnalyzerEngine adds spaCy tokenization and
        token-window context on top (``presidio_mode="engine"``; the benchmark compares the two)."""
        low = text.lower()
        out: list[tuple[str, int, int, float]] = []
        candidates = _id_candidates_compact(text)
        if candidates is None:
            return out
        compact, to_text = candidates
        for recognizer, entities, context in self._recognizers:
            for r in recognizer.analyze(compact, entities, None):
                start, stop, score = to_text(r.start), to_text(r.end), r.score
                if context and score < 1.0:
                    before = low[max(0, start - 60) : start]
                    if any(word in before for word in context):
                        score = max(min(1.0, score + 0.35), 0.4)
                out.append((r.entity_type, start, stop, score))
        return out

    def scan_layer(self, layer: Layer, text: str) -> list[Finding]:
        """Findings of one layer only (used by the benchmark to show what each layer costs and finds)."""
        if layer == "rules":
            return scan_rules(text)
        if layer not in self.layers:
            raise ValueError(f"layer {layer!r} is not enabled in this scanner")
        if layer == "kingfisher":
            return self._kingfisher_scan(text)
        if layer == "detect_secrets":
            with _DETECT_SECRETS.lock:  # its plugins and settings are shared by every scanner
                return self._detect_secrets(text)
        with self._lock:
            return self._presidio_scan(text)

    # --- public API ---------------------------------------------------------------------------------------

    def scan(self, text: str) -> GateResult:
        """All enabled layers on one text. Results are remembered by the text's digest: an agent re-sends its
        whole conversation with every call, so only the new messages cost a scan."""
        if self._cache_size <= 0:
            return self._scan_uncached(text)
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
        result = self._scan_uncached(text)
        with self._cache_lock:
            self._cache[key] = result
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result

    def _scan_uncached(self, text: str) -> GateResult:
        findings: list[Finding] = []
        for layer in self.layers:
            findings.extend(self.scan_layer(layer, text))
        if self._allowlisted:  # values the catalogue's maintainers publish as known and public
            public = self._allowlisted
            findings = [f for f in findings if f.kind != "secret" or text[f.start : f.end].strip("\"'`") not in public]
        return GateResult.of(findings)

    def scan_messages(
        self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None = None
    ) -> GateResult:
        """Every text of an OpenAI-format request (messages, tool calls, tool results, tool schemas).

        Spans of the findings refer to the texts of ``outbound_texts`` joined with blank lines."""
        findings: list[Finding] = []
        offset = 0
        for text in outbound_texts(messages, tools):
            for f in self.scan(text).findings:
                findings.append(Finding(f.kind, f.subtype, f.start + offset, f.end + offset, f.detector))
            offset += len(text) + 2
        return GateResult.of(findings)

    def __enter__(self) -> SensitiveDataScanner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# An identifier-like run: letters/digits with single separators (". / : | -" or a space), e.g. "AA 12 34 56 B",
# "078-05-1120", "FR76 3000 6000 0112", "010594Y9032". presidio is only asked about runs with >= 4 digits.
_ID_CANDIDATE = re.compile(r"[A-Za-z0-9](?:[ ./:|-]?[A-Za-z0-9]){3,60}")
_WINDOW_MARGIN = 8  # the longest prefix/suffix an ID pattern needs around its digit run
# Blanked text is NUL, not spaces: some of presidio's US healthcare patterns backtrack badly on long space runs.
_BLANK = "\x00"


def _id_windows(text: str) -> list[tuple[int, int]]:
    keep: list[tuple[int, int]] = []
    for m in _ID_CANDIDATE.finditer(text):
        run = m.group(0)
        if not run.isalpha() and sum(map(str.isdigit, run)) >= 4:
            start, end = max(0, m.start() - _WINDOW_MARGIN), min(len(text), m.end() + _WINDOW_MARGIN)
            if keep and start <= keep[-1][1]:
                keep[-1] = (keep[-1][0], end)
            else:
                keep.append((start, end))
    return keep


# Blank runs longer than this are shortened to it in the text presidio reads: every pattern it is asked for
# matches at most ~200 characters (and e-mail's unbounded one never matches NUL), so no match can reach
# across such a run either way; the recognizers' regexes then read ~100 characters of a 5 KB prompt, not 5000.
_MAX_BLANK = 256


def _id_candidates_compact(text: str) -> tuple[str, Callable[[int], int]] | None:
    """What ``_id_candidates_only`` gives presidio, with every blank run shortened to at most ``_MAX_BLANK``,
    and the function that maps an offset in it back to ``text``; None when there is no candidate."""
    keep = _id_windows(text)
    if not keep:
        return None
    parts: list[str] = []
    segments: list[tuple[int, int]] = []  # (offset in the compact text, offset in text) of each piece
    at = last = 0
    for start, end in [*keep, (len(text), len(text))]:
        if start > last:
            segments.append((at, last))
            parts.append(_BLANK * min(start - last, _MAX_BLANK))
            at += min(start - last, _MAX_BLANK)
        if end > start:
            segments.append((at, start))
            parts.append(text[start:end])
            at += end - start
        last = end
    compact_starts = [c for c, _ in segments]

    def to_text(offset: int) -> int:
        i = bisect.bisect_right(compact_starts, offset) - 1
        return segments[i][1] + offset - segments[i][0]

    return "".join(parts), to_text


def _id_candidates_only(text: str) -> str | None:
    """``text`` with everything but identifier-like runs holding >= 4 digits blanked out (NUL) (same length, so
    offsets hold), or None when there is none. Every entity presidio is asked for here (IDs, cards, IBANs,
    tax, licence and passport numbers) has at least 4 digits; e-mail addresses are the rules layer's job.
    Blanked prose costs the recognizers' regexes almost nothing; their context words are read from the
    original text."""
    keep = _id_windows(text)
    if not keep:
        return None
    parts: list[str] = []
    last = 0
    for start, end in keep:
        parts.append(_BLANK * (start - last))
        parts.append(text[start:end])
        last = end
    parts.append(_BLANK * (len(text) - last))
    return "".join(parts)


def redact_with(scanner: SensitiveDataScanner, text: str) -> str:
    """``text`` with everything the scanner finds (and the always-hidden token formats) replaced."""
    return redact(text, scanner.scan(text).spans())
