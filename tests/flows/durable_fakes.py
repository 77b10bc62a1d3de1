"""The cross-process fakes moved to the sandbox (``promptship_sandbox.durable_fakes``), where the reliability
campaign uses them too; this name stays for the tests and for ``PROMPTSHIP_SERVICES_FACTORY`` values."""

from promptship_sandbox.durable_fakes import (
    DurableCluster,
    DurableCodeAgent,
    DurableCodeHost,
    JsonState,
    durable_services,
    services_from_env,
)

__all__ = [
    "DurableCodeAgent",
    "DurableCluster",
    "DurableCodeHost",
    "JsonState",
    "durable_services",
    "services_from_env",
]
