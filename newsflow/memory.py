"""Process memory: keep freed model activations from piling up in the C heap.

glibc raises its mmap threshold each time a large block (a batch's activations: up to ~25 MB) is
freed, so later blocks of that size come from the heap, which is rarely given back to the OS. A
model process's RSS then creeps up by hundreds of MB under load. Fixing the threshold
(``mallopt(M_MMAP_THRESHOLD)``, the same as ``MALLOC_MMAP_THRESHOLD_``) keeps blocks above it in
their own mappings, returned to the OS when freed. Measured on the model layer (400 FNC-1 articles,
batches of 32, RSS at the end): 1.16-1.29 GB by default, 1.08-1.12 GB at 16 MiB (this default:
only the largest blocks, attention scores of a full batch, are mapped afresh) with throughput within
this machine's run-to-run noise, 0.97 GB at 1 MiB but ~25% slower (every block page-faulted anew).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
_applied = False


def release_large_blocks(threshold_bytes: int = 16 << 20) -> bool:
    """Fix glibc's mmap threshold (once per process); False where the C library is not glibc."""
    global _applied
    if _applied:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, threshold_bytes))
    log.debug("glibc mmap threshold fixed at %d bytes: %s", threshold_bytes, _applied)
    return _applied
