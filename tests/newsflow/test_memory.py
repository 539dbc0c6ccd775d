"""The allocator setting that returns freed model activations to the OS."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

# Run in a fresh interpreter: RSS in the test session depends on what earlier tests left in the heap
# (free heap chunks already resident would absorb the blocks below and hide the effect).
_PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util
    from newsflow import memory

    assert memory.release_large_blocks() is True
    assert memory.release_large_blocks() is True  # idempotent

    def rss_mb():
        with open("/proc/self/status") as fh:
            return int(fh.read().split("VmRSS:")[1].split()[0]) / 1024

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # Freeing a 30 MB mapping would raise glibc's dynamic threshold to 30 MB; later 20 MB blocks
    # would then come from the heap, where small blocks between them keep the memory from being
    # given back.
    libc.free(libc.malloc(30 << 20))
    before = rss_mb()
    big, pins = [], []
    for _ in range(8):
        block = libc.malloc(20 << 20)
        ctypes.memset(block, 1, 20 << 20)
        big.append(block)
        pins.append(libc.malloc(64 << 10))
    grown = rss_mb()
    for block in big:
        libc.free(block)
    print(round(grown - before), round(rss_mb() - before))
    """
)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_release_large_blocks_applies_once_and_big_blocks_are_returned() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    grown, left = (int(x) for x in out.split())
    assert grown > 120
    assert left < 40  # mapped apart, returned on free (with the fixed threshold)
