"""Writing files safely: atomic writes (``.partial`` then rename) and the output folder's lock.

Every file a run keeps is written under a ``.partial`` name and renamed into place only when all
its bytes were written, so a killed run or a full disk leaves either no file or a whole one.
"""

from __future__ import annotations

import errno
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ben_builder.errors import ArchiveWriteError, OutputLockedError, PreflightError

log = logging.getLogger(__name__)


PARTIAL = ".partial"


def atomic_path(path: Path) -> Path:
    """The temporary name a file is written under before it is renamed to ``path``."""
    return path.with_name(path.name + PARTIAL)


LOCK_FILE = ".ben_builder.lock"


@contextmanager
def output_lock(root: Path, what: str = "build") -> Iterator[None]:
    """Hold an exclusive lock on an output folder while writing into it.

    The lock is an ``flock`` on ``<root>/.ben_builder.lock``, which names the holder (host, pid,
    start time, what) while it is held. The kernel releases it when the holder exits, however it
    exits, so a lock left by a killed run is never stale: the next run takes it over.

    Raises:
        OutputLockedError: another process holds it (the message names it).
        PreflightError: the folder cannot be created or written.
    """
    import fcntl
    import socket

    path = root / LOCK_FILE
    try:
        root.mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+")  # noqa: SIM115 (held open for the lock's lifetime)
    except OSError as exc:
        raise PreflightError(
            f"{root}: output folder is not writable ({exc.strerror or exc}); choose another "
            "output or fix its permissions"
        ) from exc
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            fh.seek(0)
            holder = fh.read().strip() or "another process (a reader: ben-builder encode)"
            raise OutputLockedError(
                f"{root} is in use by {holder}; wait for it to finish or choose another output "
                "folder (two runs writing one archive would corrupt it)"
            ) from exc
        started = datetime.now(UTC).isoformat(timespec="seconds")
        fh.seek(0)
        fh.truncate()
        fh.write(f"{what} pid {os.getpid()} on host {socket.gethostname()} since {started}\n")
        fh.flush()
        try:
            yield
        finally:  # an idle lock names nobody (and the archive's files match between runs)
            fh.truncate(0)
    finally:
        fh.close()  # releases the lock


@contextmanager
def reader_lock(root: Path) -> Iterator[None]:
    """Hold a shared lock on an archive while reading it whole (``encode``).

    Shared with other readers, exclusive of a build (:func:`output_lock`): a build running
    refuses the reader, and a build started meanwhile refuses to start. An archive with no lock
    file was never built here (a published release): nobody writes it, nothing is locked.

    Raises:
        OutputLockedError: a build is writing the archive (the message names it).
    """
    import fcntl

    try:
        fh = open(root / LOCK_FILE)  # noqa: SIM115 (held open for the lock's lifetime)
    except FileNotFoundError:
        yield
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            holder = fh.read().strip() or "another process"
            raise OutputLockedError(
                f"{root} is being written by {holder}; wait for it to finish, then run again"
            ) from exc
        yield


def write_json(path: Path, obj: object) -> None:
    """Write JSON atomically (sorted keys, so output is deterministic)."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_parquet(path: Path, frame: pd.DataFrame, schema: pa.Schema | None = None) -> None:
    """Write a parquet file atomically (with ``schema``: exactly these Arrow types).

    Raises:
        ArchiveWriteError: the write failed (e.g. a full disk); ``path`` is left as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes(path, sink.getvalue().to_pybytes())


def write_bytes(path: Path, data: bytes) -> int:
    """Write ``data`` to ``path`` atomically, replacing an older file; return 1.

    The bytes go to ``<path>.partial`` and are renamed only when every byte was written, so a
    full disk never leaves a short file under the final name.

    Raises:
        ArchiveWriteError: the write failed or was short (ENOSPC, quota, read-only); the partial
            file is removed.
    """
    tmp = atomic_path(path)
    try:
        with open(tmp, "wb") as fh:
            written = fh.write(data)
        if written != len(data):
            raise OSError(errno.ENOSPC, f"short write ({written} of {len(data)} bytes)")
        os.replace(tmp, path)
    except OSError as exc:
        with suppress(OSError):
            tmp.unlink()
        raise write_error(path, exc) from exc
    return 1


def write_error(path: Path, exc: OSError) -> ArchiveWriteError:
    """The error of a failed write of ``path``, with advice that follows its cause."""
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):  # a folder vanished under the run
        hint = "its folder was removed while the run wrote into it; run again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "the output folder is not writable; fix its permissions or choose another one"
    else:
        hint = "free space on that disk or choose another output folder, then run again"
    return ArchiveWriteError(f"{path}: cannot write ({exc.strerror or exc}); {hint}")
