"""The leak scan: where did a planted secret (a canary) end up, byte for byte?

    report = scan_leaks([home, prefect_home, forge_root], {"github_token": token, ...}, ALLOWLIST,
                        objects=prefect_api_objects(api_url) | forge_api_objects(forge_api, token, repos))
    print("\\n".join(report.lines()))
    assert report.leaks == ()

What is scanned:
- every regular file under each root, as raw bytes (so a SQLite database's free pages and its ``-wal``, a log's
  rotated tail, a pickled result all count: a deleted row still on disk is found);
- every git repository under a root (a directory with ``HEAD`` and ``objects/``): its objects decompressed, loose
  and packed, through ``git cat-file --batch-all-objects --batch`` (blobs, commit messages, trees, tags);
- ``objects``: named texts read from APIs (Prefect flow runs, task runs, logs, artifacts, events, variables; the
  forge's PRs, issues, comments, branches; the LLM stand-in's request log) — what lives only in a server's memory.

Each canary is looked for as itself, URL-encoded, and base64/url-safe-base64 encoded at the three alignments (so a
value inside a longer base64 blob is found too). A hit is allowed only when one entry of the allowlist names its
canary and matches its place (an ``fnmatch`` pattern on ``<root label>/<path>``, on
``git:<root label>/<repo path>/<object id>``, or on the object's name); every other hit is a leak, with its
place and offset.
"""

from __future__ import annotations

import base64
import fnmatch
import re
import subprocess
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_CHUNK = 8 << 20  # files are read in 8 MiB pieces (overlapping by the longest needle)


@dataclass(frozen=True)
class Allowed:
    """One reviewed place where a canary may live: ``canaries`` (names; ``*`` = any) at ``place`` (an fnmatch
    pattern), and why."""

    canaries: tuple[str, ...]
    place: str
    why: str

    def covers(self, canary: str, place: str) -> bool:
        return ("*" in self.canaries or canary in self.canaries) and fnmatch.fnmatchcase(place, self.place)


@dataclass(frozen=True)
class Hit:
    """A canary found: which one, in which form, where (file relative to its root, git object, API object), at
    which byte offset (SQLite files: also the page)."""

    canary: str
    form: str
    place: str
    offset: int
    note: str = ""

    def line(self) -> str:
        extra = f" ({self.note})" if self.note else ""
        return f"{self.canary} [{self.form}] in {self.place} at byte {self.offset}{extra}"


@dataclass(frozen=True)
class LeakReport:
    """What the scan found. ``leaks``: hits no allowlist entry covers; ``allowed``: the others."""

    leaks: tuple[Hit, ...]
    allowed: tuple[Hit, ...]
    allowlist: tuple[Allowed, ...]
    files: int
    bytes_scanned: int
    git_objects: int
    api_objects: int
    canaries: tuple[str, ...] = field(default=())

    def lines(self) -> list[str]:
        """The report as text: what was scanned, the allowlist (every entry, reviewed), allowed hits, leaks."""
        out = [
            f"leak scan: {len(self.canaries)} canaries ({', '.join(self.canaries)}) over {self.files} files "
            f"({self.bytes_scanned} bytes), {self.git_objects} git objects, {self.api_objects} API objects",
            "allowlist (where a value must live):",
        ]
        out += [f"  {', '.join(a.canaries)} @ {a.place} — {a.why}" for a in self.allowlist]
        out += [f"  allowed: {h.line()}" for h in self.allowed]
        out += [f"  LEAK: {h.line()}" for h in self.leaks]
        out.append(f"leaks {len(self.leaks)}")
        return out


