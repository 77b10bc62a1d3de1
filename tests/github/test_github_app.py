"""promptship as a GitHub App against the forge: PyGithub's ``Auth.AppAuth`` JWT, installation tokens that
expire and are renewed mid-run (git too), the bot user's attribution, the installation's limits."""

from __future__ import annotations

import functools
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from pydantic import SecretStr

from promptship.adapters.github import GitHubHost
from promptship.adapters.github_app import InstallationTokenAuth
from promptship.domain.request import branch_for
from promptship.errors import ConfigError
from promptship.settings import GitHubSettings, Settings
from promptship.wiring import build_code_host
from promptship_sandbox.forge import Forge
from tests.conftest import require
from tests.github.conftest import NAME, OWNER, REPO
from tests.github.test_forge_openapi import _explain, _validate, github_openapi  # noqa: F401  (fixture)

pytestmark = pytest.mark.forge

APP_ID = 4242
SLUG = "promptship"
BOT = f"{SLUG}[bot]"


def _rsa_key() -> tuple[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.fixture(scope="module")
def app_key() -> tuple[str, str]:
    return _rsa_key()


@dataclass
class ShiftedClock:
    """Wall-clock seconds plus a shift the test moves forward (shared by the forge and the token's owner)."""

    shift_s: float = 0.0

    def __call__(self) -> float:
        return time.time() + self.shift_s


@dataclass
class AsApp:
    forge: Forge
    host: GitHubHost
    auth: InstallationTokenAuth
    clock: ShiftedClock
    installation_id: int


def _settings(forge: Forge, private_pem: str, **github: Any) -> Settings:
    return Settings(
        github=GitHubSettings(api_url=forge.api_url, app_id=APP_ID, app_private_key=SecretStr(private_pem), **github)
    )


@pytest.fixture
def as_app(forge: Forge, app_key: tuple[str, str]) -> AsApp:
    private, public = app_key
    forge.register_app(APP_ID, public, slug=SLUG)
    installation_id = forge.install_app(APP_ID, OWNER, [REPO])
    clock = ShiftedClock()
    forge.clock = clock
    # the installation is discovered from the allowlist (no installation id given)
    host = build_code_host(_settings(forge, private, allowed_repositories=[REPO]), clock=clock)
    auth = host._gh.requester.auth  # type: ignore[attr-defined]
    assert isinstance(auth, InstallationTokenAuth) and auth.installation_id == installation_id
    return AsApp(forge, host, auth, clock, installation_id)


def _status(forge: Forge, token: str, path: str = f"/repos/{REPO}") -> int:
    return requests.get(f"{forge.api_url}{path}", headers={"Authorization": f"token {token}"}, timeout=10).status_code


def test_token_expires_between_clone_and_push_and_the_push_uses_a_fresh_one(as_app: AsApp, tmp_path: Path):
    forge, host, auth = as_app.forge, as_app.host, as_app.auth
    branch = branch_for("app-run")
    ws = Path(host.prepare_workspace(REPO, "main", branch, str(tmp_path / "ws")))
    first = auth.token
    fetched = auth.refreshes

    as_app.clock.shift_s += forge.installation_token_ttl_s + 1  # an hour later: the clone's token is dead
    assert forge.installation_token_expired(first) and _status(forge, first) == 401

    (ws / "feature.txt").write_text("made by the App\n")
    sha = host.push_branch(REPO, str(ws), branch)
    assert auth.refreshes == fetched + 1 and auth.token != first
    assert not forge.installation_token_expired(auth.token)
    git_dir = forge.root / "git" / OWNER / f"{NAME}.git"
    tip = subprocess.run(
        ["git", "--git-dir", str(git_dir), "log", "-1", "--format=%H%n%an%n%ae%n%cn", f"refs/heads/{branch}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    bot_id = forge._users[BOT].id
    assert tip[:4] == [sha, BOT, f"{bot_id}+{BOT}@users.noreply.github.com", BOT]

    # REST keeps working on the fresh token, and the bot is the author of what promptship writes
    pr = host.find_or_create_pull_request(
        REPO, run_key="app-run", branch=branch, base_branch="main", title="by the App", body="b", labels=("x",)
    )
    host.comment(REPO, pr.number, "status: PR opened")
    issue = forge._repos[REPO].issues[pr.number]
    assert issue.user.login == BOT and [c.user.login for c in issue.comments] == [BOT]
    assert forge.wait_idle(120)
    assert host.wait_for_ci(REPO, sha, timeout_s=300).verdict == "passed"
    assert forge.rejected_requests == []


def test_tokens_stay_out_of_errors_and_the_installation_limits_hold(as_app: AsApp, tmp_path: Path):
    forge, host = as_app.forge, as_app.host
    forge.seed_repository(OWNER, "elsewhere", Path(__file__).parent)  # not in the installation
    assert forge.wait_idle(120)
    token = as_app.auth.token
    assert _status(forge, token) == 200 and _status(forge, token, f"/repos/{OWNER}/elsewhere") == 404
    with pytest.raises(Exception) as caught:
        host.prepare_workspace(f"{OWNER}/elsewhere", "main", "b", str(tmp_path / "ws2"))
    assert token not in str(caught.value)
    # the App's JWT opens only the /app endpoints
    jwt = as_app.auth._app_auth.create_jwt()
    assert _status(forge, jwt, "/app") == 200 and _status(forge, jwt, f"/repos/{REPO}") == 401
    assert _status(forge, token, "/app") == 401


def test_a_jwt_signed_with_another_key_or_expired_is_refused(forge: Forge, app_key: tuple[str, str]):
    from github import Auth, GithubException, GithubIntegration

    forge.register_app(APP_ID, app_key[1], slug=SLUG)
    forge.install_app(APP_ID, OWNER, None)
    other_private, _ = _rsa_key()
    with pytest.raises(GithubException) as caught:
        GithubIntegration(base_url=forge.api_url, auth=Auth.AppAuth(APP_ID, other_private)).get_app()
    assert caught.value.status == 401
    import jwt as pyjwt

    now = int(time.time())
    stale = pyjwt.encode({"iat": now - 700, "exp": now - 60, "iss": str(APP_ID)}, app_key[0], algorithm="RS256")
    assert _status(forge, stale, "/app") == 401
    # the only installation is found without an allowlist; the right key builds a host
    host = build_code_host(_settings(forge, app_key[0]))
    assert host._gh.get_repo(REPO).full_name == REPO  # type: ignore[attr-defined]


def test_app_settings_fail_with_a_message_naming_the_fix(forge: Forge, app_key: tuple[str, str]):
    forge.register_app(APP_ID, app_key[1], slug=SLUG)
    with pytest.raises(ConfigError, match="not installed on demo/app"):
        build_code_host(_settings(forge, app_key[0], allowed_repositories=[REPO]))
    with pytest.raises(ConfigError, match="APP_PRIVATE_KEY_FILE"):
        build_code_host(Settings(github=GitHubSettings(api_url=forge.api_url, app_id=APP_ID)))
    with pytest.raises(ConfigError, match="not a PEM private key"):
        build_code_host(_settings(forge, "ghp_not-a-key"))


@functools.lru_cache(maxsize=1)
def _lenient_openapi() -> Any:
    from jsonschema_path import SchemaPath
    from openapi_core import Config, OpenAPI

    from promptship_sandbox import specs

    spec = json.loads(specs.github_openapi_path().read_text(encoding="utf-8"))
    return OpenAPI(SchemaPath.from_dict(spec), config=Config(spec_validator_cls=None))


def test_the_app_endpoints_answer_as_githubs_description_says(
    as_app: AsApp,
    github_openapi: Any,  # noqa: F811
):
    from github import Auth, GithubIntegration

    require("@octokit/openapi", as_app.forge.request_checker is not None, "run `make specs`")
    integration = GithubIntegration(base_url=as_app.forge.api_url, auth=as_app.auth._app_auth)
    integration.get_app()
    integration.get_app_installation(as_app.installation_id)
    assert [i.id for i in integration.get_installations()] == [as_app.installation_id]
    integration.get_repo_installation(OWNER, NAME)
    integration.get_access_token(as_app.installation_id)
    assert isinstance(as_app.auth._app_auth, Auth.AppAuth)
    problems, checked = [], 0
    lenient = _lenient_openapi()
    for logged in as_app.forge.requests:
        if not (
            logged.path.startswith("/api/v3/app") or logged.path.endswith("/installation") or "/users/" in logged.path
        ):
            continue
        try:
            # GET /app/installations: its items' account is allOf(simple-user, enterprise), which no object
            # satisfies once unknown properties are forbidden in each member — checked without that rule
            _validate(lenient if logged.path.rstrip("/") == "/api/v3/app/installations" else github_openapi, logged)
            checked += 1
        except Exception as exc:
            problems.append(f"{logged.method} {logged.path} -> {logged.status}: {_explain(exc)}")
    assert not problems, "\n".join(problems)
    assert checked >= 8
    assert json.loads(next(r for r in as_app.forge.requests if r.path.endswith("/access_tokens")).response_body)[
        "expires_at"
    ].endswith("Z")
