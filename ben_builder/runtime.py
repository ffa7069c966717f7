"""Runtime settings in one place: GDAL, OpenJPEG, malloc and Dask, for every process that works.

The entry points (the CLI, the Dask chain, a worker's task) take their settings from here, so
a process decodes the same way wherever it runs. What each setting saves was measured; the
figures are in the README ("How a run works") and ``benchmarks/results``, where they can be
measured again.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import rasterio

from ben_builder import specs

#: GDAL for every entry point: a bounded block cache, no directory scans when a file is opened,
#: one decoding thread unless a task is given more cores; remote reads (``/vsicurl/``,
#: ``/vsis3/``: catalogue COGs, the CDSE's store) retried on 429/5xx answers, as catalogues
#: throttle. Credentials and endpoints (``AWS_*``) come from the environment.
GDAL_OPTIONS: dict[str, Any] = {
    "GDAL_CACHEMAX": 256,
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_NUM_THREADS": 1,
    "GDAL_HTTP_MAX_RETRY": 4,
    "GDAL_HTTP_RETRY_DELAY": 2,
}

OPJ = "OPJ_NUM_THREADS"

#: OpenJPEG decodes in the calling thread (``0``). Otherwise GDAL gives the codec of each JP2
#: tile ``GDAL_NUM_THREADS`` threads of its own: at one core per band, a one-thread pool per JP2
#: tile and a hand-over per code-block, for the same pixels. Only where a band decodes on one
#: core: with more, GDAL does not spread a band over its own threads at ``0``. A value set in the
#: environment is kept.
DECODER_ENV_DEFAULTS: dict[str, str] = {OPJ: "0"}

#: Worker processes: the decoder's setting, and glibc's malloc keeping buffers of up to 16 MB on
#: its heap and up to 32 MB free at its top. Dask's own ``MALLOC_TRIM_THRESHOLD_=65536`` also
#: fixes the size above which malloc maps fresh pages at 128 kB, so every JP2 tile's buffer and
#: every GDAL block would come from new, zero-filled pages. Whole bands are still mapped and
#: returned on release. Values set in the environment (or by a job script) are kept.
WORKER_ENV_DEFAULTS: dict[str, str] = {
    **DECODER_ENV_DEFAULTS,
    "MALLOC_MMAP_THRESHOLD_": str(16 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(32 * 2**20),
}

#: Dask's periodic work slowed down for tasks that take minutes (stack sampling off, slower
#: event-loop ticks, system monitor and work stealing). The memory monitor keeps its 100 ms: a
#: product over the memory limit must not finish its allocations before its worker is stopped.
QUIET_DASK: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.scheduler.work-stealing-interval": "1s",
}


def gdal_env(**overrides: Any) -> rasterio.Env:
    """A ``rasterio.Env`` with :data:`GDAL_OPTIONS` (``overrides`` win)."""
    return rasterio.Env(**{**GDAL_OPTIONS, **overrides})


def decoder_environ() -> dict[str, str]:
    """The environment variables of decoding processes: the defaults, or what the user set.

    They are read when a codec is made, so they must be in a process's environment before it
    decodes (set them when it starts, not from a thread).
    """
    return {k: os.environ.get(k, v) for k, v in DECODER_ENV_DEFAULTS.items()}


def decode_threads(threads: int, bands: int) -> tuple[int, int]:
    """How ``threads`` cores decode ``bands`` bands: bands side by side, and threads per band.

    Each band gets ``threads // bands`` GDAL threads (at least one) once every band has a core.
    """
    side_by_side = max(1, min(threads, bands))
    return side_by_side, max(1, threads // side_by_side)


def worker_environ(threads: int = 1) -> dict[str, str]:
    """The environment variables worker processes start with (what the user set wins).

    ``threads``: a task's decoding cores. A band with more than one of them (24 or more cores
    for 12 bands) decodes on OpenJPEG's threads (GDAL gives them to each codec), so
    ``OPJ_NUM_THREADS`` is left out then.
    """
    env = {k: os.environ.get(k, v) for k, v in WORKER_ENV_DEFAULTS.items()}
    if decode_threads(threads, len(specs.bands().bands))[1] > 1 and OPJ not in os.environ:
        del env[OPJ]
    return env


def dask_env_exports(settings: dict[str, Any]) -> list[str]:
    """Shell lines that give Dask processes started by a job script these config settings."""
    return [
        f"export DASK_{key.upper().replace('.', '__').replace('-', '_')}={value}"
        for key, value in settings.items()
    ]


#: The signals that stop a run in order: SIGTERM (SLURM at walltime, ``kill``, ``scancel``) and
#: SIGINT (Ctrl-C).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class StopRequest:
    """Whether a stop signal arrived, and which (set by :func:`stop_on_signals`)."""

    signum: int | None = None

    @property
    def name(self) -> str:
        """The signal's name (``SIGTERM``), or ``""`` while none arrived."""
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @property
    def exit_status(self) -> int:
        """The shell's status of a process ended by that signal: 128 + its number."""
        return 128 + (self.signum or 0)


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Turn the first SIGTERM or SIGINT into a request the caller polls; a second exits at once.

    The caller stops in order at its next poll (no new work, finished work kept, its report
    written). The handler only records the signal: logging or raising from it could interrupt
    the main thread inside a lock or a half-written file. A second signal ends the process at
    once with ``128 + signum`` (the kernel releases its locks). Outside the main thread, where
    Python cannot set handlers, the request simply never fires.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: Any) -> None:
        if request.signum is not None:
            os._exit(128 + signum)
        request.signum = signum

    before = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield request
    finally:
        for s, old in before.items():
            signal.signal(s, old)
