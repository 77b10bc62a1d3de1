"""wiring.build_services: real adapters from settings, or a ConfigError naming what is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from promptship.errors import ConfigError
from promptship.settings import Settings
from promptship.wiring import build_services

KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: not-a-real-token}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
"""


def _settings(tmp_path: Path, **github: object) -> Settings:
    settings = Settings(home=tmp_path / "home")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    settings.kube.kubeconfig = kubeconfig
    for key, value in github.items():
        setattr(settings.github, key, value)
    return settings


def test_missing_token_is_a_config_error_naming_the_setting(tmp_path: Path):
    with pytest.raises(ConfigError, match="PROMPTSHIP_GITHUB__TOKEN"):
        build_services(_settings(tmp_path))


def test_every_port_is_a_real_adapter(tmp_path: Path):
    from promptship.adapters.github import GitHubHost
    from promptship.adapters.kube import KubeCluster
    from promptship.adapters.llm import LiteLLMGateway
    from promptship.adapters.openhands import OpenHandsAgent
    from promptship.store import Store

    token = "ghp_" + "x" * 36
    services = build_services(_settings(tmp_path, token=SecretStr(token), webhook_secret=SecretStr("s3cret")))
    assert isinstance(services.llm, LiteLLMGateway)
    assert isinstance(services.agent, OpenHandsAgent)
    assert isinstance(services.code_host, GitHubHost)
    assert isinstance(services.cluster, KubeCluster)
    assert isinstance(services.sink, Store)
    assert set(services.boundaries.values()) == {"real"}
    assert token not in repr(services.settings)


def test_ports_are_built_lazily_one_at_a_time(tmp_path: Path):
    """A process builds only what it uses: the webhook receiver's commenter needs no cluster, no agent."""
    from promptship.adapters.github import GitHubHost
    from promptship.wiring import build_ports

    settings = Settings(home=tmp_path / "home")  # no kubeconfig, no OpenRouter key: fine until used
    settings.github.token = SecretStr("ghp_" + "y" * 36)
    ports = build_ports(settings)
    assert ports.built() == ()
    assert isinstance(ports.code_host, GitHubHost)
    assert ports.code_host is ports.code_host  # built once
    assert ports.built() == ("code_host",)  # no store, cluster, agent or LLM gateway was built


def test_a_port_whose_setting_is_missing_fails_only_when_used(tmp_path: Path):
    from promptship.wiring import build_ports

    ports = build_ports(Settings(home=tmp_path / "home"))
    with pytest.raises(ConfigError, match="PROMPTSHIP_GITHUB__TOKEN"):
        _ = ports.code_host
    assert ports.sink is not None and "code_host" not in ports.built()
