"""The C allocator's settings for a CLI run: keep freed memory for reuse instead of returning it to the OS.

glibc serves each allocation over 128 KiB-32 MiB (a batch of images, a layer's activations, a probe's batch of
tokens) with a fresh `mmap` and unmaps it on free, so every forward pass page-faults its buffers in again.
On the embedded suite that was a third of the wall time (sys time 39 s of 96 s for EfficientNet-Lite0 on two
cores; `benchmarks/RESULTS.md`). PyTorch's CPU performance guide recommends a caching allocator (jemalloc,
tcmalloc) for the same reason; these two `mallopt` settings get most of it from glibc itself. The cost is
that the process keeps its peak heap until it exits, which a run holds at its peak anyway.

Only the CLI calls this: a library must not change its host process's allocator.
"""

from __future__ import annotations

import ctypes
import platform
import sys

M_TRIM_THRESHOLD = -1  # <malloc.h>: free memory at the heap's top kept up to this many bytes
M_MMAP_MAX = -4  # <malloc.h>: how many allocations may be served by mmap at once (0: none)


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and never trim it. True when glibc took both settings."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False  # musl, macOS and Windows allocators differ: leave them alone
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
