"""How much memory this process may still use, and giving freed memory back.

- :func:`available_memory`: the kernel's ``MemAvailable`` lowered by an address-space limit
  (``ulimit -v``); what every "would this fit?" check before work reads (superres upscale,
  fraud simulate).
- :func:`freed_blocks_unmapped`: glibc raises its mmap threshold each time a large block is
  freed (up to 32 MiB), so after the first tensor of a streamed model load the next
  layer-sized float tensors come from the brk heap and, freed around the small quantized
  buffers that stay, leave holes the heap never gives back. A loader that reads one tensor
  at a time runs inside this; blocks of 128 KiB and up are then mapped and unmapped on
  their own and memory stays bounded by what is kept plus the tensor in hand. Measured on
  a 16-layer Llama-shaped folder (316 MB in float32) loaded to NF4: the data segment grew
  63 MB before the 62 MB embedding read under every hash seed tried, against up to 170 MB
  (seed dependent) with glibc's dynamic threshold. A no-op where the C library is not glibc.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import resource

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # glibc <malloc.h>
SMALL_BLOCK = 128 * 1024                       # glibc's initial mmap threshold
STEADY_MMAP = 32 * 2**20                       # where glibc's dynamic threshold stops (64-bit)


def proc_kb(path: str, key: str) -> int | None:
    """A ``Key:  N kB`` line of a /proc file, in bytes (None when absent or unreadable)."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory() -> int | None:
    """Bytes this process may still allocate: the kernel's MemAvailable, lowered by an
    address-space limit (``ulimit -v``) when one is set. None when neither is known."""
    avail = proc_kb("/proc/meminfo", "MemAvailable")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        left = max(soft - (proc_kb("/proc/self/status", "VmSize") or 0), 0)
        avail = left if avail is None else min(avail, left)
    return avail


def _mallopt():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn


@contextlib.contextmanager
def freed_blocks_unmapped(threshold: int = SMALL_BLOCK):
    """Inside: every block of ``threshold`` bytes and up is mapped on its own and unmapped
    when freed (see the module docstring), so a streamed load holds what it keeps plus the
    tensor in hand. On exit the thresholds are set to where glibc's own adjustment ends
    (mmap 32 MiB, trim 64 MiB), so later work (training steps) keeps reusing its heap.
    Yields whether glibc took the setting (False where there is no ``mallopt``)."""
    mallopt = _mallopt()
    ok = bool(mallopt and mallopt(M_MMAP_THRESHOLD, int(threshold)))
    try:
        yield ok
    finally:
        if ok:
            mallopt(M_MMAP_THRESHOLD, STEADY_MMAP)
            mallopt(M_TRIM_THRESHOLD, 2 * STEADY_MMAP)
