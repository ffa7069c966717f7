"""Robust product transfer shared by the hub backends.

A product is downloaded to ``NAME.zip.part``, resumed with HTTP Range after a dropped connection,
hashed while it streams (MD5, and BLAKE3 where the hub publishes it), verified, and only then
renamed to ``NAME.zip``: a file under its final name is always whole and verified, so a re-run
skips it. 429 and 5xx answers are retried with exponential backoff, honouring ``Retry-After``.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import requests
import urllib3

from ben_builder.errors import (
    ChecksumError,
    CredentialsError,
    HubError,
    OfflineProductError,
    ProductNotFoundError,
)
from ben_builder.sources.hub.manifest import ManifestItem
from ben_builder.sources.hub.query import Query

log = logging.getLogger(__name__)

CHUNK = 1 << 20
NET_CHUNK = 1 << 20
TRANSIENT = (
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.Timeout,
)
RAW_TRANSIENT = (
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
    ConnectionError,
    TimeoutError,
)


class Backend(Protocol):
    """What the transfer needs from a hub backend."""

    name: str

    def search(self, query: Query) -> list[ManifestItem]:
        """Products matching ``query``."""
        ...

    def open(self, item: ManifestItem, start: int) -> requests.Response:
        """A streaming GET of the product from byte ``start`` (auth and redirects handled)."""
        ...

    def on_unauthorized(self) -> None:
        """Called after a 401: drop or refresh the credentials in use."""
        ...

    def request_retrieval(self, item: ManifestItem) -> None:
        """Ask the hub to bring an offline product online (or report it)."""
        ...

    def probe(self) -> str:
        """Reach the hub and check the credentials; return what was checked.

        Raises:
            HubError: the hub cannot be reached.
            CredentialsError: it refuses the credentials.
        """
        ...


@dataclass(frozen=True)
class TransferPolicy:
    """Retry and concurrency settings.

    Attributes:
        attempts: Requests per product before giving up (resumes count as attempts).
        backoff_s: First backoff; doubles on each retry.
        max_wait_s: Longest single wait (also caps ``Retry-After``).
        max_concurrent: Simultaneous downloads (CDSE allows 4 per user).
        offline_rounds: How many times to come back for offline products.
        offline_wait_s: Wait between those rounds.
        timeout_s: Connect/read timeout of a request.
        verify: ``all`` checks every published checksum (MD5 and BLAKE3); ``strongest`` only
            BLAKE3 where published, else MD5. MD5 on one core can cap a download over a fast
            link; BLAKE3 is several times faster (``make bench-download``).
    """

    attempts: int = 8
    backoff_s: float = 2.0
    max_wait_s: float = 300.0
    max_concurrent: int = 4
    offline_rounds: int = 0
    offline_wait_s: float = 600.0
    timeout_s: float = 60.0
    verify: Literal["all", "strongest"] = "all"

    def hashes(self, item: ManifestItem) -> _Hashes:
        """Fresh hashers for the checksums this policy verifies for ``item``."""
        strongest = self.verify == "strongest" and bool(item.blake3)
        return _Hashes(md5=bool(item.md5) and not strongest, blake3=bool(item.blake3))


@dataclass(frozen=True)
class DownloadResult:
    """Outcome of one product's download."""

    name: str
    ok: bool
    path: str | None = None
    skipped: bool = False
    bytes_received: int = 0
    attempts: int = 0
    offline: bool = False
    error: str | None = None


def retry_after_s(value: str | None, default: float) -> float:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date)."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class _Hashes:
    """MD5 and/or BLAKE3 of a stream; with ``threaded``, computed on a helper thread.

    hashlib and blake3 release the GIL on large buffers, so a helper thread overlaps hashing with
    network reads and file writes.
    """

    def __init__(self, md5: bool, blake3: bool) -> None:
        self.md5: Any = hashlib.md5() if md5 else None
        self.blake3: Any = None
        if blake3:
            try:
                from blake3 import blake3 as b3
            except ImportError:  # pragma: no cover - blake3 is a dependency
                log.warning("blake3 not installed: BLAKE3 checksums are not verified")
            else:
                self.blake3 = b3()
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None

    def update(self, data: bytes) -> None:
        """Feed data (handed to the helper thread when one runs)."""
        if self._queue is not None:
            self._queue.put(data)
            return
        self._update(data)

    def _update(self, data: bytes) -> None:
        if self.md5 is not None:
            self.md5.update(data)
        if self.blake3 is not None:
            self.blake3.update(data)

    def _run(self) -> None:
        assert self._queue is not None
        while (data := self._queue.get()) is not None:
            self._update(data)

    def __enter__(self) -> _Hashes:
        self._queue = queue.Queue(maxsize=32)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._queue is not None and self._thread is not None
        self._queue.put(None)
        self._thread.join()
        self._queue = self._thread = None


