"""Host allocator settings for XLA:CPU: keep freed memory instead of returning it to the OS.

XLA:CPU allocates a program's temporaries afresh on every call. With glibc's defaults each large one is a
new mmap, returned on free, so every call page-faults its temporaries in again (~58K faults per call for FQL
at the paper's size). Served from one heap that is never trimmed, they stay mapped: one update per call at
the paper's size on 2 cores goes from 6.57 to 7.86 updates/s for FQL and from 4.00 to 4.77 for QAM
(`benchmarks/agent_speed.py` without and with `--keep_freed_memory`). This matters where a call runs few
updates (the online phase: `utd_ratio` per environment step); the process keeps its peak host memory, which
a training run reaches anyway. Must run before JAX starts its threads.
"""

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory():
    """One malloc arena, no mmap for large blocks, no trimming of the heap. True if applied (glibc only)."""
    name = ctypes.util.find_library('c')
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):  # not glibc (macOS, musl): keep the defaults
        return False
    if mallopt is None:
        return False
    return all(mallopt(option, value) == 1
               for option, value in ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1)))
