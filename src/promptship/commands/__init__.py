"""Sub-commands of ``promptship``, one module per area."""
