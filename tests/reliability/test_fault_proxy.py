"""The fault proxy on its own: httpx through it to a tiny upstream (a real HTTP server on 127.0.0.1), each fault
kind as the client sees it, and the counts the campaign's table is built from."""

from __future__ import annotations

import json
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from promptship_sandbox.faultproxy import (
    FAULT_KINDS,
    SECONDARY_RATE_LIMIT_MESSAGE,
    FaultProxy,
    ProxyError,
    running_fault_proxy,
)

BODY = b"x" * 5000


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802
        self.hits.append(self.path)
        if self.path.startswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (BODY[:2000], BODY[2000:]):
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def do_POST(self) -> None:  # noqa: N802
        self.hits.append(self.path)
        data = self.rfile.read(int(self.headers["Content-Length"]))
        answer = json.dumps({"got": len(data)}).encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[tuple[str, list[str]]]:
    hits: list[str] = []
    handler = type("Handler", (_Upstream,), {"hits": hits})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


def test_without_a_fault_requests_pass_through_unchanged(upstream: tuple[str, list[str]]) -> None:
    address, hits = upstream
    with running_fault_proxy(address) as proxy, httpx.Client(base_url=proxy.url, timeout=5) as client:
        assert client.get("/a").content == BODY
        assert client.get("/chunked").content == BODY
        assert client.post("/b", content=b"y" * 70000).json() == {"got": 70000}
        assert proxy.requests == 3 and not proxy.fired and hits == ["/a", "/chunked", "/b"]


@pytest.mark.parametrize(
    ("kind", "status"), [("http_502", 502), ("http_503", 503), ("rate_limit_429", 429), ("secondary_rate_limit", 403)]
)
def test_status_faults_answer_instead_of_the_upstream(upstream: tuple[str, list[str]], kind: str, status: int) -> None:
    address, hits = upstream
    with running_fault_proxy(address, retry_after_s=7) as proxy, httpx.Client(base_url=proxy.url, timeout=5) as c:
        proxy.inject(kind, count=2, match="/repos/")  # type: ignore[arg-type]
        assert c.get("/other").status_code == 200  # not matched
        first, second, third = (c.get("/repos/x") for _ in range(3))
        assert (first.status_code, second.status_code, third.status_code) == (status, status, 200)
        assert proxy.fired[kind] == 2 and proxy.requests == 4 and hits == ["/other", "/repos/x"]
        if kind in ("rate_limit_429", "secondary_rate_limit"):
            assert first.headers["retry-after"] == "7"
        if kind == "secondary_rate_limit":
            assert first.json()["message"] == SECONDARY_RATE_LIMIT_MESSAGE


def test_reset_breaks_the_request_and_the_next_one_goes_through(upstream: tuple[str, list[str]]) -> None:
    address, hits = upstream
    with running_fault_proxy(address) as proxy, httpx.Client(base_url=proxy.url, timeout=5) as client:
        proxy.inject("reset", match="/a", method="POST")
        assert client.get("/a").status_code == 200  # a GET: not matched
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError)):
            client.post("/a", content=b"z" * 100)
        assert client.post("/a", content=b"z").status_code == 201
        assert proxy.fired["reset"] == 1 and hits == ["/a", "/a"]


def test_refuse_resets_at_accept_before_any_byte(upstream: tuple[str, list[str]]) -> None:
    address, hits = upstream
    with running_fault_proxy(address) as proxy, httpx.Client(base_url=proxy.url, timeout=5) as client:
        proxy.inject("refuse", count=2)
        for _ in range(2):
            with pytest.raises(httpx.TransportError):
                client.get("/a")
        assert client.get("/a").status_code == 200
        assert proxy.fired["refuse"] == 2 and hits == ["/a"]


def test_connect_refused_is_a_real_econnrefused_until_cleared(upstream: tuple[str, list[str]]) -> None:
    address, hits = upstream
    with running_fault_proxy(address) as proxy:
        url = proxy.url
        proxy.inject("connect_refused")
        for _ in range(2):  # the kernel refuses: nothing listens on the port
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", proxy.port), timeout=2).close()
            with pytest.raises(httpx.ConnectError):
                httpx.get(url + "/a", timeout=2)
        assert hits == [] and proxy.requests == 0 and proxy.fired["connect_refused"] == 1
        proxy.clear()
        assert proxy.url == url and httpx.get(url + "/a", timeout=5).status_code == 200
        assert hits == ["/a"]