def _rehash(path: Path, hashes: _Hashes) -> int:
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            hashes.update(chunk)
            size += len(chunk)
    return size


def _verify(item: ManifestItem, size: int, hashes: _Hashes) -> str | None:
    if item.size is not None and size != item.size:
        return f"size {size} != published {item.size}"
    if hashes.md5 is not None and hashes.md5.hexdigest().lower() != (item.md5 or "").lower():
        return f"MD5 {hashes.md5.hexdigest()} != published {item.md5}"
    if item.blake3 and hashes.blake3 is not None:
        got = hashes.blake3.hexdigest()
        if got.lower() != item.blake3.lower():
            return f"BLAKE3 {got} != published {item.blake3}"
    return None


def download_product(
    item: ManifestItem,
    out_dir: Path,
    backend: Backend,
    policy: TransferPolicy = TransferPolicy(),
    on_bytes: Callable[[int], None] | None = None,
) -> DownloadResult:
    """Download one product to ``out_dir/<name>.zip``, resuming and verifying.

    Raises nothing for hub trouble: the result says what happened (the caller decides).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / item.filename
    if final.exists():
        return DownloadResult(item.name, True, str(final), skipped=True)
    transfer = _Transfer(item, final, backend, policy, on_bytes)
    try:
        if not item.online:
            backend.request_retrieval(item)
        transfer.run()
        return DownloadResult(
            item.name, True, str(final), bytes_received=transfer.received, attempts=transfer.attempt
        )
    except OfflineProductError as exc:
        return DownloadResult(
            item.name,
            False,
            offline=True,
            error=str(exc),
            bytes_received=transfer.received,
            attempts=transfer.attempt,
        )
    except (HubError, ChecksumError, CredentialsError, ProductNotFoundError) as exc:
        return DownloadResult(
            item.name,
            False,
            error=f"{type(exc).__name__}: {exc}",
            bytes_received=transfer.received,
            attempts=transfer.attempt,
        )


class _Transfer:
    """One product's download: the partial file, its running checksums, retries and backoff."""

    def __init__(
        self,
        item: ManifestItem,
        final: Path,
        backend: Backend,
        policy: TransferPolicy,
        on_bytes: Callable[[int], None] | None,
    ) -> None:
        self.item, self.final, self.backend, self.policy = item, final, backend, policy
        self.on_bytes = on_bytes
        self.part = final.with_name(final.name + ".part")
        self.received = self.attempt = self.unauthorized = 0
        self.wrong: list[str] = []  # checksum mismatches seen (each names the digest received)
        self.wait = policy.backoff_s
        self.hashes = policy.hashes(item)
        self.size = _rehash(self.part, self.hashes) if self.part.exists() else 0

    def run(self) -> None:
        """Transfer until the file is complete and verified under its final name.

        Raises:
            HubError, ChecksumError, CredentialsError, ProductNotFoundError,
            OfflineProductError: the product cannot be had (after the policy's attempts).
        """
        while not self._complete():
            if self.attempt >= self.policy.attempts:
                raise HubError(f"{self.item.name}: gave up after {self.attempt} attempts")
            self.attempt += 1
            try:
                resp = self.backend.open(self.item, self.size)
            except TRANSIENT as exc:
                log.info(
                    "%s: %s; retrying in %.1f s", self.item.name, type(exc).__name__, self.wait
                )
                self._back_off(self.wait)
                continue
            with resp:
                if self._accepts(resp):
                    self._receive(resp)

    def _complete(self) -> bool:
        """Whether all bytes are here and verified (then moved into place); a bad copy restarts.

        Raises:
            ChecksumError: the copy is wrong and no attempt is left.
        """
        item = self.item
        if item.size is None or self.size < item.size:
            return False
        problem = _verify(item, self.size, self.hashes)
        if problem is None:
            os.replace(self.part, self.final)
            log.info("%s: downloaded and verified", item.name)
            return True
        self._restart()
        if problem in self.wrong:  # the same wrong bytes again: another try would be no better
            raise ChecksumError(
                f"{item.name}: the hub served the same bytes twice ({problem}); its published "
                "checksum or its copy of the product is wrong: try again later, or report it "
                "to the hub"
            )
        self.wrong.append(problem)
        if self.attempt >= self.policy.attempts:
            raise ChecksumError(f"{item.name}: {problem} after {self.attempt} attempts")
        log.warning("%s: %s; downloading it again in %.1f s", item.name, problem, self.wait)
        self._back_off(self.wait)
        return False

    def _restart(self) -> None:
        self.part.unlink()
        self.size, self.hashes = 0, self.policy.hashes(self.item)

    def _back_off(self, pause: float) -> None:
        time.sleep(pause)
        self.wait = min(self.wait * 2, self.policy.max_wait_s)

    def _accepts(self, resp: Any) -> bool:
        """Whether ``resp`` carries the bytes to append; else it was handled (retry, restart).

        Raises:
            CredentialsError, ProductNotFoundError, OfflineProductError, HubError: the answer
                says the product cannot be had.
        """
        item, status = self.item, resp.status_code
        if status in (401, 403):
            self.unauthorized += 1
            if self.unauthorized > 2:
                raise CredentialsError(
                    f"{item.name}: the hub refuses the credentials (HTTP {status})"
                )
            self.backend.on_unauthorized()
            return False
        self.unauthorized = 0
        if status == 404:
            raise ProductNotFoundError(f"{item.name}: the hub has no product {item.id}")
        if status == 202:
            raise OfflineProductError(f"{item.name}: offline; retrieval was requested")
        if status == 416 and self.size > 0:
            self._restart()
            return False
        if status == 429 or status >= 500:
            pause = min(
                retry_after_s(resp.headers.get("Retry-After"), self.wait), self.policy.max_wait_s
            )
            log.info("%s: HTTP %d; retrying in %.1f s", item.name, status, pause)
            self._back_off(pause)
            return False
        if status == 200 and self.size > 0:  # the server ignored Range: start over
            self._restart()
        elif status == 206:
            first = resp.headers.get("Content-Range", "").split(" ")[-1].split("-")[0]
            if first != str(self.size):
                raise HubError(f"{item.name}: asked for byte {self.size}, got {first!r}")
        elif status != 200:
            raise HubError(f"{item.name}: unexpected HTTP {status} from {resp.url}")
        return True

    def _receive(self, resp: Any) -> None:
        """Append the body to the partial file, hashing as it arrives."""
        try:
            with open(self.part, "ab") as fh, self.hashes:
                # read1 returns what has arrived (up to NET_CHUNK): a cut connection loses
                # nothing already received
                while chunk := resp.raw.read1(NET_CHUNK):
                    fh.write(chunk)
                    self.hashes.update(chunk)
                    self.size += len(chunk)
                    self.received += len(chunk)
                    if self.on_bytes is not None:
                        self.on_bytes(len(chunk))
        except (*TRANSIENT, *RAW_TRANSIENT) as exc:
            log.info(
                "%s: connection lost at byte %d (%s); resuming",
                self.item.name,
                self.size,
                type(exc).__name__,
            )
            return
        if self.item.size is None:  # nothing to compare with: trust a clean end of body
            self.item = dataclasses.replace(self.item, size=self.size)


