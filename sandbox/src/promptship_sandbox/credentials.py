"""The sandbox's own credentials, in the formats of the real services, made up at run time.

Nothing here is committed or reused: each call draws a new value from ``secrets``. The formats are the real ones
(or, for promptship's own keys, the format promptship mints), so that a leak of a sandbox credential is seen by
any scanner that knows the real format — ``promptship.domain.gate``'s rules recognise every one of them.

- GitHub: ``ghp_`` (personal access token) / ``ghs_`` (installation token) + 36 base62 characters.
- OpenRouter: ``sk-or-v1-`` + 64 lower-case hex.
- Agent-server session key: ``psk-sess-`` + 43 url-safe base64 (promptship's own key format, as its ``psk-run-``
  per-run gateway keys).
- Webhook secret: GitHub lets the owner choose it; the sandbox uses 32 bytes of hex with a credential-word prefix
  (``whsec_``) so the entropy rules see it as a secret wherever it lands next to its name.
- The store's prompt key: a Fernet key (``promptship.store.sealing.PromptCipher.new_key``).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable

from promptship.domain.gate import is_not_a_secret

_BASE62 = string.ascii_letters + string.digits


def _recognisable(draw: Callable[[], str]) -> str:
    """A draw the gate would take for a placeholder (a random run that spells ``fAKE`` or ``Sample``: about 1 in
    20 000 for 36-43 random characters) is drawn again: a sandbox credential must be seen wherever it leaks."""
    while is_not_a_secret(value := draw()):
        pass
    return value


def github_token(prefix: str = "ghp_") -> str:
    """A token in GitHub's format: ``ghp_``/``ghs_``/… + 36 base62 characters."""
    return _recognisable(lambda: prefix + "".join(secrets.choice(_BASE62) for _ in range(36)))


def openrouter_key() -> str:
    """An API key in OpenRouter's format: ``sk-or-v1-`` + 64 hex."""
    return _recognisable(lambda: "sk-or-v1-" + secrets.token_hex(32))


def session_key() -> str:
    """An agent-server session key in promptship's own key format: ``psk-sess-`` + 43 url-safe base64."""
    from promptship.adapters.llm import new_key

    return new_key("psk-sess-")


def webhook_secret() -> str:
    """A webhook secret: ``whsec_`` + 64 hex."""
    return "whsec_" + secrets.token_hex(32)


def store_key() -> str:
    """A Fernet key for the store's sealed prompts."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