def test_dns_failure_names_a_host_that_never_resolves_until_cleared(upstream: tuple[str, list[str]]) -> None:
    address, hits = upstream
    with running_fault_proxy(address, name="forge-rest") as proxy:
        good = proxy.url
        proxy.inject("dns_failure")
        host = proxy.unresolvable_host
        assert host.endswith(".invalid") and proxy.url == f"http://{host}:{proxy.port}"
        with pytest.raises(socket.gaierror):
            socket.getaddrinfo(host, proxy.port)
        with pytest.raises(httpx.ConnectError):
            httpx.get(proxy.url + "/a", timeout=5)
        assert hits == [] and proxy.fired["dns_failure"] == 1
        proxy.clear()
        assert proxy.url == good and httpx.get(proxy.url + "/a", timeout=5).status_code == 200


def test_slow_body_outlasts_the_client_timeout(upstream: tuple[str, list[str]]) -> None:
    address, _ = upstream
    with running_fault_proxy(address, slow_s=5) as proxy, httpx.Client(base_url=proxy.url, timeout=0.5) as client:
        proxy.inject("slow_body")
        with pytest.raises(httpx.ReadTimeout):
            client.get("/a")
        assert client.get("/a").content == BODY and proxy.fired["slow_body"] == 1


@pytest.mark.parametrize("path", ["/a", "/chunked"])
def test_truncated_promises_more_than_it_sends(upstream: tuple[str, list[str]], path: str) -> None:
    address, _ = upstream
    with running_fault_proxy(address) as proxy, httpx.Client(base_url=proxy.url, timeout=5) as client:
        proxy.inject("truncated")
        with pytest.raises(httpx.RemoteProtocolError):
            client.get(path)
        assert client.get(path).content == BODY and proxy.fired["truncated"] == 1


def test_after_lets_the_first_matching_requests_through(upstream: tuple[str, list[str]]) -> None:
    address, _ = upstream
    with running_fault_proxy(address) as proxy, httpx.Client(base_url=proxy.url, timeout=5) as client:
        proxy.inject("http_503", after=2)
        assert [client.get("/a").status_code for _ in range(4)] == [200, 200, 503, 200]
        assert proxy.pending() == 0


def test_tcp_mode_forwards_tls_and_faults_connections() -> None:
    """A TLS upstream (as the kube-apiserver is): the proxy relays bytes; faults act on whole connections."""
    import subprocess
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        key, cert = Path(tmp) / "k.pem", Path(tmp) / "c.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True,
        )  # fmt: skip
        server = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Upstream,), {"hits": []}))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        # the handshake in each handler's thread, not in accept (a stalled client must not block the next one)
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            address = f"127.0.0.1:{server.server_address[1]}"
            with running_fault_proxy(address, mode="tcp", slow_s=5) as proxy:
                with pytest.raises(ProxyError):
                    proxy.inject("http_503")
                url = f"https://{proxy.address}/a"
                with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=1) as client:
                    assert client.get(url).content == BODY
                proxy.inject("refuse")
                proxy.inject("slow_body")
                for error in (httpx.TransportError, httpx.TimeoutException):
                    with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=1) as client:
                        with pytest.raises(error):
                            client.get(url)
                with httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), timeout=1) as client:
                    assert client.get(url).content == BODY
                assert proxy.fired == {"refuse": 1, "slow_body": 1} and proxy.requests == 4
        finally:
            server.shutdown()
            server.server_close()


def test_a_bad_schedule_is_refused_and_changes_nothing(upstream: tuple[str, list[str]]) -> None:
    address, _ = upstream
    with running_fault_proxy(address) as proxy:
        for kind, count in (("no_such_fault", 1), ("http_503", 0)):
            with pytest.raises(ProxyError):
                proxy.inject(kind, count=count)  # type: ignore[arg-type]
        assert proxy.pending() == 0
    with pytest.raises(ProxyError, match="host:port"):
        FaultProxy("no-port-here")
    assert len(FAULT_KINDS) == 10


def test_stop_ends_a_stalled_answer_and_closes_the_port(upstream: tuple[str, list[str]]) -> None:
    address, _ = upstream
    with running_fault_proxy(address, slow_s=60) as proxy:
        proxy.inject("slow_body")
        errors: list[BaseException] = []

        def stalled() -> None:
            try:
                httpx.get(proxy.url + "/a", timeout=30)
            except httpx.HTTPError as exc:
                errors.append(exc)

        thread = threading.Thread(target=stalled)
        thread.start()
        while proxy.fired["slow_body"] == 0:
            threading.Event().wait(0.05)
    thread.join(timeout=10)
    assert not thread.is_alive() and errors
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1)
