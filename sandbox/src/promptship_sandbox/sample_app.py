"""A tiny app published the way the local forge's CI publishes images (docs/CONTRACTS.md "Images"), for the
cluster tests, the benchmark and demos that need no forge.

``SampleApps(root).publish(mode)`` commits the app to a bare repository and writes the registry record, so the
image names a commit and the running process answers ``/version`` with that SHA. Modes: ``ok``; ``unready``
(/ready answers 503: pods never become ready); ``sick`` (ready, but /health answers 503); ``flaky`` (the 2nd
/health answers 503); ``crash`` (exits at start).
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

APP = """
import http.server, os, pathlib
SHA = os.environ.get("PROMPTSHIP_IMAGE_SHA", "unknown")
MODE = pathlib.Path("mode.txt").read_text().split()[0]
HITS = {"health": 0}

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code, body = 404, "not found"
        if self.path == "/ready":
            code, body = (503, "not ready") if MODE == "unready" else (200, "ready")
        elif self.path == "/health":
            HITS["health"] += 1
            bad = MODE == "sick" or (MODE == "flaky" and HITS["health"] == 2)
            code, body = (503, "unhealthy") if bad else (200, "ok")
        elif self.path == "/version":
            code, body = 200, SHA
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

if MODE == "crash":
    raise SystemExit(3)
http.server.ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler).serve_forever()
"""

DOCKERFILE = 'FROM python:3.11-slim\nWORKDIR /app\nCOPY . .\nCMD ["python", "app.py"]\n'


@dataclass
class Published:
    image: str
    sha: str


class SampleApps:
    """A bare repository plus a registry directory, as the local forge's CI would leave them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.registry = root / "registry"
        self.git_dir = root / "git" / "sandbox" / "testapp.git"
        self.work = root / "work"
        self.env = {
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid",
        }
        self._git("init", "-q", "--bare", str(self.git_dir), cwd=root)
        self._git("init", "-q", "-b", "main", str(self.work), cwd=root)
        (self.work / "app").mkdir()
        (self.work / "app" / "app.py").write_text(APP)
        (self.work / "app" / "Dockerfile").write_text(DOCKERFILE)

    def _git(self, *args: str, cwd: Path) -> str:
        return subprocess.run(["git", *args], cwd=cwd, env=self.env, check=True, capture_output=True, text=True).stdout

    def publish(self, mode: str = "ok") -> Published:
        (self.work / "app" / "mode.txt").write_text(f"{mode} {uuid.uuid4().hex}\n")
        self._git("add", "-A", cwd=self.work)
        self._git("commit", "-q", "-m", f"app in mode {mode}", cwd=self.work)
        sha = self._git("rev-parse", "HEAD", cwd=self.work).strip()
        self._git("push", "-q", str(self.git_dir), "HEAD:refs/heads/main", cwd=self.work)
        image = f"forge.local/sandbox/testapp/app:{sha}"
        record = self.registry / "sandbox" / "testapp" / "app" / f"{sha}.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(
            json.dumps(
                {
                    "image": image,
                    "repository": "sandbox/testapp",
                    "sha": sha,
                    "context": "app",
                    "git_dir": str(self.git_dir),
                }  # fmt: skip
            )
        )
        return Published(image=image, sha=sha)


def publish_directory(source: Path, root: Path, owner: str, repo: str) -> dict[str, Published]:
    """Commit a copy of ``source`` (e.g. ``examples/chat-app``) to a bare repository under ``root`` and publish
    one image per top-level directory holding a Dockerfile, as the forge's CI does for a green base branch.
    Returns ``{context: Published}``; the registry is ``root / "registry"``."""
    import shutil

    work = root / "work" / owner / repo
    git_dir = root / "git" / owner / f"{repo}.git"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}  # fmt: skip

    def git(*args: str, cwd: Path) -> str:
        return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout

    ignore = shutil.ignore_patterns("node_modules", ".venv", "__pycache__", "dist", ".pytest_cache")
    shutil.copytree(source, work, ignore=ignore)
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "--bare", str(git_dir), cwd=root)
    git("init", "-q", "-b", "main", str(work), cwd=root)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", f"{repo} from {source.name}", cwd=work)
    git("push", "-q", str(git_dir), "HEAD:refs/heads/main", cwd=work)
    sha = git("rev-parse", "HEAD", cwd=work).strip()
    published: dict[str, Published] = {}
    for dockerfile in sorted(work.glob("*/Dockerfile")):
        context = dockerfile.parent.name
        image = f"forge.local/{owner}/{repo}/{context}:{sha}"
        record = root / "registry" / owner / repo / context / f"{sha}.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"image": image, "repository": f"{owner}/{repo}", "sha": sha,
                                      "context": context, "git_dir": str(git_dir)}))  # fmt: skip
        published[context] = Published(image=image, sha=sha)
    return published


def sample_manifests(
    image: str, *, name: str = "web", progress_deadline_s: int = 6, replicas: int = 1
) -> list[dict[str, Any]]:
    """A Deployment (readiness probe on /ready) and a Service for the sample app."""
    return [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "replicas": replicas,
                "progressDeadlineSeconds": progress_deadline_s,
                "revisionHistoryLimit": 5,
                "selector": {"matchLabels": {"app": name}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "terminationGracePeriodSeconds": 2,
                        "containers": [
                            {
                                "name": "app",
                                "image": image,
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1},
                            }
                        ],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": "http"}]},
        },
    ]
