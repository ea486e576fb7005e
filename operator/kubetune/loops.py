"""The operator's periodic loops (evaluation, node tuning): run a cycle every tick, forever."""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


async def run_every(tick: float, cycle: Callable[[], Awaitable[bool | None]], *, name: str,
                    ready: asyncio.Event | None = None, on_failure: Callable[[], None] = lambda: None,
                    active: Callable[[], bool] = lambda: True, clock: Callable[[], float] | None = None,
                    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                    next_start: Callable[[], float] | None = None, min_gap: float = 0.0) -> None:
    """Run `cycle` every `tick` seconds once `ready`, skipping ticks while not `active` (a standby replica).

    Fixed-rate: the next cycle starts `tick` after this one started (at once if this one took longer),
    so a policy's interval is not stretched by the cycle's own duration. With `next_start` (a moment on
    `clock` when work falls due) the next cycle starts then instead, if that is sooner than a tick,
    but never sooner than `min_gap` after the last cycle that worked started (a cycle answering False
    found nothing to do): work falling due within that gap shares a cycle."""
    if ready is not None:
        await ready.wait()  # the indexes are filled: an empty one would read as "nothing exists"
    clock = clock or asyncio.get_running_loop().time
    worked_at = float("-inf")
    while True:
        started = clock()
        try:
            if active() and await cycle() is not False:
                worked_at = started
        except asyncio.CancelledError:
            raise
        except Exception:  # one bad cycle must not stop the loop; the next one retries
            log.exception("%s cycle failed", name)
            on_failure()
        wake = started + tick
        if next_start is not None:
            wake = min(wake, max(worked_at + min_gap, next_start()))
        await sleep(max(0.0, wake - clock()))
