"""promptship as a GitHub App: installation access tokens through PyGithub, refreshed before they expire.

PyGithub's ``Auth.AppAuth`` signs the App's JWT (RS256, the App's private key); ``InstallationTokenAuth``
(PyGithub's ``Auth.AppInstallationAuth``) trades it for an installation token on
``POST /app/installations/{id}/access_tokens`` and keeps it in memory only. It refreshes the token
``refresh_margin_s`` before ``expires_at`` on an injected clock, not PyGithub's 20 seconds: a git push that
starts with a token must finish with it. ``current()`` is the token for git (``GitHubHost`` asks once per
clone, fetch or push), so REST calls and git always use a live token.

Nothing here logs a token; PyGithub masks it in its own debug logging.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from github import Auth, Github, GithubException, GithubIntegration
from github.InstallationAuthorization import InstallationAuthorization
from pydantic import SecretStr

from promptship.errors import CodeHostError, ConfigError


class InstallationTokenAuth(Auth.AppInstallationAuth):
    """An installation's access token for PyGithub and git, renewed ``refresh_margin_s`` before it expires."""

    def __init__(
        self,
        app_auth: Auth.AppAuth,
        installation_id: int,
        *,
        clock: Callable[[], float] = time.time,
        refresh_margin_s: float = 300.0,
    ):
        super().__init__(app_auth, installation_id)
        self._clock = clock
        self._margin_s = refresh_margin_s
        self._lock = threading.Lock()
        self._authorization: InstallationAuthorization | None = None
        self.refreshes = 0  # how many tokens were fetched (tests, benchmarks)

    @property
    def token(self) -> str:
        """The current installation token (fetched now when none is held or it expires within the margin)."""
        with self._lock:
            held = self._authorization
            if held is None or held.expires_at.timestamp() - self._margin_s <= self._clock():
                try:
                    held = self._get_installation_authorization()
                except GithubException as exc:
                    raise CodeHostError(
                        f"GitHub App {self.app_id}: no installation token for installation {self.installation_id} "
                        f"({exc.status})",
                        retryable=exc.status >= 500,
                        status=exc.status,
                    ) from None
                self._authorization = held
                self.refreshes += 1
            return held.token

    def current(self) -> SecretStr:
        """The token git should use for the operation about to start."""
        return SecretStr(self.token)


@dataclass(frozen=True)
class AppIdentity:
    """Who the App is on GitHub: its slug, and the bot user commits and comments are attributed to."""

    slug: str
    bot_login: str
    bot_id: int

    @property
    def committer(self) -> tuple[str, str]:
        """Git's name and e-mail for the bot, the form GitHub links to ``<slug>[bot]``."""
        return self.bot_login, f"{self.bot_id}+{self.bot_login}@users.noreply.github.com"


def app_auth(app_id: int, private_key_pem: str) -> Auth.AppAuth:
    """PyGithub's App authentication (JWTs signed with ``private_key_pem``)."""
    if "PRIVATE KEY" not in private_key_pem:
        raise ConfigError(
            "PROMPTSHIP_GITHUB__APP_PRIVATE_KEY(_FILE) is not a PEM private key: use the .pem file GitHub "
            "generated under the App's settings → Private keys"
        )
    return Auth.AppAuth(app_id, private_key_pem)


def find_installation(integration: GithubIntegration, repositories: list[str]) -> int:
    """The installation id of the App on the first of ``repositories`` (owner/name), else the App's only
    installation. ConfigError when neither answers."""
    try:
        if repositories:
            owner, name = repositories[0].split("/", 1)
            return integration.get_repo_installation(owner, name).id
        installations = list(integration.get_installations())
    except GithubException as exc:
        where = f"on {repositories[0]}" if repositories else "anywhere"
        raise ConfigError(
            f"the GitHub App is not installed {where} ({exc.status}): install it on the repository, or set "
            "PROMPTSHIP_GITHUB__APP_INSTALLATION_ID"
        ) from None
    if len(installations) != 1:
        raise ConfigError(
            f"the GitHub App has {len(installations)} installations: set PROMPTSHIP_GITHUB__APP_INSTALLATION_ID "
            "or PROMPTSHIP_GITHUB__ALLOWED_REPOSITORIES (the installation of its first repository is used)"
        )
    return installations[0].id


def app_identity(integration: GithubIntegration, gh: Github) -> AppIdentity:
    """The App's slug (``GET /app``, as the App) and its bot user's id (``GET /users/<slug>[bot]``)."""
    try:
        slug = integration.get_app().slug
        bot = gh.get_user(f"{slug}[bot]")
        return AppIdentity(slug=slug, bot_login=bot.login, bot_id=bot.id)
    except GithubException as exc:
        raise ConfigError(
            f"the GitHub App's identity could not be read ({exc.status}): check the App id and key"
        ) from None
