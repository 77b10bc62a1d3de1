"""Small statistics helpers shared by the benchmarks."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary(values: list[float], unit: str = "ms") -> str:
    """'median X, p95 Y, p99 Z (n=N)'."""
    if not values:
        return "no samples"
    return (
        f"median {statistics.median(values):.2f} {unit}, p95 {percentile(values, 95):.2f} {unit}, "
        f"p99 {percentile(values, 99):.2f} {unit} (n={len(values)})"
    )
