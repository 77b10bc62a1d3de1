"""GitHub Apps on the forge: registered Apps (public key, bot user), installations, installation tokens.

How GitHub does it, and the forge with it:

- the App signs a JWT (RS256, ``iss`` = App id, at most 10 minutes long) with its private key; the forge
  checks it against the public key given to ``Forge.register_app`` — the JWT authenticates only ``/app…``
  endpoints;
- ``POST /app/installations/{id}/access_tokens`` trades it for an installation token (``ghs_…``) that
  expires (``expires_at``; an hour on GitHub, ``Forge.installation_token_ttl_s`` here) and acts as the App's
  bot user ``<slug>[bot]`` on the installation's repositories only; an expired token is a 401.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from promptship_sandbox.forge.render import Renderer, User, node_id

DEFAULT_PERMISSIONS = {
    "contents": "write",
    "pull_requests": "write",
    "issues": "write",
    "checks": "read",
    "statuses": "read",
    "actions": "read",
    "metadata": "read",
}
DEFAULT_EVENTS = ["issues", "issue_comment", "check_suite", "check_run", "status"]
MAX_JWT_LIFETIME_S = 600  # GitHub: exp at most 10 minutes after iat
CLOCK_DRIFT_S = 60


def iso(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class App:
    id: int
    slug: str
    name: str
    public_key_pem: str
    owner: User
    bot: User
    created_at: str
    permissions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PERMISSIONS))
    events: list[str] = field(default_factory=lambda: list(DEFAULT_EVENTS))


@dataclass
class Installation:
    id: int
    app_id: int
    account: User
    created_at: str
    repositories: set[str] | None = None  # lower-case owner/name; None: all of the account's repositories

    def covers(self, full_name: str) -> bool:
        if self.repositories is None:
            return full_name.lower().split("/", 1)[0] == self.account.login.lower()
        return full_name.lower() in self.repositories


@dataclass(frozen=True)
class InstallationToken:
    installation_id: int
    expires_at: float  # epoch seconds, whole (GitHub's expires_at has second precision)


class AppAuthError(Exception):
    """A JWT the forge refuses (401), with GitHub's kind of message."""


def verify_jwt(token: str, apps: dict[int, App], now: float) -> App:
    """The App a JWT authenticates, checked like GitHub: RS256 signature by the App's key, ``iss`` an App,
    ``exp`` in the future, ``iat`` not in the future, at most 10 minutes between them."""
    import jwt

    try:
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise AppAuthError("A JSON web token could not be decoded") from None
    try:
        app = apps[int(unverified["iss"])]
    except (TypeError, ValueError, KeyError):
        raise AppAuthError("'Issuer' claim ('iss') must be an Integer of a registered App") from None
    try:
        claims = jwt.decode(
            token,
            key=app.public_key_pem,
            algorithms=["RS256"],
            options={"verify_exp": False, "verify_iat": False, "require": ["iat", "exp", "iss"]},
        )
    except jwt.PyJWTError:
        raise AppAuthError("A JSON web token could not be decoded") from None
    exp, iat = claims["exp"], claims["iat"]
    if not isinstance(exp, int) or exp <= now:
        raise AppAuthError(
            "'Expiration time' claim ('exp') must be a numeric value representing the future time at which "
            "the assertion expires"
        )
    if not isinstance(iat, int) or iat > now + CLOCK_DRIFT_S:
        raise AppAuthError(
            "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued"
        )
    if exp - iat > MAX_JWT_LIFETIME_S + CLOCK_DRIFT_S:
        raise AppAuthError("'Expiration time' claim ('exp') is too far in the future")
    return app


class AppRenderer:
    """GitHub JSON for Apps and installations (schemas ``integration``, ``installation``,
    ``installation-token``)."""

    def __init__(self, render: Renderer):
        self.render = render

    def integration(self, app: App, installations: int | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": app.id,
            "slug": app.slug,
            "node_id": node_id("A", app.id),
            "client_id": f"Iv1.{app.id:016x}",
            "owner": self.render.user(app.owner),
            "name": app.name,
            "description": f"{app.name} (a GitHub App on the local forge)",
            "external_url": self.render.web,
            "html_url": f"{self.render.web}/apps/{app.slug}",
            "created_at": app.created_at,
            "updated_at": app.created_at,
            "permissions": dict(app.permissions),
            "events": list(app.events),
        }
        if installations is not None:
            out["installations_count"] = installations
        return out

    def installation(self, inst: Installation, app: App) -> dict[str, Any]:
        api = self.render.api
        return {
            "id": inst.id,
            "account": self.render.user(inst.account),
            "repository_selection": "all" if inst.repositories is None else "selected",
            "access_tokens_url": f"{api}/app/installations/{inst.id}/access_tokens",
            "repositories_url": f"{api}/installation/repositories",
            "html_url": f"{self.render.web}/settings/installations/{inst.id}",
            "app_id": app.id,
            "client_id": f"Iv1.{app.id:016x}",
            "target_id": inst.account.id,
            "target_type": "Organization",
            "permissions": dict(app.permissions),
            "events": list(app.events),
            "created_at": inst.created_at,
            "updated_at": inst.created_at,
            "single_file_name": None,
            "has_multiple_single_files": False,
            "single_file_paths": [],
            "app_slug": app.slug,
            "suspended_by": None,
            "suspended_at": None,
            "contact_email": None,
        }

    def token(self, token: str, expires_at: float, inst: Installation, app: App) -> dict[str, Any]:
        return {
            "token": token,
            "expires_at": iso(expires_at),
            "permissions": dict(app.permissions),
            "repository_selection": "all" if inst.repositories is None else "selected",
        }

    def webhook_installation(self, inst: Installation, app: App) -> dict[str, Any]:
        """The ``installation`` object of installation webhooks (``webhooks_installation`` schema)."""
        data = self.installation(inst, app)
        for key in ("client_id", "has_multiple_single_files", "single_file_paths", "contact_email"):
            data.pop(key, None)
        return data

    @staticmethod
    def repository_ref(repo_id: int, full_name: str) -> dict[str, Any]:
        return {
            "id": repo_id,
            "node_id": node_id("R", repo_id),
            "name": full_name.split("/", 1)[1],
            "full_name": full_name,
            "private": True,
        }
