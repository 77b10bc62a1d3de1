"""Where the seams are: every Protocol lives in ports.py, ports speak domain models only, domain stays pure,
and the gateway service sees ports, not the LiteLLM adapter. Read from the source (ast), no doubles."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from promptship import ports
from promptship_sandbox.fakes import FakeLLMGateway

SRC = Path(ports.__file__).resolve().parent


def _modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if "migrations" not in p.parts)


def _imported(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_every_protocol_is_defined_in_ports() -> None:
    def is_protocol(base: ast.expr) -> bool:
        return (isinstance(base, ast.Name) and base.id == "Protocol") or (
            isinstance(base, ast.Attribute) and base.attr == "Protocol"
        )

    outside = [
        f"{path.relative_to(SRC)}:{node.name}"
        for path in _modules(SRC)
        if path.name != "ports.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef) and any(is_protocol(b) for b in node.bases)
    ]
    assert outside == []


def test_ports_import_domain_models_only() -> None:
    ours = {m for m in _imported(SRC / "ports.py") if m.startswith("promptship")}
    assert ours and all(m.startswith("promptship.domain.") for m in ours), ours


@pytest.mark.parametrize("forbidden", ["threading", "time", "socket", "subprocess", "httpx", "prefect", "sqlalchemy"])
def test_domain_does_no_io(forbidden: str) -> None:
    users = [
        str(p.relative_to(SRC))
        for p in _modules(SRC / "domain")
        if any(m == forbidden or m.startswith(forbidden + ".") for m in _imported(p))
    ]
    assert users == []


def test_the_gateway_service_depends_on_ports_not_on_the_adapter() -> None:
    imported = _imported(SRC / "servers" / "gateway.py")
    assert not [m for m in imported if m.startswith("promptship.adapters")]
    assert "promptship.ports" in imported


@pytest.mark.parametrize(
    "port", [ports.Router, ports.Completer, ports.RunBudgets, ports.Redactor, ports.AgentAccessIssuer, ports.LLMGateway]
)
def test_the_fake_gateway_implements_every_small_port(port: type) -> None:
    assert isinstance(FakeLLMGateway(), port)


def test_llm_gateway_is_the_composite_of_the_small_ports() -> None:
    small = {ports.Router, ports.Completer, ports.RunBudgets, ports.Redactor, ports.AgentAccessIssuer}
    assert small <= set(ports.LLMGateway.__mro__)
