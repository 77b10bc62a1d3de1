"""Prefect tasks of the dev cycle: each calls one or two ports and hands the answer to the domain.

Retries only on retryable service errors; results persisted and cached by run key + step, so a resumed or
re-submitted run redoes no side effect.
"""