def download_all(
    items: list[ManifestItem],
    out_dir: Path,
    backend: Backend,
    policy: TransferPolicy = TransferPolicy(),
    on_bytes: Callable[[int], None] | None = None,
    on_done: Callable[[DownloadResult], None] | None = None,
) -> list[DownloadResult]:
    """Download ``items`` with at most ``policy.max_concurrent`` at a time.

    Offline products are asked for and, if ``policy.offline_rounds`` > 0, tried again after
    ``policy.offline_wait_s``. Results come back in the order of ``items``.
    """
    lock = threading.Lock()

    def counted(n: int) -> None:
        if on_bytes is not None:
            with lock:
                on_bytes(n)

    def one(item: ManifestItem) -> DownloadResult:
        r = download_product(item, out_dir, backend, policy, counted)
        if on_done is not None and not (r.offline and rounds_left):
            with lock:
                on_done(r)
        return r

    results: dict[str, DownloadResult] = {}
    todo = list(items)
    rounds_left = policy.offline_rounds
    while True:
        with ThreadPoolExecutor(max_workers=max(1, policy.max_concurrent)) as pool:
            for r in pool.map(one, todo):
                results[r.name] = r
        offline = [i for i in todo if results[i.name].offline]
        if not offline or rounds_left <= 0:
            break
        log.info("%d products offline; trying again in %.0f s", len(offline), policy.offline_wait_s)
        time.sleep(policy.offline_wait_s)
        rounds_left -= 1
        todo = [dataclasses.replace(i, online=True) for i in offline]
    return [results[i.name] for i in items]
