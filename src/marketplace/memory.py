"""The CPU allocator setting for market steps: keep freed memory in the process.

A market step allocates its products afresh every step: hundreds of MB at
batch 512. glibc serves every block over 32 MB (and, by default, many
smaller ones) with a fresh mmap and gives it back on free, so each step
touches new pages: tens of thousands of minor page faults and kernel time
per step. `reuse_freed_memory` tells glibc to keep freed memory instead.
"""

from __future__ import annotations

import ctypes

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def reuse_freed_memory() -> bool:
    """Keep freed memory in this process (glibc only): every block from the heap, the heap never trimmed.

    Returns whether the allocator took the setting. Process-wide and lasting:
    the CLI applies it to CPU runs; a library caller decides for itself.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    ok = libc.mallopt(_M_MMAP_MAX, 0) == 1
    return bool(ok and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1)
