"""Redaction of secrets in text that goes into reports, logs and stores.

The full sensitive-data gate (``promptship.domain.gate``) finds more; this module holds the patterns every
report must hide even when the gate is not configured, and the one function that replaces them.
"""

from __future__ import annotations

import re

REDACTED = "[REDACTED]"

# Token formats and assignments that must never be shown, whatever else the gate finds. A pattern's first
# capturing group, when it has one, is the part replaced (the value of an assignment, not its name): every
# other group must be non-capturing, or only that group is hidden and the rest of the secret shown.
_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"),
    re.compile(r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}\b"),
    re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}\b"),
    re.compile(r"\bsk-or-v1-[A-Za-z0-9]{20,}\b"),
    re.compile(r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
    re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{5,}\b"),
    re.compile(r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),
    re.compile(
        r"(?i)(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)"
        r"[\"']?\s*[:=]\s*[\"']?([^\s\"',;]{4,})"
    ),
)


def redact(text: str, extra_spans: list[tuple[int, int]] | None = None) -> str:
    """Return ``text`` with known secret formats (and any ``extra_spans`` found by the gate) replaced."""
    spans: list[tuple[int, int]] = list(extra_spans or [])
    for pattern in _PATTERNS:
        for match in pattern.finditer(text):
            if match.lastindex:
                spans.append(match.span(1))
            else:
                spans.append(match.span())
    if not spans:
        return text
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    out: list[str] = []
    last = 0
    for start, end in merged:
        out.append(text[last:start])
        out.append(REDACTED)
        last = end
    out.append(text[last:])
    return "".join(out)
