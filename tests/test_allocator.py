"""The CLI's allocator setting: glibc serves large buffers from its heap and keeps them when freed."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from probebench.allocator import keep_freed_memory

# In a fresh process: the bytes glibc has in mmap-ed chunks while a 64 MiB buffer lives, and the free bytes
# its heap keeps after the buffer is freed (mallinfo2, glibc 2.33+).
_PROBE = """
import ctypes, sys
import numpy as np
from probebench.allocator import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split())]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
if sys.argv[1] == "1":
    assert keep_freed_memory()
a = np.ones(8 * 2**20)  # 64 MiB
mapped = libc.mallinfo2().hblkhd
del a
print(mapped, libc.mallinfo2().fordblks)
"""


def _probe(setting: str) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", _PROBE, setting], capture_output=True, text=True, check=True)
    mapped, kept = out.stdout.split()
    return int(mapped), int(kept)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt's settings exist only in glibc")
def test_with_the_setting_a_large_buffer_comes_from_the_heap_and_stays_there_when_freed():
    mapped, kept = _probe("0")
    assert mapped >= 64 * 2**20 and kept < 64 * 2**20, "glibc's default: mmap-ed, and unmapped on free"
    mapped, kept = _probe("1")
    assert mapped < 2**20 and kept >= 64 * 2**20


def test_other_platforms_are_left_alone(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False
