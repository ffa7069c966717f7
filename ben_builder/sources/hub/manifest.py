"""Product manifests: what a search found, as JSON lines (one product per line).

A manifest holds no credentials: only what the hub publishes about each product.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ben_builder.errors import SpecError, UnsupportedProductError
from ben_builder.files import write_bytes
from ben_builder.product.names import ProductName


@dataclass(frozen=True)
class ManifestItem:
    """One product as a hub describes it.

    Attributes:
        id: The hub's product id (UUID).
        name: Product name without ``.SAFE``.
        backend: ``cdse`` or ``dhus``.
        url: Download URL of the product zip.
        size: Size in bytes, if published.
        md5: MD5 checksum (hex), if published.
        blake3: BLAKE3 checksum (hex), if published.
        footprint_wkt: Footprint in EPSG:4326 WKT, if published.
        online: False when the product sits in a long-term archive.
        sensing_start: Sensing start (ISO 8601), if published.
        cloud_cover: The hub's cloud cover in percent, if published (``select`` picks by it).
    """

    id: str
    name: str
    backend: str
    url: str
    size: int | None = None
    md5: str | None = None
    blake3: str | None = None
    footprint_wkt: str | None = None
    online: bool = True
    sensing_start: str | None = None
    cloud_cover: float | None = None

    def __post_init__(self) -> None:
        """Refuse a name that is no plain product name before any path is made from it.

        Raises:
            UnsupportedProductError: a path (``../x``, ``/x``) or not a Sentinel-2 L1C/L2A name.
        """
        plain_product_name(self.name)

    @property
    def filename(self) -> str:
        """File name of the downloaded product zip."""
        return f"{self.name}.zip"


def plain_product_name(name: str) -> str:
    """``name`` if it is a plain Sentinel-2 product name (no folder, no ``..``).

    A hub's answer names the files written (``<name>.zip``): a name with a path in it would be
    written outside the download folder.

    Raises:
        UnsupportedProductError: any other name.
    """
    if "/" in name or "\\" in name or name in ("", ".", "..") or name.startswith("."):
        raise UnsupportedProductError(
            f"{name!r}: not a plain product name (a path); refusing to make a file of it"
        )
    ProductName.parse(name)  # raises UnsupportedProductError for anything but S2 L1C/L2A
    return name


def write_manifest(path: Path, items: Iterable[ManifestItem]) -> int:
    """Write items as JSON lines, atomically; return how many."""
    rows = [json.dumps(asdict(i), sort_keys=True) for i in items]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, "".join(r + "\n" for r in rows).encode())
    return len(rows)


def read_manifest(path: Path) -> list[ManifestItem]:
    """Read a JSON-lines manifest; a bad line is an error naming the file and line."""
    names = {f.name for f in fields(ManifestItem)}
    items = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read manifest ({exc.strerror})") from exc
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            unknown = set(row) - names
            if unknown:
                raise ValueError(f"unknown keys {sorted(unknown)}")
            items.append(ManifestItem(**row))
        except (ValueError, TypeError) as exc:
            raise SpecError(f"{path}:{no}: not a manifest entry: {exc}") from exc
    return items
