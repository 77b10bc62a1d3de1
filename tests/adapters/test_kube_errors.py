"""KubeCluster's translation of API failures into ClusterError, over real HTTP (a scripted API server on
127.0.0.1 and the kubernetes client): 5xx/429/unreachable are retryable, 4xx are not, 404 is an answer."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from promptship.adapters.kube import KubeCluster
from promptship.domain.request import DeployTarget
from promptship.errors import ClusterError

TARGET = DeployTarget(namespace="demo", deployment="web", container="app")


class _Api(http.server.ThreadingHTTPServer):
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.status, self.headers = status, headers or {}
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Api  # type: ignore[assignment]

    def do_GET(self) -> None:
        body = json.dumps({"kind": "Status", "status": "Failure", "message": f"scripted {self.server.status}",
                           "code": self.server.status}).encode()  # fmt: skip
        self.send_response(self.server.status)
        for k, v in self.server.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _kube(port: int) -> KubeCluster:
    from kubernetes import client

    cfg = client.Configuration()
    cfg.host = f"http://127.0.0.1:{port}"
    cfg.api_key = {"BearerToken": "not-a-real-token"}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    cfg.retries = 0
    return KubeCluster(client.ApiClient(cfg), request_timeout_s=5)


@pytest.fixture
def api() -> Iterator[Any]:
    servers: list[_Api] = []

    def start(status: int, headers: dict[str, str] | None = None) -> int:
        s = _Api(status, headers)
        threading.Thread(target=s.serve_forever, daemon=True).start()
        servers.append(s)
        return s.server_address[1]

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


@pytest.mark.parametrize(
    ("status", "headers", "retryable", "retry_after"),
    [
        (503, {}, True, None),
        (500, {}, True, None),
        (429, {"Retry-After": "7"}, True, 7.0),
        # Retry-After goes through domain.retrying: an HTTP-date (here long past) and a value that is neither
        (429, {"Retry-After": "Thu, 01 Jan 1970 00:01:40 GMT"}, True, 0.0),
        (503, {"Retry-After": "soon"}, True, None),
        (403, {}, False, None),
        (401, {}, False, None),
    ],
)
def test_api_failures_become_cluster_errors(api, status: int, headers: dict, retryable: bool, retry_after) -> None:
    kube = _kube(api(status, headers))
    with pytest.raises(ClusterError) as info:
        kube.current_image(TARGET)
    err = info.value
    assert (err.status, err.retryable, err.retry_after_s) == (status, retryable, retry_after)
    assert f"scripted {status}" in str(err) and "not-a-real-token" not in str(err)


def test_a_missing_deployment_is_an_answer_not_an_error(api) -> None:
    assert _kube(api(404)).current_image(TARGET) is None


def test_an_unreachable_api_server_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ClusterError) as info:
        _kube(port).current_image(TARGET)
    assert info.value.retryable and "unreachable" in str(info.value)


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{port}"}}}}]
users: [{{name: u, user: {{token: not-a-real-token}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
"""


def test_the_wired_client_makes_one_connection_per_request(tmp_path) -> None:
    """urllib3 retries a dropped connection 3 times by default; the step layer retries, so wiring turns that
    off: a server that hangs up on every request sees exactly one connection per request."""
    from promptship.settings import Settings
    from promptship.wiring import build_cluster

    accepted: list[int] = []
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def hang_up() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG.format(port=listener.getsockname()[1]))
    settings = Settings(home=tmp_path / "home")
    settings.kube.kubeconfig = kubeconfig
    try:
        with pytest.raises(ClusterError) as info:
            build_cluster(settings).current_image(TARGET)
    finally:
        listener.close()
    assert info.value.retryable and "unreachable" in str(info.value)
    assert len(accepted) == 1
