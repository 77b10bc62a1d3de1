"""Benchmarks behind ``make bench``. Each area has a module with ``run() -> None`` that prints its figures
(median, p99, ratios against a baseline measured in the same run)."""
