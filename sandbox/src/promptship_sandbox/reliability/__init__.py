"""Proofs under faults on the sandbox: the reliability campaign (``promptship reliability``: kill points,
automatic recovery, soak) and the leak scan (``leaks.scan_leaks``)."""
