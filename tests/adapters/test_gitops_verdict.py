"""How an Argo CD Application's status becomes a rollout verdict for one commit."""

from __future__ import annotations

import pytest

from promptship.adapters.gitops import application_verdict

C = "c" * 40


def _app(revision: str, sync: str = "Synced", health: str = "Healthy", phase: str = "Succeeded") -> dict:
    return {
        "status": {
            "sync": {"status": sync, "revision": revision},
            "health": {"status": health, "message": "because"},
            "operationState": {"phase": phase, "message": "m", "syncResult": {"revision": revision}},
        }
    }


@pytest.mark.parametrize(
    ("app", "verdict"),
    [
        (_app(C), "complete"),
        (_app("d" * 40), "progressing"),  # still at the previous commit
        (_app(C, sync="OutOfSync"), "progressing"),
        (_app(C, health="Progressing"), "progressing"),
        (_app(C, health="Degraded"), "stalled"),
        (
            {
                "status": {
                    "sync": {"revision": "d" * 40},
                    "operationState": {"phase": "Failed", "syncResult": {"revision": C}},
                }
            },
            "failed",
        ),  # fmt: skip
        ({}, "progressing"),
    ],
)
def test_application_verdict(app: dict, verdict: str) -> None:
    assert application_verdict(app, C)[0] == verdict