# The reviewed allowlist of the sandbox's runs. Places: ``<root label>/<path in it>`` with the labels ``home``
# (promptship's home: store, workspaces), ``prefect`` (the Prefect server's PREFECT_HOME: database, results, log),
# ``forge`` (the forge's root: git, ci, registry); ``git:<label>/<repo>/<object id>``; API objects by name.
ALLOWLIST: tuple[Allowed, ...] = (
    Allowed(("*",), "*.key", "the store's prompt key file (0600) holds the Fernet key, nothing else"),
    Allowed(
        ("repo_secret", "ci_secret"),
        "git:*",
        "the repository the agent reads carries these itself (the sandbox's CI has no secret store: its job reads "
        "the value from the repository): its own git objects on the forge and in checkouts",
    ),
    Allowed(
        ("repo_secret", "ci_secret"),
        "home/workspaces/*",
        "the run's checkout of that repository (the agent's working copy), not something promptship wrote",
    ),
    Allowed(
        ("repo_secret", "ci_secret"),
        "forge/git/*",
        "the forge's own repositories (GitHub's copy of the user's code)",
    ),
    Allowed(
        ("ci_secret", "repo_secret"),
        "forge/ci/*",
        "the forge's CI job logs and checkouts: what CI printed, as GitHub keeps it (GitHub masks registered "
        "Actions secrets; the sandbox forge does not)",
    ),
    Allowed(("ci_secret",), "forge:*/actions/jobs/*", "the forge's job log API (GitHub's copy of what CI printed)"),
    Allowed(
        ("ci_secret",),
        "forge:*/check-runs/*",
        "the check run's output summary, written by CI itself (the job log's tail), as GitHub shows it",
    ),
    Allowed(
        ("openrouter_key",),
        "llm-stand-in:cloud*.headers",
        "the Authorization header of calls to the cloud provider: where the key is meant to go",
    ),
    Allowed(
        ("prompt_secret", "repo_secret"),
        "llm-stand-in:local*",
        "calls to the local model (Ollama protocol, on this machine): where the gate sends sensitive text",
    ),
)


def forms(value: str) -> dict[str, bytes]:
    """The byte forms a value is looked for in: raw, URL-encoded, base64 and url-safe base64 at each alignment."""
    raw = value.encode()
    out: dict[str, bytes] = {"raw": raw}
    quoted = urllib.parse.quote(value, safe="").encode()
    if quoted != raw:
        out["url"] = quoted
    for name, encode in (("base64", base64.b64encode), ("base64url", base64.urlsafe_b64encode)):
        for shift in range(3):
            encoded = encode(b"\0" * shift + raw).rstrip(b"=")
            # drop the characters that mix in the neighbours' bits: the prefix's and an incomplete last group
            start = (shift * 4 + 2) // 3
            end = len(encoded) - (len(encoded) % 4 and 1)
            piece = encoded[start:end]
            if len(piece) >= 16 and piece not in out.values():
                out[f"{name}@{shift}"] = piece
    return out


def _sqlite_page(head: bytes, offset: int) -> str:
    if not head.startswith(b"SQLite format 3\0") or len(head) < 18:
        return ""
    size = int.from_bytes(head[16:18], "big")
    size = 65536 if size == 1 else size
    return f"SQLite page {offset // size + 1}"


def _wal_note(path: Path) -> str:
    return "SQLite write-ahead log" if path.name.endswith("-wal") else ""


def _git_dirs(root: Path) -> Iterator[Path]:
    for head in root.rglob("HEAD"):
        d = head.parent
        if (d / "objects").is_dir() and (d / "refs").exists():
            yield d


def _git_objects(git_dir: Path) -> Iterator[tuple[str, bytes]]:
    """Every object of a repository, decompressed: (object id, content)."""
    proc = subprocess.run(
        ["git", f"--git-dir={git_dir}", "cat-file", "--batch-all-objects", "--batch", "--unordered"],
        capture_output=True,
        timeout=120,
        check=False,
    )
    data, pos = proc.stdout, 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        header = data[pos:nl].split()
        if len(header) < 3:  # "<id> missing"
            pos = nl + 1
            continue
        size = int(header[2])
        yield header[0].decode(), data[nl + 1 : nl + 1 + size]
        pos = nl + 1 + size + 1


class _Needles:
    def __init__(self, canaries: Mapping[str, str]) -> None:
        self.by_bytes: dict[bytes, tuple[str, str]] = {}
        for name, value in canaries.items():
            if not value:
                raise ValueError(f"canary {name!r} is empty: an empty value would match everywhere")
            for form, needle in forms(value).items():
                self.by_bytes.setdefault(needle, (name, form))
        ordered = sorted(self.by_bytes, key=len, reverse=True)
        self.pattern = re.compile(b"|".join(re.escape(n) for n in ordered))
        self.longest = max(map(len, ordered))

    def find(self, data: bytes) -> Iterator[tuple[str, str, int, int]]:
        for m in self.pattern.finditer(data):
            name, form = self.by_bytes[m.group(0)]
            yield name, form, m.start(), m.end()


