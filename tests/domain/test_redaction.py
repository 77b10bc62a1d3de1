"""The redaction every report, run name and PR title relies on: each known secret format is hidden whole."""

from __future__ import annotations

import pytest

from promptship.domain.redaction import REDACTED, redact

# Made-up values in the real formats (none is a real credential).
_KEY_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun"


@pytest.mark.parametrize(
    ("secret", "body"),
    [
        ("ghp_Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz9Xc8", "Zx9Qw8Er7Ty6Ui5Op4As3Df2Gh1Jk0Lz9Xc8"),
        ("gho_aB3aB3aB3aB3aB3aB3aB3aB3aB3aB3aB3aB3", "aB3aB3aB3aB3aB3aB3aB3aB3aB3aB3aB3aB3"),
        ("github_pat_11ABCDEFG0abcdefghijklmnopqrstuvwxyz0123", "abcdefghijklmnopqrstuvwxyz0123"),
        ("sk-proj-Ab3dEAb3dEAb3dEAb3dEAb3dEAb3dE", "Ab3dEAb3dEAb3dEAb3dEAb3dEAb3dE"),
        ("AKIAQWERTYUIOPASDFGH", "QWERTYUIOPASDFGH"),
        (f"-----BEGIN RSA PRIVATE KEY-----\n{_KEY_BODY}\n-----END RSA PRIVATE KEY-----", _KEY_BODY),
    ],
)
def test_a_secret_is_redacted_whole(secret: str, body: str) -> None:
    out = redact(f"deploy with {secret} now")
    assert out == f"deploy with {REDACTED} now"
    assert body not in out


def test_an_assignment_keeps_its_name_and_hides_its_value() -> None:
    assert redact("password=hunter2hunter2 and more") == f"password={REDACTED} and more"
