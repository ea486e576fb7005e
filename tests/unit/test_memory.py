"""release_freed_memory returns glibc's free heap pages to the kernel (real malloc, real /proc)."""

import sys

import psutil
import pytest

from kubetune.memory import release_freed_memory

MIB = 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_memory_freed_inside_the_heap_leaves_rss_once_released():
    process = psutil.Process()
    # 1,000-byte blocks come from glibc's heap (pymalloc takes 512 and less). Keeping every 50th pins
    # the heap, so the freed 49 in between stay inside it, counted in RSS, as a cycle's answers do.
    blocks = [bytearray(1000) for _ in range(150_000)]
    kept = blocks[::50]
    del blocks
    before = process.memory_info().rss
    assert release_freed_memory()
    after = process.memory_info().rss
    assert before - after > 60 * MIB, f"RSS {before / MIB:.0f} -> {after / MIB:.0f} MiB"
    assert len(kept) == 3000
