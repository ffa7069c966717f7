"""Sentinel-2 L2A products as STAC items: the same :class:`Product` record as a SAFE product.

A STAC item (Earth Search, Planetary Computer, the CDSE catalogue, or the generator's) names the
product (``s2:product_uri`` or ``sentinel:product_id``), its baseline, its tile geometry
(``proj:*``) and one asset per band (``B01`` ... ``B12``, ``B8A``, ``SCL``). The bands are read
by GDAL from the assets (local files, ``/vsicurl/`` for HTTP, ``/vsis3/`` for S3), so the rest
of the chain reads them as it reads a SAFE product's.

Harmonisation: the record's offsets follow the SAFE reader's convention (DN + offset, the
offset being the product's ``BOA_ADD_OFFSET``). Catalogues differ in what they say about it,
so the rule is derived per item and recorded (``offset_rule``):

- ``declared``: the band assets' ``raster:bands`` give ``scale`` and ``offset`` (Earth Search's
  ``sentinel-2-c1-l2a``): DN offset = offset / scale;
- ``before-04.00``: the baseline is older than 04.00, whose products carry no offset;
- ``MTD``: the item links the product's ``MTD_MSIL2A.xml`` (Planetary Computer's
  ``product-metadata``), which lists ``BOA_ADD_OFFSET`` per band as in the SAFE product.

An item of baseline 04.00 or later with none of these is refused, never guessed: Earth Search's
``earthsearch:boa_offset_applied`` was wrong for some items.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ben_builder.errors import (
    BenBuilderError,
    MetadataError,
    ProductNotFoundError,
    UnsupportedProductError,
)
from ben_builder.patches.grid import TileGeometry
from ben_builder.patches.tiles import tile_geometry
from ben_builder.product.names import ProductName
from ben_builder.product.safe import (
    BAND_INDEX,
    OFFSET_BASELINE,
    Product,
    native_m,
    offsets_from_mtd,
)
from ben_builder.product.source import MAX_XML_BYTES

log = logging.getLogger(__name__)

#: Item properties that name the product, in the order they are tried.
NAME_PROPERTIES = ("s2:product_uri", "sentinel:product_id", "s2:product_id")
#: Assets of the product metadata (``MTD_MSIL2A.xml``), by catalogue.
MTD_ASSETS = ("product-metadata", "product_metadata", "mtd")
#: Band asset keys: the band's name, or Earth Search's common names (its c1 collection).
COMMON_NAMES = {
    "B01": "coastal",
    "B02": "blue",
    "B03": "green",
    "B04": "red",
    "B05": "rededge1",
    "B06": "rededge2",
    "B07": "rededge3",
    "B08": "nir",
    "B8A": "nir08",
    "B09": "nir09",
    "B11": "swir16",
    "B12": "swir22",
    "SCL": "scl",
}
#: The bands a patch needs (B10 is not in L2A products) and SCL for screening.
ITEM_BANDS = tuple(b for b in BAND_INDEX if b != "B10") + ("SCL",)


def is_item(path: str | Path) -> bool:
    """Whether ``path`` names a STAC item (``.json``), not a SAFE product."""
    return Path(path).suffix == ".json"


def read_item(path: str | Path) -> dict[str, Any]:
    """The item's JSON.

    Raises:
        ProductNotFoundError: no such file.
        MetadataError: not a STAC item (JSON ``Feature`` with properties and assets).
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ProductNotFoundError(f"{path}: no such STAC item") from exc
    except (OSError, ValueError) as exc:
        raise MetadataError(f"{path}: not a readable STAC item ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("type") != "Feature" or "assets" not in doc:
        raise MetadataError(f"{path}: not a STAC item (a GeoJSON Feature with assets)")
    return doc


def open_item(path: str | Path) -> Product:
    """Resolve a STAC item file into a :class:`Product` (band paths usable by rasterio).

    Raises:
        ProductNotFoundError: the file is missing.
        MetadataError: the item lacks what a product needs (name, band assets, geometry).
        UnsupportedProductError: not an L2A item, or its offset cannot be determined.
    """
    path = Path(path)
    item = read_item(path)
    props = item.get("properties") or {}
    name = _name(path, item)
    if name.level != "L2A":
        raise UnsupportedProductError(
            f"{path}: a {name.level} item; STAC sources serve L2A products (use the SAFE "
            "product for L1C)"
        )
    assets = item["assets"]
    band_paths = {band: gdal_path(_href(path, assets, band)) for band in ITEM_BANDS}
    baseline = baseline_of(path, props, name)
    offsets, rule = _offsets(path, item, baseline)
    return Product(
        path=path,
        name=name,
        level=name.level,
        processing_baseline=baseline,
        quantification_value=_quantification(assets),
        offsets=offsets,
        tile=_tile(path, item, name),
        band_paths=band_paths,
        image_format="GeoTIFF",
        offset_rule=rule,
    )


def zarr_product(path: str | Path) -> str | None:
    """The EOPF Zarr store an item's ``product`` asset links (the EOPF STAC's items), if any.

    Its href resolved as the band assets' are: a local path or a URL.
    """
    path = Path(path)
    asset = read_item(path)["assets"].get("product") or {}
    href = str(asset.get("href") or "")
    if "zarr" not in str(asset.get("type", "")) and not href.rstrip("/").endswith(".zarr"):
        return None
    return _resolved(path, href)


def remote_assets(path: str | Path) -> list[str]:
    """The HTTP(S) URLs whose answers identify an item's remote data (for its identity).

    The band assets; for a Zarr store its metadata documents (``.zmetadata``, ``zarr.json``).
    """
    store = zarr_product(path)
    docs = (".zmetadata", "zarr.json")
    hrefs = [f"{store.rstrip('/')}/{doc}" for doc in docs] if store else _band_hrefs(Path(path))
    return [u for u in hrefs if urlparse(u).scheme in ("http", "https")]


def local_assets(path: str | Path) -> list[Path]:
    """The band assets (or the Zarr store) of an item that are local files (for its identity)."""
    store = zarr_product(path)
    hrefs = [store] if store else _band_hrefs(Path(path))
    return [Path(h) for h in hrefs if "://" not in h and Path(h).exists()]


def _band_hrefs(path: Path) -> list[str]:
    """The resolved hrefs of the band assets an item has."""
    assets = read_item(path)["assets"]
    return [
        _href(path, assets, band) for band in ITEM_BANDS if (_asset(assets, band) or {}).get("href")
    ]


def item_cloud_cover(path: str | Path) -> float | None:
    """The item's ``eo:cloud_cover`` in percent, if it states one."""
    value = (read_item(path).get("properties") or {}).get("eo:cloud_cover")
    return float(value) if isinstance(value, int | float) else None


def named_product(item: dict[str, Any]) -> str | None:
    """The product name an item gives, if any.

    A property of :data:`NAME_PROPERTIES`, or else its id where that is a product name (the
    CDSE and EOPF catalogues name items so; Earth Search's ids are not).
    """
    props = item.get("properties") or {}
    for key in NAME_PROPERTIES:
        value = props.get(key)
        if isinstance(value, str) and value:
            return value
    value = item.get("id")
    if not isinstance(value, str):
        return None
    try:
        return ProductName.parse(value).name
    except BenBuilderError:
        return None


def _name(path: Path, item: dict[str, Any]) -> ProductName:
    value = named_product(item)
    if value is not None:
        return ProductName.parse(value)
    raise MetadataError(
        f"{path}: the item names no product (none of {', '.join(NAME_PROPERTIES)}, no id); "
        "patch names are made from the product name"
    )


def _asset(assets: dict[str, Any], band: str) -> dict[str, Any] | None:
    native = 20 if band == "SCL" else native_m().get(band, 60)  # B10 (L1C only): 60 m
    for key in (band, COMMON_NAMES.get(band, ""), band.lower(), f"{band}_{native}m"):
        if key in assets:
            found: dict[str, Any] = assets[key]
            return found
    return None


def _href(path: Path, assets: dict[str, Any], band: str) -> str:
    asset = _asset(assets, band)
    if asset is None or not asset.get("href"):
        raise MetadataError(
            f"{path}: the item has no asset for {band} (looked for {band!r}, "
            f"{COMMON_NAMES.get(band)!r}, {band}_<native resolution>m); some catalogue items "
            "miss assets"
        )
    return _resolved(path, str(asset["href"]))


def _resolved(path: Path, href: str) -> str:
    """An href as given (a URL or an absolute path), or relative to the item, as STAC defines."""
    if "://" in href or href.startswith("/"):
        return href
    return str((path.parent / href).resolve())


def gdal_path(href: str) -> str:
    """The path GDAL reads an asset by: a local path, ``/vsicurl/`` or ``/vsis3/``."""
    scheme = urlparse(href).scheme
    if scheme in ("http", "https"):
        return f"/vsicurl/{href}"
    if scheme == "s3":
        return f"/vsis3/{href.removeprefix('s3://')}"
    if scheme == "file":
        return urlparse(href).path
    return href


def baseline_of(path: Path, props: Mapping[str, Any], name: ProductName) -> str:
    """The processing baseline an item's (or an EOPF store's) properties give, else the name's."""
    for key in ("s2:processing_baseline", "processing:version"):  # the CDSE's: the latter
        value = props.get(key)
        if isinstance(value, str) and re.fullmatch(r"\d{2}\.\d{2}", value):
            return value
    if re.fullmatch(r"\d{4}", name.baseline):  # N0214 -> 02.14
        return f"{name.baseline[:2]}.{name.baseline[2:]}"
    raise MetadataError(f"{path}: no processing baseline (s2:processing_baseline or the name)")


def _quantification(assets: dict[str, Any]) -> int:
    scale = _raster_band(_asset(assets, "B02") or {}).get("scale")
    return round(1 / scale) if isinstance(scale, int | float) and scale > 0 else 10000


def _raster_band(asset: dict[str, Any]) -> dict[str, Any]:
    bands = asset.get("raster:bands")
    return bands[0] if isinstance(bands, list) and bands and isinstance(bands[0], dict) else {}


def _offsets(path: Path, item: dict[str, Any], baseline: str) -> tuple[dict[str, int], str]:
    """Each band's DN offset and the rule it came from (see the module's docstring)."""
    assets = item["assets"]
    declared: dict[str, int] = {}
    for band in BAND_INDEX:
        rb = _raster_band(_asset(assets, band) or {})
        scale, offset = rb.get("scale"), rb.get("offset")
        if isinstance(scale, int | float) and scale > 0 and isinstance(offset, int | float):
            declared[band] = round(offset / scale)
    known = declared_or_before_04(declared, baseline)
    if known is not None:
        return known
    mtd = next((assets[k] for k in MTD_ASSETS if k in assets), None)
    if mtd is not None and mtd.get("href"):
        data = _fetch(path, str(mtd["href"]))
        return offsets_from_mtd(data, f"{path} ({mtd['href']})", "L2A", baseline), "MTD"
    raise UnsupportedProductError(
        f"{path}: baseline {baseline} products carry an offset (BOA_ADD_OFFSET), but the item "
        "neither declares it (raster:bands scale/offset) nor links the product metadata "
        "(MTD_MSIL2A.xml); refusing to guess whether its pixels include it"
    )


def declared_or_before_04(
    declared: Mapping[str, int], baseline: str
) -> tuple[dict[str, int], str] | None:
    """The offsets the two rules shared by items and EOPF stores give, or None.

    ``declared`` when some bands declare theirs (the others 0); ``before-04.00`` (all 0) when the
    baseline predates offsets; None when neither applies.
    """
    if declared:
        return {band: declared.get(band, 0) for band in BAND_INDEX}, "declared"
    if tuple(int(v) for v in baseline.split(".")) < OFFSET_BASELINE:
        return dict.fromkeys(BAND_INDEX, 0), "before-04.00"
    return None


def _fetch(path: Path, href: str) -> bytes:
    """An asset's bytes (local or HTTP), at most :data:`MAX_XML_BYTES`."""
    scheme = urlparse(href).scheme
    if scheme not in ("http", "https", "file", ""):
        raise MetadataError(
            f"{path}: the product metadata {href} is on {scheme}://, from which only bands are "
            "read (by GDAL); the item's baseline needs BOA_ADD_OFFSET from it: search a "
            "catalogue that serves it over HTTPS, or build from the SAFE product"
        )
    try:
        if scheme in ("http", "https"):
            import requests

            with requests.get(href, timeout=60, stream=True) as resp:
                resp.raise_for_status()
                data = resp.raw.read(MAX_XML_BYTES + 1, decode_content=True)
        else:
            local = Path(urlparse(href).path if scheme == "file" else href)
            if not local.is_absolute():
                local = path.parent / local
            with open(local, "rb") as fh:
                data = fh.read(MAX_XML_BYTES + 1)
    except Exception as exc:  # requests' and the file system's errors alike
        raise MetadataError(f"{path}: cannot read the product metadata {href} ({exc})") from exc
    if len(data) > MAX_XML_BYTES:
        raise MetadataError(f"{path}: {href} is larger than any real metadata file; refused")
    return bytes(data)


def _tile(path: Path, item: dict[str, Any], name: ProductName) -> TileGeometry:
    """The tile geometry from the 10 m band's ``proj:*`` (or the MGRS grid, without them)."""
    props = item.get("properties") or {}
    asset = _asset(item["assets"], "B02") or {}
    transform = asset.get("proj:transform") or props.get("proj:transform")
    shape = asset.get("proj:shape") or props.get("proj:shape")
    epsg = asset.get("proj:epsg") or props.get("proj:epsg")
    code = asset.get("proj:code") or props.get("proj:code")
    if epsg is None and isinstance(code, str) and code.startswith("EPSG:"):
        epsg = int(code.split(":", 1)[1])
    if not (transform and shape and epsg):
        return tile_geometry(name.tile_id)
    if transform[0] != 10 or transform[4] != -10 or shape[0] != shape[1]:
        raise MetadataError(
            f"{path}: B02 is not a square 10 m raster (proj:transform {transform}, proj:shape "
            f"{shape})"
        )
    return TileGeometry(
        epsg=int(epsg),
        ulx_m=float(transform[2]),
        uly_m=float(transform[5]),
        size_m=float(shape[0]) * 10.0,
    )
