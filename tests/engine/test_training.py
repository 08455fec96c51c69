"""engine.training helpers that need no model: giving the allocator's free memory back to the system."""

from __future__ import annotations

import platform
import sys

import pytest

from engine.training import release_free_memory


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_release_free_memory_returns_freed_heap_pages():
    # 64 KiB blocks stay below glibc's mmap threshold, so they live in the heap; the last one stays alive so that
    # free() cannot simply shrink the heap top, which is the situation after a training step
    blocks = [bytearray(64 * 1024) for _ in range(3200)]
    keep = blocks[-1]
    del blocks
    held = rss_mb()
    assert release_free_memory() is True
    assert held - rss_mb() > 100, "about 200 MB of freed heap should have gone back to the system"
    assert len(keep) == 64 * 1024


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_release_free_memory_with_a_step_acts_only_every_n_steps():
    assert [release_free_memory(s, every=4) for s in range(1, 9)] == [False, False, False, True] * 2
    assert release_free_memory(7, every=1) is True
