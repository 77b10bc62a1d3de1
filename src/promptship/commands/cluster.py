"""`promptship` sub-commands of the cluster area: the local control plane and the sandbox kubelet."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

StateDir = Annotated[Path | None, typer.Option(help="State dir. Default: $PROMPTSHIP_HOME/cluster.")]


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    cluster = typer.Typer(help="The local Kubernetes control plane (sandbox).", no_args_is_help=True)
    app.add_typer(cluster, name="cluster")

    @cluster.command("up")
    def up(
        state_dir: StateDir = None,
        registry: Annotated[
            list[Path] | None, typer.Option(help="A forge's registry dir the kubelet resolves images from.")
        ] = None,
    ) -> None:
        """Start (or find running) etcd, kube-apiserver, controller-manager, scheduler and the sandbox kubelet;
        print the kubeconfig path."""
        from promptship.commands._sandbox import sandbox_or_exit
        from promptship.errors import ConfigError

        sandbox_or_exit("promptship cluster up")
        from promptship_sandbox import cluster as local

        try:
            cp = local.start(state_dir, registries=registry or [])
        except ConfigError as exc:
            typer.echo(f"cluster up: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(cp.kubeconfig)

    @cluster.command("down")
    def down(state_dir: StateDir = None) -> None:
        """Stop every process ``cluster up`` started (by PID)."""
        from promptship.commands._sandbox import sandbox_or_exit

        sandbox_or_exit("promptship cluster down")
        from promptship_sandbox import cluster as local

        stopped = local.stop(state_dir)
        typer.echo(f"stopped: {', '.join(stopped) or 'nothing was running'}")

    @cluster.command("add-registry")
    def add_registry(
        path: Annotated[Path, typer.Argument(help="A forge's registry dir (<forge root>/registry).")],
        state_dir: StateDir = None,
    ) -> None:
        """Let the running sandbox kubelet resolve images published under ``path``."""
        from promptship.commands._sandbox import sandbox_or_exit

        sandbox_or_exit("promptship cluster add-registry")
        from promptship_sandbox import cluster as local

        local.add_registry((state_dir or local.default_state_dir()) / "kubelet", path)
        typer.echo(f"registry added: {path.resolve()}")

    @cluster.command("service-url")
    def service_url(
        namespace: Annotated[str, typer.Argument(help="Namespace of the Service.")],
        service: Annotated[str, typer.Argument(help="Name of the Service.")],
        state_dir: StateDir = None,
    ) -> None:
        """The 127.0.0.1 URL the sandbox kubelet's service proxy gives a Service (stable across rollouts)."""
        from promptship.commands._sandbox import sandbox_or_exit

        sandbox_or_exit("promptship cluster service-url")
        from promptship_sandbox import cluster as local

        kubeconfig = (state_dir or local.default_state_dir()) / "kubeconfig"
        typer.echo(local.service_url(kubeconfig, namespace, service))

    @cluster.command("status")
    def status(state_dir: StateDir = None) -> None:
        """Whether the local control plane runs, where, and its kubeconfig."""
        from promptship.commands._sandbox import sandbox_or_exit

        sandbox_or_exit("promptship cluster status")
        from promptship_sandbox import cluster as local

        cp = local.status((state_dir or local.default_state_dir()).resolve())
        if cp is None:
            typer.echo("not running")
            raise typer.Exit(1)
        typer.echo(f"running at {cp.api_url}; kubeconfig {cp.kubeconfig}")

    @cluster.command("gitops-sync")
    def gitops_sync(
        state_dir: StateDir = None,
        namespace: Annotated[str, typer.Option(help="Namespace of the Argo CD Applications.")] = "argocd",
        interval: Annotated[float, typer.Option(help="Seconds between passes.")] = 1.0,
    ) -> None:
        """Run the sandbox GitOps syncer (Argo CD's part) against the local control plane until interrupted.
        A token for HTTPS repositories comes from PROMPTSHIP_GITOPS_TOKEN."""
        from promptship.commands._sandbox import sandbox_or_exit

        sandbox_or_exit("promptship cluster gitops-sync")
        from promptship_sandbox import cluster as local
        from promptship_sandbox import gitops

        root = (state_dir or local.default_state_dir()).resolve()
        raise typer.Exit(
            gitops.main(
                [
                    "--kubeconfig",
                    str(root / "kubeconfig"),
                    "--cache-dir",
                    str(root / "gitops-cache"),
                    "--namespace",
                    namespace,
                    "--interval",
                    str(interval),
                ]  # fmt: skip
            )
        )
