"""Verify a SAFE product against its ``manifest.safe`` (and, for zips, every member's CRC).

``manifest.safe`` lists every file of a product with its size and a checksum: MD5 in products of
baselines before 05.00, SHA3-256 in current ones. GDAL reads band files without looking at
either, and ``/vsizip/`` does not check a zip member's CRC-32, so a product with flipped bytes
would otherwise be cut into wrong pixels without an error. :func:`verify_product` hashes what the
manifest lists (reading a zip member to its end also makes :mod:`zipfile` check its CRC) and
checks the CRC of zip members the manifest does not list.

A product is verified once: :func:`stat_fingerprint` (paths, sizes and modification times, no
content) lets a caller record a passed check and skip it on a re-run while the files are
unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ben_builder.errors import CorruptProductError, MetadataError
from ben_builder.product.source import ProductSource, checked_file, find_all, parse_xml

log = logging.getLogger(__name__)

MANIFEST = "manifest.safe"
ALGORITHMS = {"MD5": "md5", "SHA3-256": "sha3_256", "SHA-256": "sha256", "SHA256": "sha256"}
CHUNK = 1 << 20


@dataclass(frozen=True)
class ManifestEntry:
    """One file listed in ``manifest.safe``.

    Attributes:
        rel: Path relative to the SAFE root (POSIX).
        size_bytes: Declared size, or ``None`` if the manifest gives none.
        algorithm: Checksum name as written in the manifest (``MD5``, ``SHA3-256``).
        digest: Expected checksum, lower-case hex.
    """

    rel: str
    size_bytes: int | None
    algorithm: str
    digest: str


@dataclass(frozen=True)
class Verification:
    """What :func:`verify_product` checked.

    Attributes:
        product: Product file or folder name.
        manifest: Whether the product has a ``manifest.safe`` that describes its files.
        files_checked: Files whose checksum matched the manifest.
        bytes_checked: Bytes hashed.
        crc_checked: Zip members not in the manifest whose CRC-32 was checked.
        algorithms: Checksum algorithms met.
        absent: Files the manifest lists that the product does not contain.
    """

    product: str
    manifest: bool
    files_checked: int = 0
    bytes_checked: int = 0
    crc_checked: int = 0
    algorithms: tuple[str, ...] = ()
    absent: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON records and reports."""
        return {
            "product": self.product,
            "manifest": self.manifest,
            "files_checked": self.files_checked,
            "bytes_checked": self.bytes_checked,
            "crc_checked": self.crc_checked,
            "algorithms": list(self.algorithms),
            "absent": list(self.absent),
        }


def read_manifest(src: ProductSource) -> list[ManifestEntry]:
    """The files listed in a product's ``manifest.safe`` (``[]`` if it has none)."""
    if not src.exists(MANIFEST):
        return []
    root = parse_xml(src, MANIFEST)
    entries = []
    for stream in find_all(root, "byteStream"):
        loc = next(iter(find_all(stream, "fileLocation")), None)
        sums = find_all(stream, "checksum")
        if loc is None or not sums:
            continue
        href = (loc.get("href") or "").strip()
        rel = href[2:] if href.startswith("./") else href
        name = (sums[0].get("checksumName") or "").strip()
        digest = (sums[0].text or "").strip().lower()
        if not rel or not digest:
            raise MetadataError(f"{src.path}: {MANIFEST}: a dataObject without href or checksum")
        if name.upper() not in ALGORITHMS:
            raise MetadataError(
                f"{src.path}: {MANIFEST}: checksum algorithm {name!r} of {rel} is not known "
                f"(known: {', '.join(ALGORITHMS)}); verification can be turned off with "
                "--no-verify"
            )
        size = stream.get("size")
        entries.append(
            ManifestEntry(rel, int(size) if size and size.isdigit() else None, name, digest)
        )
    return entries


def _hash_stream(src: ProductSource, rel: str, algorithm: str | None) -> tuple[str, int]:
    """Read a file to its end (a zip member's CRC is checked there), hashing it unless None."""
    h = hashlib.new(ALGORITHMS[algorithm.upper()]) if algorithm else None
    n = 0
    try:
        if src.zip is not None:
            fh: Any = src.zip.open(f"{src.safe_name}/{rel}")
        else:
            fh = open(src.local(rel), "rb")  # noqa: SIM115 - closed below
        with fh:
            while chunk := fh.read(CHUNK):
                if h is not None:
                    h.update(chunk)
                n += len(chunk)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CorruptProductError(
            f"{src.path}: {rel} cannot be read in full ({exc}); the product is corrupt: "
            "download it again"
        ) from exc
    return (h.hexdigest() if h is not None else ""), n


