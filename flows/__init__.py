"""Prefect flows of promptship."""
