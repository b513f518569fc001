"""Process-level settings that make PyTorch fast on CPUs."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": 33554432,
    "MALLOC_TRIM_THRESHOLD_": 4294967296,
    "MALLOC_TOP_PAD_": 1073741824,
}
# Every process setting of docs/tuning.md as environment strings, the one table: `asen` applies the
# allocator part to itself (tune_allocator) and sets OMP_WAIT_POLICY before torch and faiss load
# (service/api/server.py); the bench scripts export it to the servers they start; the Makefile,
# Dockerfile and compose file keep copies that tests/service/deploy/test_docker.py checks against it.
# Idle threads must sleep, not spin: torch and faiss each bring an OpenMP runtime (OMP_WAIT_POLICY),
# and numpy's OpenBLAS spins its idle threads for 2^28 cycles by default (OPENBLAS_THREAD_TIMEOUT is
# the power of two): measured, a 100k-item server spent 64 ms of CPU per request with the default and
# 47 ms with 2^10 cycles (bench/perf.py --only http; docs/performance.md).
THREAD_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "10"}
PROCESS_ENV = {**{k: str(v) for k, v in ALLOCATOR_ENV.items()}, **THREAD_ENV}


def prefer_sleeping_threads() -> None:
    """THREAD_ENV's values where the environment does not set them; effective only before torch,
    faiss and numpy load (`asen` calls it first thing)."""
    for key, value in THREAD_ENV.items():
        os.environ.setdefault(key, value)


def tune_allocator() -> bool:
    """Apply the measured glibc malloc settings (docs/results.md) to this process.

    Without them freed tensor memory goes back to the kernel and comes back as page faults
    (docs/tuning.md: up to 3.5x slower inference; a head training step on cached maps measured
    42-44 ms without, 26-30 ms with, bench/allocator_step.py). Values already set in the environment
    win. Returns False where glibc is not available (the settings are then a no-op).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    limit = 2**31 - 1
    for param, env in (
        (_M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_"),
        (_M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_"),
        (_M_TOP_PAD, "MALLOC_TOP_PAD_"),
    ):
        value = int(os.environ.get(env, ALLOCATOR_ENV[env]))
        mallopt(param, min(value, limit))
    return True
