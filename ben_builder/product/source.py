"""The files of one product, folder or zip, and its XML metadata parsed safely.

Zipped products are read in place; a member outside the product is refused, and XML with DTDs or
entities is refused before it is parsed.
"""

from __future__ import annotations

import logging
import re
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
            return (self.root / rel).read_bytes()
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
        return str(self.root / rel)

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
    data = src.read_bytes(rel)
    try:
        root: Element = DET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise MetadataError(
            f"{src.path}: {rel} contains forbidden XML constructs ({type(exc).__name__}: {exc}); "
            "refusing to parse a hostile metadata file"
        ) from exc
    except Exception as exc:  # ParseError and friends
        raise MetadataError(f"{src.path}: {rel} is not well-formed XML: {exc}") from exc
    return root


def local_name(tag: str) -> str:
    """An XML tag without its namespace."""
    return tag.rsplit("}", 1)[-1]


def find_all(root: Element, name: str) -> list[Element]:
    """Every element under ``root`` whose tag, without namespace, is ``name``."""
    return [e for e in root.iter() if local_name(e.tag) == name]
