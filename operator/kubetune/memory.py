"""Freed heap given back to the kernel after each evaluation cycle.

A cycle's answers (dicts keyed by 10,000 pods, their arrays and strings) are freed when it ends, but
glibc keeps most of what it frees inside its heap, where RSS — and the container's memory limit — still
counts it, and the next cycle's allocations rarely land in the same holes. `malloc_trim(0)` returns
every free page to the kernel (issue 12's RSS budget). Where the C library has no malloc_trim (musl),
this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_freed_memory() -> bool:
    """Return glibc's free pages to the kernel; True when some were returned. It walks the heap (a few
    ms at 200 MiB): call it off the event loop, once a cycle."""
    return bool(_TRIM(0)) if _TRIM is not None else False