def scan_leaks(
    roots: Mapping[str, Path | str] | Iterable[Path | str],
    canaries: Mapping[str, str],
    allowlist: Sequence[Allowed] = ALLOWLIST,
    *,
    objects: Mapping[str, str | bytes] | None = None,
) -> LeakReport:
    """Look for every canary (name -> value) under ``roots`` (label -> directory or file, or just paths: labelled
    by their names; raw file bytes and decompressed git objects) and in ``objects`` (name -> text read from an
    API); return the hits split into leaks and those ``allowlist`` covers."""
    labelled: dict[str, Path | str] = (
        {str(k): v for k, v in roots.items()} if isinstance(roots, Mapping) else {Path(r).name: r for r in roots}
    )
    needles = _Needles(canaries)
    hits: list[Hit] = []
    files = scanned = git_objects = 0
    for label, given in labelled.items():
        root = Path(given)
        if not root.exists():
            raise FileNotFoundError(f"scan_leaks: root {root} does not exist (nothing would be scanned there)")
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
        for path in paths:
            rel = label if path == root else f"{label}/{path.relative_to(root)}"
            files += 1
            with path.open("rb") as f:
                head, base = b"", 0
                carry = b""
                while chunk := f.read(_CHUNK):
                    if base == 0:
                        head = chunk[:100]
                    data = carry + chunk
                    start = base - len(carry)
                    for name, form, at, end in needles.find(data):
                        if end <= len(carry):
                            continue  # inside the previous piece's tail: already seen
                        offset = start + at
                        note = _sqlite_page(head, offset) or _wal_note(path)
                        hits.append(Hit(name, form, rel, offset, note))
                    scanned += len(chunk)
                    base += len(chunk)
                    carry = data[-(needles.longest - 1) :] if needles.longest > 1 else b""
        for git_dir in _git_dirs(root) if root.is_dir() else ():
            where = f"{label}/{git_dir.relative_to(root)}".rstrip("/.")
            for oid, content in _git_objects(git_dir):
                git_objects += 1
                for name, form, at, _ in needles.find(content):
                    hits.append(Hit(name, form, f"git:{where}/{oid}", at, "decompressed object"))
    for place, text in (objects or {}).items():
        data = text.encode() if isinstance(text, str) else text
        for name, form, at, _ in needles.find(data):
            hits.append(Hit(name, form, place, at, "API object"))
    unique = list(dict.fromkeys(hits))
    allowed = tuple(h for h in unique if any(a.covers(h.canary, h.place) for a in allowlist))
    leaks = tuple(h for h in unique if h not in allowed)
    return LeakReport(
        leaks=leaks,
        allowed=allowed,
        allowlist=tuple(allowlist),
        files=files,
        bytes_scanned=scanned,
        git_objects=git_objects,
        api_objects=len(objects or {}),
        canaries=tuple(canaries),
    )


# --- what lives only behind an API ----------------------------------------------------------------------------


def _paged(http: object, path: str, body: dict[str, object], *, limit: int = 200) -> Iterator[dict[str, object]]:
    import httpx

    assert isinstance(http, httpx.Client)
    offset = 0
    while True:
        answer = http.post(path, json={**body, "limit": limit, "offset": offset})
        answer.raise_for_status()
        page = answer.json()
        yield from page
        if len(page) < limit:
            return
        offset += limit


def prefect_api_objects(
    api_url: str, *, expect: Sequence[str] = (), settle_s: float = 1.0, timeout_s: float = 60.0
) -> dict[str, str]:
    """Everything a Prefect server shows through its API (and so its UI): flow runs (names, parameters, states),
    task runs, logs, artifacts, events, variables, deployments, block documents — as ``prefect:<kind>/<id>``.

    Prefect 3's server writes task runs and events from the events clients send it, after the flow has returned:
    read at once, a fast machine sees none yet. So the API is read until every kind in ``expect`` is there and two
    reads ``settle_s`` apart name the same objects (or ``timeout_s`` passed: the last read is returned)."""
    import time

    deadline = time.monotonic() + timeout_s
    last = _prefect_api_read(api_url)
    while time.monotonic() < deadline:
        time.sleep(settle_s)
        now = _prefect_api_read(api_url)
        kinds = {name.split("/")[0].removeprefix("prefect:") for name in now}
        if set(expect) <= kinds and now.keys() == last.keys():
            return now
        last = now
    return last


