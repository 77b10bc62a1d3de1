"""Prompts kept sealed: encrypted at rest in the store, readable only with the store's prompt key.

A prompt may carry a credential (the gate sends such requests to local models only). Prefect must never hold it
(flow-run parameters, event payloads and the UI keep only the redacted prompt and a ``sealed`` id), and neither
may the store's tables in clear text: the request is kept as a Fernet token (AES-128-CBC + HMAC-SHA256, from
``cryptography``) under its id, and only a process with the key — the worker's flow runs, the webhook receiver
that seals what it starts — can read it back.

The key: ``PROMPTSHIP_STORE_KEY`` (required when the store is shared, i.e. not SQLite), else, for a SQLite store
on one machine, a key file beside the database (``<db>.key``, mode 0600, created once by whichever process comes
first).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr
from sqlalchemy.engine import make_url

from promptship.domain.request import DevRequest, sealed_id_for
from promptship.errors import ConfigError


class PromptCipher:
    """Seals and opens requests with one Fernet key."""

    def __init__(self, key: bytes | str):
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(
                "the store's prompt key (PROMPTSHIP_STORE_KEY) is not a Fernet key: 32 url-safe base64-encoded "
                "bytes; `promptship store-key` prints a new one"
            ) from None

    @staticmethod
    def new_key() -> str:
        return Fernet.generate_key().decode()

    def seal(self, request: DevRequest) -> tuple[str, str]:
        """``(id, token)``: the id is the request key and a digest of this exact request (the same request sealed
        twice has one id; a sealed form still tells its request key); the token is its encrypted JSON."""
        plain = request.model_dump_json().encode()
        sealed_id = sealed_id_for(request.run_key, hashlib.sha256(plain).hexdigest()[:16])
        return sealed_id, self._fernet.encrypt(plain).decode()

    def open(self, token: str) -> DevRequest:
        try:
            plain = self._fernet.decrypt(token.encode())
        except InvalidToken:
            raise ConfigError(
                "a sealed prompt in the store cannot be opened with this store key: it was sealed with another "
                "PROMPTSHIP_STORE_KEY (or the store's key file was replaced)"
            ) from None
        return DevRequest.model_validate_json(plain)


def prompt_cipher(store_url: str, store_key: SecretStr | None) -> PromptCipher:
    """The cipher of the store at ``store_url``: ``store_key``; for a SQLite store without one, the key file
    beside the database (created once). A shared store (any other database) needs ``store_key``: each pod would
    otherwise make a key of its own and none could read the others' prompts."""
    if store_key is not None:
        return PromptCipher(store_key.get_secret_value())
    url = make_url(store_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        raise ConfigError(
            "the store is shared (PROMPTSHIP_DATABASE_URL is not a SQLite file), so its prompt key must be given: "
            "set PROMPTSHIP_STORE_KEY (`promptship store-key` prints a new one) to the same value in every component"
        )
    return PromptCipher(load_or_create_key_file(key_file_for(Path(url.database))))


def key_file_for(sqlite_path: Path) -> Path:
    return sqlite_path.with_name(sqlite_path.name + ".key")


def load_or_create_key_file(path: Path) -> bytes:
    """The key in ``path``, created (0600) if absent. Safe when several processes start at once: the key is
    written to a temporary file and linked into place, so every process reads the one that won."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, PromptCipher.new_key().encode())
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process linked its key first: use that one
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()
