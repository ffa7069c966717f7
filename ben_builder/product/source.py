"""The files of one product, folder or zip, and its XML metadata parsed safely.

Zipped products are read in place; a member outside the product is refused, and XML with DTDs or
entities is refused before it is parsed.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import zipfile
from pathlib import Path, PurePosixPath
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from ben_builder.errors import (
    CorruptProductError,
    MetadataError,
    ProductNotFoundError,
    UnsafeArchiveError,
)

log = logging.getLogger(__name__)

#: The largest metadata file parsed. Real ones are under 1 MB (MTD_TL.xml with its angle grids
#: ~0.6 MB); a hostile one inflated to gigabytes inside a small zip must not be read whole.
MAX_XML_BYTES = 8 << 20


def _plain_stem(name: str) -> str:
    """A product file's name without ``.zip``, ``.SAFE`` or both."""
    for ext in (".zip", ".SAFE"):
        name = name.removesuffix(ext)
    return name


def checked_file(root: Path, path: Path) -> Path:
    """``path`` (under the product folder ``root``) if it is a plain file of the product.

    Raises:
        UnsafeArchiveError: a link that leads out of the product, or a special file (device,
            FIFO, socket): reading it could hang or read another file than the product's.
    """
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(os.path.realpath(root)):
        raise UnsafeArchiveError(
            f"{root}: {path.relative_to(root)} is a link to {real}, outside the product; "
            "refusing to read it (copy the product's own files instead of linking them)"
        )
    try:
        mode = real.stat().st_mode
    except FileNotFoundError:
        return path  # missing: the caller says which file is missing
    if not stat.S_ISREG(mode):
        raise UnsafeArchiveError(
            f"{root}: {path.relative_to(root)} is not a regular file; refusing to read it"
        )
    return path


