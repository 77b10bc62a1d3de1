"""Run every area's benchmark in turn: ``python -m promptship.bench [area ...]``. The benchmarks run on the
sandbox's stand-ins (``promptship_sandbox``), which each area imports when it runs."""

from __future__ import annotations

import importlib
import sys
import time

# ``suspend`` stays runnable alone (``python -m promptship.bench suspend``); ``flow`` prints its figures per database
AREAS = (
    "flow",
    "workpool",
    "gateway",
    "github",
    "cluster",
    "agent",
    "webhook",
    "gate",
    "chatapp",
    "local_model",
    "local_callers",
)


def main(argv: list[str]) -> int:
    from promptship.commands._sandbox import require_sandbox
    from promptship.errors import ConfigError

    try:
        require_sandbox("python -m promptship.bench")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    chosen = argv or list(AREAS)
    failed = []
    for area in chosen:
        try:
            module = importlib.import_module(f"promptship.bench.{area}")
        except ModuleNotFoundError:
            print(f"== bench {area}: not written yet")
            continue
        print(f"== bench {area}")
        t0 = time.perf_counter()
        try:
            module.run()
        except Exception as exc:  # a broken benchmark is reported, the others still run
            failed.append(area)
            print(f"   bench {area} FAILED: {type(exc).__name__}: {exc}")
        print(f"   ({time.perf_counter() - t0:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
