"""Waiting in a long-running sandbox command (`make demo` with --serve, `chatapp serve`, `forge serve`) until
Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable


def wait_until_stopped(running: Callable[[], bool] = lambda: True, interval_s: float = 0.5) -> bool:
    """Block until SIGINT or SIGTERM arrives (True) or ``running()`` turns false (False). The handlers are set
    explicitly and put back after: a shell's background job inherits SIGINT ignored, so Python would never
    raise KeyboardInterrupt, and Python's default SIGTERM exits without running the cleanups."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while running() and not stop.wait(interval_s):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return stop.is_set()