class ProductSource:
    """Uniform access to the files of a product folder or zip (relative POSIX paths)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip: zipfile.ZipFile | None = None
        if path.is_dir():
            self.root = path
            self.safe_name = path.name
        elif path.is_file():
            try:
                self.zip = zipfile.ZipFile(path)
            except zipfile.BadZipFile as exc:
                raise CorruptProductError(
                    f"{path}: not a readable zip ({exc}); the download is probably truncated or "
                    "corrupt: delete it and download it again"
                ) from exc
            self.members = self._check_members()
            tops = {m.split("/", 1)[0] for m in self.members}
            safes = sorted(t for t in tops if t.endswith(".SAFE"))
            if len(safes) != 1:
                raise ProductNotFoundError(
                    f"{path}: a product zip must hold exactly one top-level <name>.SAFE folder, "
                    f"found {safes or sorted(tops)}"
                )
            self.safe_name = safes[0]
            outside = _plain_stem(path.name)
            if outside.startswith("S2") and outside != _plain_stem(self.safe_name):
                raise MetadataError(
                    f"{path}: the file name says {outside}, the product inside is "
                    f"{self.safe_name}; a renamed or copied download (rename it "
                    f"{_plain_stem(self.safe_name)}.zip, or delete the copy)"
                )
        else:
            raise ProductNotFoundError(
                f"{path}: no such product; give a <name>.SAFE folder or a <name>.zip"
            )

    def _check_members(self) -> set[str]:
        assert self.zip is not None
        names = set()
        for info in self.zip.infolist():
            n = info.filename
            parts = PurePosixPath(n.replace("\\", "/")).parts
            if n.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", n) or ".." in parts:
                raise UnsafeArchiveError(
                    f"{self.path}: zip member {n!r} points outside the product (absolute path or "
                    "'..'); refusing to read this archive"
                )
            names.add(n.rstrip("/"))
        return names

    def exists(self, rel: str) -> bool:
        """Whether the product holds the file ``rel``."""
        if self.zip is not None:
            return f"{self.safe_name}/{rel}" in self.members
        return (self.root / rel).is_file()

    def read_bytes(self, rel: str) -> bytes:
        """The bytes of ``rel``.

        Raises:
            MetadataError: the file is missing.
            CorruptProductError: it cannot be read.
        """
        try:
            if self.zip is not None:
                return self.zip.read(f"{self.safe_name}/{rel}")
            return self.local(rel).read_bytes()
        except KeyError as exc:
            raise MetadataError(f"{self.path}: {rel} is missing from the product") from exc
        except FileNotFoundError as exc:
            raise MetadataError(f"{self.path}: {rel} is missing from the product") from exc
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise CorruptProductError(f"{self.path}: cannot read {rel}: {exc}") from exc

    def gdal_path(self, rel: str) -> str:
        """The path GDAL opens ``rel`` by (``/vsizip/`` inside a zip)."""
        if self.zip is not None:
            return f"/vsizip/{self.path.resolve()}/{self.safe_name}/{rel}"
        return str(self.local(rel))

    def local(self, rel: str) -> Path:
        """The path of ``rel`` in a product folder; refused if it leads out (see checked_file)."""
        return checked_file(self.root, self.root / rel)

    def size(self, rel: str) -> int:
        """The size of ``rel`` in bytes (a zip member's declared size).

        Raises:
            MetadataError: the file is missing.
        """
        try:
            if self.zip is not None:
                return self.zip.getinfo(f"{self.safe_name}/{rel}").file_size
            return self.local(rel).stat().st_size
        except (KeyError, FileNotFoundError) as exc:
            raise MetadataError(f"{self.path}: {rel} is missing from the product") from exc

    def relative(self, gdal_path: str) -> str:
        """Inverse of :meth:`gdal_path`."""
        if self.zip is not None:
            return gdal_path.split(f"/{self.safe_name}/", 1)[1]
        return Path(gdal_path).relative_to(self.root).as_posix()

    def glob(self, pattern: str) -> list[str]:
        """Relative paths matching a regular expression (full match)."""
        rx = re.compile(pattern)
        if self.zip is not None:
            prefix = self.safe_name + "/"
            return sorted(
                m[len(prefix) :]
                for m in self.members
                if m.startswith(prefix) and rx.fullmatch(m[len(prefix) :])
            )
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and rx.fullmatch(p.relative_to(self.root).as_posix())
        )

    def close(self) -> None:
        """Close the zip, if any."""
        if self.zip is not None:
            self.zip.close()


def extract_product(path: str | Path, dest: str | Path) -> Path:
    """Unzip a product's ``<name>.SAFE`` folder into ``dest`` (for tools that need a folder).

    The zip's members are checked as the reader checks them (one top-level ``.SAFE``, no member
    outside it).

    Returns:
        The extracted ``.SAFE`` folder.
    """
    src = ProductSource(Path(path))
    try:
        if src.zip is None:
            raise ProductNotFoundError(f"{path}: not a zip; nothing to extract")
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        members = [m for m in src.zip.namelist() if m.startswith(f"{src.safe_name}/")]
        try:
            src.zip.extractall(dest, members)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise CorruptProductError(f"{path}: cannot extract ({exc})") from exc
        return dest / src.safe_name
    finally:
        src.close()


def parse_xml(src: ProductSource, rel: str) -> Element:
    """Parse the XML file ``rel``, refusing DTDs, entities and malformed XML.

    Raises:
        MetadataError: the file is missing, hostile or not well-formed.
    """
    size = src.size(rel)
    if size > MAX_XML_BYTES:
        raise MetadataError(
            f"{src.path}: {rel} is {size / 1e6:,.1f} MB, real metadata files are under 1 MB "
            f"(limit {MAX_XML_BYTES / 1e6:.0f} MB); refusing to parse it"
        )
    data = src.read_bytes(rel)
    if len(data) > MAX_XML_BYTES:  # a zip member larger than its declared size
        raise MetadataError(f"{src.path}: {rel} is larger than it declares; refusing to parse it")
    return parse_xml_bytes(data, f"{src.path}: {rel}")


def parse_xml_bytes(data: bytes, where: str) -> Element:
    """Parse XML bytes (``where`` names them in errors), refusing DTDs and entities.

    Raises:
        MetadataError: hostile or not well-formed.
    """
    try:
        root: Element = DET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise MetadataError(
            f"{where} contains forbidden XML constructs ({type(exc).__name__}: {exc}); "
            "refusing to parse a hostile metadata file"
        ) from exc
    except Exception as exc:  # ParseError and friends
        raise MetadataError(f"{where} is not well-formed XML: {exc}") from exc
    return root


def local_name(tag: str) -> str:
    """An XML tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def find_all(root: Element, name: str) -> list[Element]:
    """Every element under ``root`` whose tag, without namespace, is ``name``."""
    return [e for e in root.iter() if local_name(e.tag) == name]