def _describes(src: ProductSource, entries: list[ManifestEntry]) -> bool:
    """Whether a manifest's declared sizes fit the product at all.

    A damaged product has one or a few files that differ from its manifest. A manifest none of
    whose declared sizes matches any present file (at least two compared) describes other files:
    products made by Esri for the Planetary Computer carry such a placeholder (every band listed
    at 744 bytes). Checking against it would refuse every such product.
    """
    sized = [e for e in entries if e.size_bytes is not None and src.exists(e.rel)]
    if len(sized) < 2:
        return True
    return any(src.size(e.rel) == e.size_bytes for e in sized)


def verify_product(path: str | Path) -> Verification:
    """Check every file ``manifest.safe`` lists, and the CRC of every other zip member.

    Args:
        path: ``<name>.SAFE`` folder or ``<name>.zip``.

    Returns:
        What was checked, and which listed files are absent (absent files are not an error here:
        :func:`ben_builder.safe.open_product` refuses a product that lacks a file it needs).

    Raises:
        CorruptProductError: a file's size or checksum differs from the manifest, or a zip member
            fails its CRC check.
        MetadataError: the manifest is malformed.
    """
    src = ProductSource(Path(path))
    try:
        entries = read_manifest(src)
        if not entries:
            log.warning("%s: no %s: only zip CRCs can be checked", src.path.name, MANIFEST)
        if entries and not _describes(src, entries):
            log.warning(
                "%s: %s does not describe this product (no declared size matches a file: a "
                "placeholder manifest, as in products made by Esri); only zip CRCs are checked",
                src.path.name,
                MANIFEST,
            )
            entries = []
        checked, nbytes, absent, algos = 0, 0, [], set()
        for e in entries:
            if not src.exists(e.rel):
                absent.append(e.rel)
                continue
            digest, n = _hash_stream(src, e.rel, e.algorithm)
            if e.size_bytes is not None and n != e.size_bytes:
                raise CorruptProductError(
                    f"{src.path}: {e.rel} has {n} bytes, {MANIFEST} says {e.size_bytes}; the "
                    "product is truncated or corrupt: download it again"
                )
            if digest != e.digest:
                raise CorruptProductError(
                    f"{src.path}: {e.rel} fails its {e.algorithm} check against {MANIFEST} "
                    f"(expected {e.digest}, got {digest}); the product is corrupt: download it "
                    "again (or run with --no-verify to cut it anyway)"
                )
            checked += 1
            nbytes += n
            algos.add(e.algorithm)
        crc = 0
        if src.zip is not None:
            listed = {f"{src.safe_name}/{e.rel}" for e in entries}
            for info in src.zip.infolist():
                if info.is_dir() or info.filename in listed:
                    continue
                _hash_stream(src, info.filename.split("/", 1)[1], None)  # read through: CRC
                crc += 1
        if absent:
            log.info(
                "%s: %d files listed in %s are absent (e.g. %s)",
                src.path.name,
                len(absent),
                MANIFEST,
                absent[0],
            )
        return Verification(
            product=src.path.name,
            manifest=bool(entries),
            files_checked=checked,
            bytes_checked=nbytes,
            crc_checked=crc,
            algorithms=tuple(sorted(algos)),
            absent=tuple(absent),
        )
    finally:
        src.close()


def product_files(path: Path) -> list[Path]:
    """The files of a product: the zip itself, or every file under a ``.SAFE`` folder, sorted.

    Links are not followed into folders; a link or special file that would be read from outside
    the product is refused (:func:`ben_builder.product.source.checked_file`).

    Raises:
        UnsafeArchiveError: such a file.
    """
    if path.is_file():
        return [path]
    files = []
    for folder, dirs, names in os.walk(path):
        for name in dirs:  # a linked folder is not walked; one leading out is refused
            link = Path(folder, name)
            if link.is_symlink() and not link.resolve().is_relative_to(path.resolve()):
                checked_file(path, link)
        files += [checked_file(path, Path(folder, n)) for n in names]
    return sorted(f for f in files if f.is_file())


def stat_fingerprint(path: str | Path) -> str:
    """A cheap identity of a product's files: relative path, size and mtime of each (no content).

    Used to skip a verification already passed while the product is unchanged on disk.
    """
    path = Path(path)
    h = hashlib.sha256()
    for f in product_files(path):
        st = f.stat()
        rel = f.name if f == path else f.relative_to(path).as_posix()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def checksum(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (relative path and content, sorted)."""
    h = hashlib.sha256()
    for f in product_files(path):
        if path.is_dir():
            h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