def _prefect_api_read(api_url: str) -> dict[str, str]:
    import json
    from datetime import UTC, datetime, timedelta

    import httpx

    out: dict[str, str] = {}
    with httpx.Client(base_url=api_url.rstrip("/"), timeout=30) as http:
        for kind, path in (
            ("flow_run", "/flow_runs/filter"),
            ("task_run", "/task_runs/filter"),
            ("log", "/logs/filter"),
            ("artifact", "/artifacts/filter"),
            ("variable", "/variables/filter"),
            ("deployment", "/deployments/filter"),
            ("block_document", "/block_documents/filter"),
        ):
            for item in _paged(http, path, {}):
                out[f"prefect:{kind}/{item.get('id')}"] = json.dumps(item)
        now = datetime.now(UTC)
        window = {"since": (now - timedelta(days=7)).isoformat(), "until": (now + timedelta(days=1)).isoformat()}
        answer = http.post("/events/filter", json={"filter": {"occurred": window}, "limit": 50})
        while True:
            answer.raise_for_status()
            page = answer.json()
            for event in page.get("events", []):
                out[f"prefect:event/{event.get('id')}"] = json.dumps(event)
            if not page.get("next_page"):
                break
            answer = http.get(page["next_page"])
    return out


def forge_api_objects(
    api_url: str, token: str, repositories: Sequence[str], *, git_root: Path | None = None
) -> dict[str, str]:
    """What the forge keeps in memory, through its GitHub REST API: issues and PRs (titles, bodies, branch
    names), their comments and review comments, branches, and for every commit object (reachable or not) of the
    bare repository ``git_root/<owner>/<name>.git``; without ``git_root``: the PRs' heads) its statuses, check runs
    and job logs — as ``forge:<repo>/<kind>/<id>``."""
    import json

    import httpx

    out: dict[str, str] = {}
    headers = {"Authorization": f"token {token}", "Accept": "application/vnd.github+json"}
    with httpx.Client(base_url=api_url.rstrip("/"), headers=headers, timeout=30) as http:

        def get(path: str) -> object:
            answer = http.get(path)
            answer.raise_for_status()
            return answer.json()

        for repo in repositories:
            r = f"/repos/{repo}"
            for issue in get(f"{r}/issues?state=all&per_page=100"):  # type: ignore[union-attr]
                number = issue["number"]
                out[f"forge:{repo}/issues/{number}"] = json.dumps(issue)
                for c in get(f"{r}/issues/{number}/comments?per_page=100"):  # type: ignore[union-attr]
                    out[f"forge:{repo}/issues/comments/{c['id']}"] = json.dumps(c)
            for pull in get(f"{r}/pulls?state=all&per_page=100"):  # type: ignore[union-attr]
                number = pull["number"]
                out[f"forge:{repo}/pulls/{number}"] = json.dumps(pull)
                for c in get(f"{r}/pulls/{number}/comments?per_page=100"):  # type: ignore[union-attr]
                    out[f"forge:{repo}/pulls/comments/{c['id']}"] = json.dumps(c)
            shas = {pull["head"]["sha"] for pull in get(f"{r}/pulls?state=all&per_page=100")}  # type: ignore[union-attr]
            if git_root is not None:
                listed = subprocess.run(  # every commit object, reachable or not (a force-pushed branch's)
                    [
                        "git",
                        f"--git-dir={git_root / f'{repo}.git'}",
                        "cat-file",
                        "--batch-all-objects",
                        "--batch-check",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=True,
                )
                shas |= {line.split()[0] for line in listed.stdout.splitlines() if line.split()[1:2] == ["commit"]}
            for sha in sorted(shas):
                out[f"forge:{repo}/statuses/{sha}"] = json.dumps(get(f"{r}/commits/{sha}/statuses"))
                runs = get(f"{r}/commits/{sha}/check-runs")
                out[f"forge:{repo}/check-runs/{sha}"] = json.dumps(runs)
                for run in runs.get("check_runs", []):  # type: ignore[union-attr]
                    answer = http.get(f"{r}/actions/jobs/{run['id']}/logs", follow_redirects=True)
                    if answer.status_code == 200:
                        out[f"forge:{repo}/actions/jobs/{run['id']}/logs"] = answer.text
            out[f"forge:{repo}/branches"] = json.dumps(get(f"{r}/branches?per_page=100"))
    return out


def llm_stand_in_objects(requests: Iterable[object]) -> dict[str, str]:
    """The LLM stand-in's request log (``LLMStandIn.requests``): each request's headers and body, named
    ``llm-stand-in:cloud<i>`` (OpenRouter's protocol) or ``llm-stand-in:local<i>`` (Ollama's)."""
    import json

    out: dict[str, str] = {}
    for i, r in enumerate(requests):
        path = str(getattr(r, "path", ""))
        side = "local" if path.startswith("/api/") else "cloud"
        out[f"llm-stand-in:{side}{i}.headers"] = json.dumps(getattr(r, "headers", {}))
        raw = getattr(r, "raw", b"")
        out[f"llm-stand-in:{side}{i}.body {path}"] = (
            raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        )
    return out
