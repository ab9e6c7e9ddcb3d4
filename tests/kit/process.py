"""Helpers every test process needs, shared by the kit (tests/kit) and the pytest suite
(conftest.py re-exports them): children that die with their parent, and waiting on a condition
with a deadline instead of sleeping."""

from __future__ import annotations

import contextlib
import ctypes
import signal
import time


def set_pdeathsig():
    """In a child (preexec_fn): SIGKILL it when the thread that started it dies, so a crashed
    test leaves no brokers or control-plane processes behind."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def wait_for(cond, timeout: float = 30.0, interval: float = 0.05, msg: str = "condition"):
    """Polls cond() until it returns something truthy; returns it. Fails after `timeout` with an
    AssertionError naming `msg` and the last value or exception (an AssertionError raised by
    cond() fails at once)."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = cond()
            if last:
                return last
        except AssertionError:
            raise
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {msg}; last: {last!r}")
        time.sleep(interval)
