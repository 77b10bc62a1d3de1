"""Proofs under faults for the sandbox's runs: the leak scan (``leaks.scan_leaks``)."""
