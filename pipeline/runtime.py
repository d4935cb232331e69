"""Process-level settings that make repeated whole-photo work fast.

Assessing a 12-megapixel photo allocates and frees about a gigabyte of
full-frame temporaries (L*, masks, model tiles, blurs). By default glibc hands
every block above 128 KiB back to the kernel when it is freed, so the next
photo faults the same memory in again page by page; on the virtual machines
this project runs on that kernel work cost more than the computation itself
(12 MP close-up, 2 cores: 3.6 s per photo, of which ~1.9 s in the kernel;
2.5 s once freed memory is kept for reuse). The price is that the process keeps
its peak memory after a photo instead of returning it between photos.

Called once by the ``smp`` command and by long-running workers; a library user
may call it too. Elsewhere than glibc (macOS, musl, Windows) it does nothing.
The clinic server (``smp serve``) is the exception: it lives for weeks between
uploads of every size, so it calls :func:`return_freed_memory` instead, and only
the short-lived child process that assesses one photo keeps freed memory.

:func:`blas_threads` pins NumPy's BLAS to a number of threads for a block of
work: how a matrix product is split between threads changes its rounding, so
without it one photo's spacing statistics differed by ~1e-10 between a worker
with one CPU and a process with two.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["blas_threads", "release_free_heap", "return_freed_memory", "reuse_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's own starting thresholds (128 KiB), here fixed rather than left to grow.
_SMALL_THRESHOLD = 128 * 1024


def reuse_freed_memory(mmap_threshold: int = 1 << 30, trim_threshold: int = (1 << 31) - 1) -> bool:
    """Keep freed blocks (up to ``mmap_threshold`` bytes each) in the heap for reuse.

    Returns True when the allocator accepted the settings, False where there is
    no glibc ``mallopt``. Idempotent.
    """
    return _set_thresholds(mmap_threshold, trim_threshold)


def return_freed_memory() -> bool:
    """Give freed memory back to the system at once: every block of 128 KiB or more gets its own
    mapping (unmapped when freed) and the heap is trimmed above 128 KiB of free space.

    Undoes :func:`reuse_freed_memory`, and also switches off glibc's habit of raising
    its thresholds after large blocks are freed (by default it keeps blocks up to 32 MiB
    in the heap after the first such free), so a server's memory after a large photo
    falls back to what it holds. Returns True when the allocator accepted the settings.
    """
    return _set_thresholds(_SMALL_THRESHOLD, _SMALL_THRESHOLD) and release_free_heap()


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def _set_thresholds(mmap_threshold: int, trim_threshold: int) -> bool:
    libc = _libc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


def release_free_heap() -> bool:
    """Hand the free memory of every heap back now (``malloc_trim``): what small blocks freed by
    many threads leave behind, which the thresholds alone do not return. True where glibc has it."""
    trim = getattr(_libc(), "malloc_trim", None)
    if trim is None:
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    trim(0)
    return True


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def blas_threads(threads: int = 1) -> Iterator[None]:
    """Within the block, BLAS libraries loaded by NumPy/SciPy use ``threads`` threads (then as before)."""
    with _blas_controller().limit(limits=int(threads), user_api="blas"):
        yield
