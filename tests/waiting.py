"""Polling for the cluster tiers: wait until a check returns something truthy, or fail saying what
was awaited and what was last seen."""

from __future__ import annotations

import time

import pytest


def wait_for(what: str, check, timeout: float = 90.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}", pytrace=False)
