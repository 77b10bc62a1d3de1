"""A small fault-injecting proxy (stdlib, threads, 127.0.0.1 only) for the reliability campaign.

It forwards to one upstream and, on the schedule set through ``inject``, answers a request with a fault
instead of (or in the middle of) the upstream's answer. It counts what it saw and what it injected, so a
campaign can show that each fault really fired and how many requests a client made.

    with running_fault_proxy("127.0.0.1:8080") as proxy:      # HTTP mode: one request per connection
        proxy.inject("http_503", count=2, match="/repos/")    # the next 2 requests under /repos/ get a 503
        client.get(proxy.url + "/repos/a/b")
        proxy.fired["http_503"], proxy.requests              # 1, 1

Fault kinds (``FaultKind``):

| kind | what the client sees |
|---|---|
| ``http_502``, ``http_503`` | the upstream is not asked; a 502 / 503 with a small JSON body |
| ``rate_limit_429`` | ``429 Too Many Requests`` with ``Retry-After`` (``retry_after_s``) |
| ``secondary_rate_limit`` | GitHub's secondary rate limit: ``403`` with its documented message and ``retry-after`` |
| ``reset`` | the request head is read, then the connection is reset (RST: ``SO_LINGER`` 0) mid-request |
| ``slow_body`` | the upstream's status and headers, then the body stalls for ``slow_s`` (past a client's timeout) |
| ``truncated`` | the upstream's answer with a ``Content-Length`` larger than the bytes sent, then close |
| ``refuse`` | the connection is reset as soon as it is accepted, before a byte is read (1) |
| ``connect_refused`` | a real ``ECONNREFUSED``: the proxy's listening socket is closed until ``clear()`` (2) |
| ``dns_failure`` | ``url`` and ``address`` name ``<name>.invalid`` (RFC 6761: never resolves) until ``clear()`` (2) |

(1) the TCP connect succeeded: the client sees a reset, not a refusal; ``match`` does not apply.
(2) outages that act before any connection: the proxy cannot see the client's attempts (``fired`` counts the
outage once, ``requests`` nothing), ``count``, ``match`` and ``method`` do not apply, and a client must read
``url`` / ``address`` when it connects (not once at start) for ``dns_failure`` to reach it. ``clear()`` binds the
same port again (``ProxyError`` if another process took it meanwhile).

In ``tcp`` mode (for TLS upstreams such as a kube-apiserver, whose HTTP the proxy cannot see) a fault applies
to a connection, not a request, and only ``refuse``, ``reset`` (after the client's first bytes) and
``slow_body`` (the upstream's bytes held back for ``slow_s``) make sense; ``match`` does not apply.

HTTP mode forwards each request on a new upstream connection with ``Connection: close`` and answers the
client with ``Connection: close`` too (clients open a new connection per request: simple to count, and the
way a fault can end one request without touching the next).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import BinaryIO, Literal, get_args

FaultKind = Literal[
    "http_502",
    "http_503",
    "rate_limit_429",
    "secondary_rate_limit",
    "reset",
    "slow_body",
    "truncated",
    "refuse",
    "connect_refused",
    "dns_failure",
]
FAULT_KINDS: tuple[FaultKind, ...] = get_args(FaultKind)
# outages before any connection (the listener closed, the name unresolvable): they last until clear()
OUTAGE_KINDS: frozenset[FaultKind] = frozenset({"connect_refused", "dns_failure"})
TCP_KINDS: frozenset[FaultKind] = frozenset({"refuse", "reset", "slow_body", "connect_refused", "dns_failure"})
Mode = Literal["http", "tcp"]

SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out "
    "to GitHub Support for help, please include the request ID."
)
SECONDARY_RATE_LIMIT_DOCS = (
    "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits"
)
_MAX_HEAD = 64 * 1024


class ProxyError(Exception):
    """A bad schedule (an unknown kind, a kind the mode cannot produce, a count below 1)."""


@dataclass
class Rule:
    kind: FaultKind
    count: int
    match: str = ""
    method: str | None = None
    after: int = 0  # matching requests let through before the fault fires
    seen: int = 0
    fired: int = 0

    def applies(self, method: str | None, path: str | None) -> bool:
        if self.fired >= self.count:
            return False
        if path is None:  # at accept (refuse, tcp mode): nothing to match on
            return True
        return path.startswith(self.match) and (self.method is None or self.method.upper() == method)


@dataclass(frozen=True)
class Seen:
    """One request (HTTP mode) or connection (TCP mode) the proxy took, and the fault it got, if any."""

    method: str
    path: str
    fault: FaultKind | None


@dataclass
class _Head:
    first_line: bytes
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def without(self, *names: str) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.headers if k.lower() not in names]


def _encode(first_line: bytes, headers: list[tuple[str, str]]) -> bytes:
    lines = [first_line] + [f"{k}: {v}".encode("latin-1") for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _read_head(stream: BinaryIO) -> _Head | None:
    first = stream.readline(_MAX_HEAD)
    while first in (b"\r\n", b"\n"):  # tolerated before a request line (RFC 9112 2.2)
        first = stream.readline(_MAX_HEAD)
    if not first:
        return None
    headers: list[tuple[str, str]] = []
    size = len(first)
    while True:
        line = stream.readline(_MAX_HEAD)
        size += len(line)
        if not line or size > _MAX_HEAD:
            return None
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    return _Head(first.rstrip(b"\r\n"), headers)


def _read_body(stream: BinaryIO, head: _Head, *, until_close: bool) -> bytes:
    """The message body as it came (chunked bodies with their framing), decoded lengths read exactly."""
    if (head.get("transfer-encoding") or "").lower().endswith("chunked"):
        raw = bytearray()
        while True:
            size_line = stream.readline(_MAX_HEAD)
            if not size_line:
                return bytes(raw)
            raw += size_line
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = stream.readline(_MAX_HEAD)
                    raw += trailer
                    if trailer in (b"\r\n", b"\n", b""):
                        return bytes(raw)
            raw += stream.read(size + 2)
    length = head.get("content-length")
    if length is not None:
        return stream.read(int(length))
    return stream.read() if until_close else b""


def _dechunk(raw: bytes) -> bytes:
    out, rest = bytearray(), raw
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2 :]
    return bytes(out)


def _reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with suppress(OSError):
        sock.close()


def _status_answer(kind: FaultKind, retry_after_s: int) -> bytes:
    if kind == "secondary_rate_limit":
        status, extra = b"403 Forbidden", [("retry-after", str(retry_after_s))]
        body = {"message": SECONDARY_RATE_LIMIT_MESSAGE, "documentation_url": SECONDARY_RATE_LIMIT_DOCS}
    elif kind == "rate_limit_429":
        status, extra = b"429 Too Many Requests", [("Retry-After", str(retry_after_s))]
        body = {"message": "Too Many Requests (injected by the fault proxy)"}
    elif kind == "http_502":
        status, extra, body = b"502 Bad Gateway", [], {"message": "Bad Gateway (injected by the fault proxy)"}
    else:
        status, extra = b"503 Service Unavailable", []
        body = {"message": "Service Unavailable (injected by the fault proxy)"}
    data = json.dumps(body).encode()
    headers = [
        ("Content-Type", "application/json; charset=utf-8"),
        ("Content-Length", str(len(data))),
        ("Connection", "close"),
        *extra,
    ]
    return _encode(b"HTTP/1.1 " + status, headers) + data


class FaultProxy:
    """The proxy; use ``running_fault_proxy`` (it starts and stops it)."""

    def __init__(
        self,
        upstream: str,
        *,
        mode: Mode = "http",
        name: str = "",
        slow_s: float = 30.0,
        retry_after_s: int = 1,
        connect_timeout_s: float = 10.0,
    ) -> None:
        host, _, port = upstream.removeprefix("http://").removeprefix("https://").split("/")[0].rpartition(":")
        if not host or not port.isdigit():
            raise ProxyError(f"upstream must be host:port (or a URL with a port), got {upstream!r}")
        self.upstream = (host, int(port))
        self.mode: Mode = mode
        self.name = name or f"{host}:{port}"
        self.slow_s = slow_s
        self.retry_after_s = retry_after_s
        self.connect_timeout_s = connect_timeout_s
        self.fired: Counter[str] = Counter()
        self.seen: list[Seen] = []
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._host = "127.0.0.1"
        self._outages: set[FaultKind] = set()

    # -- the schedule -----------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.address}"

    @property
    def address(self) -> str:
        return f"{self._host}:{self.port}"

    @property
    def unresolvable_host(self) -> str:
        """The name ``dns_failure`` puts in ``url``: ``.invalid`` never resolves (RFC 6761 6.4)."""
        label = "".join(ch if ch.isalnum() else "-" for ch in self.name.lower()).strip("-")[:40] or "proxy"
        return f"{label}.fault.invalid"

    def inject(
        self, kind: FaultKind, *, count: int = 1, match: str = "", method: str | None = None, after: int = 0
    ) -> Rule:
        """Fault the next ``count`` requests whose path starts with ``match`` (and whose method is ``method``),
        after letting ``after`` of them through. Rules are tried in the order they were added."""
        if kind not in FAULT_KINDS:
            raise ProxyError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
        if self.mode == "tcp" and kind not in TCP_KINDS:
            raise ProxyError(f"{kind} needs HTTP mode (a TLS upstream's answers cannot be rewritten)")
        if count < 1 or after < 0:
            raise ProxyError(f"count must be ≥ 1 and after ≥ 0, got count={count}, after={after}")
        rule = Rule(kind, count, match, method, after)
        if kind in OUTAGE_KINDS:
            self._start_outage(kind)
            rule.fired = rule.count  # nothing left to fire: the outage lasts until clear()
            return rule
        with self._lock:
            self._rules.append(rule)
        return rule

    def clear(self) -> None:
        """Drop the rules not yet used up (what fired stays counted) and end any outage."""
        with self._lock:
            self._rules.clear()
            outages, self._outages = self._outages, set()
        if "dns_failure" in outages:
            self._host = "127.0.0.1"
        if "connect_refused" in outages and not self._stopping.is_set():
            try:
                self._listener = socket.create_server(("127.0.0.1", self.port))
            except OSError as exc:
                raise ProxyError(f"port {self.port} was taken while the proxy refused connections: {exc}") from None
            self.start()

    def _start_outage(self, kind: FaultKind) -> None:
        with self._lock:
            if kind in self._outages:
                return
            self._outages.add(kind)
            self.fired[kind] += 1
        if kind == "dns_failure":
            self._host = self.unresolvable_host
        else:  # nothing listens on the port: the client's connect gets ECONNREFUSED from the kernel
            with suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            with suppress(OSError):
                self._listener.close()

    @property
    def requests(self) -> int:
        """Requests (HTTP mode) or connections (TCP mode) taken, faulted or not."""
        with self._lock:
            return len(self.seen)

    def requests_to(self, prefix: str) -> int:
        with self._lock:
            return sum(1 for s in self.seen if s.path.startswith(prefix))

    def pending(self) -> int:
        """Faults scheduled and not yet fired."""
        with self._lock:
            return sum(r.count - r.fired for r in self._rules)

    def _choose(self, method: str | None, path: str | None, *, at_accept: bool) -> FaultKind | None:
        with self._lock:
            for rule in self._rules:
                if (rule.kind == "refuse" or self.mode == "tcp") != at_accept:
                    continue
                if not rule.applies(method, path):
                    continue
                rule.seen += 1
                if rule.seen <= rule.after:
                    continue
                rule.fired += 1
                self.fired[rule.kind] += 1
                return rule.kind
            return None

    def _record(self, method: str, path: str, fault: FaultKind | None) -> None:
        with self._lock:
            self.seen.append(Seen(method, path, fault))

    # -- serving ----------------------------------------------------------------------------------------
    def start(self) -> None:
        thread = threading.Thread(
            target=self._accept_loop, args=(self._listener,), name=f"faultproxy-{self.name}", daemon=True
        )
        thread.start()
        self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        with suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        with suppress(OSError):
            self._listener.close()
        with self._lock:
            open_now = list(self._sockets)
        for sock in open_now:
            with suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _untrack(self, *socks: socket.socket | None) -> None:
        for sock in socks:
            if sock is None:
                continue
            with self._lock:
                self._sockets.discard(sock)
            with suppress(OSError):
                sock.close()

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.mode == "http" and self._choose(None, None, at_accept=True) == "refuse":
                self._record("CONNECT", "", "refuse")
                _reset(client)
                continue
            self._track(client)
            handler = self._serve_http if self.mode == "http" else self._serve_tcp
            threading.Thread(target=handler, args=(client,), daemon=True).start()

    def _serve_http(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            reader = client.makefile("rb")
            head = _read_head(reader)
            if head is None:
                return
            method, path = (head.first_line.decode("latin-1").split(" ") + ["", ""])[:2]
            fault = self._choose(method, path, at_accept=False)
            self._record(method, path, fault)
            if fault == "reset":
                _reset(client)
                return
            body = _read_body(reader, head, until_close=False)
            if fault in ("http_502", "http_503", "rate_limit_429", "secondary_rate_limit"):
                client.sendall(_status_answer(fault, self.retry_after_s))
                return
            upstream = socket.create_connection(self.upstream, timeout=self.connect_timeout_s)
            upstream.settimeout(None)
            self._track(upstream)
            upstream.sendall(_encode(head.first_line, [*head.without("connection"), ("Connection", "close")]) + body)
            up_reader = upstream.makefile("rb")
            answer = _read_head(up_reader)
            if answer is None:
                _reset(client)
                return
            framing = answer.without("connection")
            if fault == "truncated":
                data = _read_body(up_reader, answer, until_close=True)
                if (answer.get("transfer-encoding") or "").lower().endswith("chunked"):
                    data = _dechunk(data)
                framing = [(k, v) for k, v in framing if k.lower() not in ("content-length", "transfer-encoding")]
                framing.append(("Content-Length", str(2 * len(data) + 16)))
                client.sendall(_encode(answer.first_line, [*framing, ("Connection", "close")]) + data[: len(data) // 2])
                return
            client.sendall(_encode(answer.first_line, [*framing, ("Connection", "close")]))
            if fault == "slow_body":
                self._stopping.wait(self.slow_s)
                return
            while chunk := up_reader.read1(65536):
                client.sendall(chunk)
        except OSError:
            pass
        finally:
            self._untrack(client, upstream)

    def _serve_tcp(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            fault = self._choose(None, None, at_accept=True)
            self._record("CONNECT", "", fault)
            if fault == "refuse":
                _reset(client)
                return
            first = client.recv(65536)
            if fault == "reset":
                _reset(client)
                return
            upstream = socket.create_connection(self.upstream, timeout=self.connect_timeout_s)
            upstream.settimeout(None)
            self._track(upstream)
            upstream.sendall(first)
            if fault == "slow_body":
                self._stopping.wait(self.slow_s)
                return
            pump = threading.Thread(target=self._pump, args=(client, upstream), daemon=True)
            pump.start()
            self._pump(upstream, client)
            pump.join(timeout=5)
        except OSError:
            pass
        finally:
            self._untrack(client, upstream)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        with suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


@contextmanager
def running_fault_proxy(upstream: str, *, mode: Mode = "http", **options: object) -> Iterator[FaultProxy]:
    """A started proxy in front of ``upstream`` (``host:port`` or a URL), stopped when the block ends."""
    proxy = FaultProxy(upstream, mode=mode, **options)  # type: ignore[arg-type]
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
