"""The allocator setting that returns freed model activations to the OS."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

import pytest

from newsflow import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_release_large_blocks_applies_once_and_big_blocks_are_returned() -> None:
    assert memory.release_large_blocks() is True
    assert memory.release_large_blocks() is True  # idempotent

    def rss_mb() -> float:
        with open("/proc/self/status") as fh:
            return int(fh.read().split("VmRSS:")[1].split()[0]) / 1024

    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # Freeing a 30 MB mapping would raise glibc's dynamic threshold to 30 MB; later 20 MB blocks would
    # then come from the heap, where small blocks between them keep the memory from being given back.
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
    assert grown - before > 120
    assert rss_mb() - before < 40  # mapped apart, returned on free (with the fixed threshold)
    for pin in pins:
        libc.free(pin)
