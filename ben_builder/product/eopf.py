"""Sentinel-2 L2A products in ESA's EOPF Zarr format: the same :class:`Product` record.

An EOPF product is a Zarr store named after the product (``S2B_MSIL2A_..._<gen>.zarr``), local
or served over HTTP(S). Its layout (ESA's EOPF sample products, CPM 2.5 and later):

- ``measurements/reflectance/r10m|r20m|r60m``: one ``uint16`` array per band (``b02`` ...),
  each band at its native resolution and again coarser; ``x`` and ``y`` hold the pixel centres;
- ``conditions/mask/l2a_classification/r20m/scl``: the scene classification (screening);
- root attributes: ``stac_discovery`` (the product's STAC item: id and properties) and
  ``other_metadata`` (``horizontal_CRS_code``, ...).

zarr-python reads the metadata and the pixels (consolidated or not, Zarr v2 or v3), window by
window as the chain reads every raster (:mod:`.zarr_io`); remote stores through fsspec's HTTP
file system.

Harmonisation as for STAC items (:mod:`ben_builder.product.stac`), recorded as ``offset_rule``:
``declared`` when the band arrays carry CF ``scale_factor`` and ``add_offset`` (the EOPF
products: ``add_offset = -0.1`` with ``scale_factor = 0.0001`` is BOA_ADD_OFFSET -1000);
``before-04.00`` without them for an older baseline; otherwise the product is refused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ben_builder.errors import MetadataError, ProductNotFoundError, UnsupportedProductError
from ben_builder.patches.grid import TileGeometry
from ben_builder.product import zarr_io
from ben_builder.product.names import ProductName
from ben_builder.product.safe import Product, native_m
from ben_builder.product.stac import baseline_of, declared_or_before_04

log = logging.getLogger(__name__)

SUFFIX = ".zarr"
REFLECTANCE = "measurements/reflectance"
SCL_ARRAY = "conditions/mask/l2a_classification/r20m/scl"


def is_eopf(path: str | Path) -> bool:
    """Whether ``path`` names an EOPF Zarr product (``<name>.zarr``, local or a URL)."""
    return str(path).rstrip("/").endswith(SUFFIX)


def array_path(band: str, resolution_m: int | None = None) -> str:
    """A band's array in the store (at its native resolution unless one is given)."""
    if band == "SCL":
        return SCL_ARRAY
    return f"{REFLECTANCE}/r{resolution_m or native_m()[band]}m/{band.lower()}"


def open_eopf(store: str | Path, record: Path | None = None) -> Product:
    """Resolve an EOPF Zarr product into a :class:`Product` (band paths usable by rasterio).

    Args:
        store: The ``.zarr`` store: a local folder or an ``http(s)://`` URL.
        record: What the product is known by in the run (a STAC item linking ``store``);
            ``store`` itself when not given.

    Raises:
        ProductNotFoundError: no store there.
        MetadataError: the store lacks what a product needs, or contradicts its name.
        UnsupportedProductError: not L2A, or its offset cannot be determined.
    """
    where = Path(record) if record is not None else Path(str(store))
    root = _open_group(store, where)
    attrs = dict(root.attrs)
    discovery = attrs.get("stac_discovery") or {}
    props = discovery.get("properties") or {}
    name = _name(store, where, discovery)
    if name.level != "L2A":
        raise UnsupportedProductError(
            f"{where}: a {name.level} product; EOPF Zarr sources serve L2A products (use the "
            "SAFE product for L1C)"
        )
    baseline = baseline_of(where, props, name)
    arrays = {band: _array(root, band, where) for band in (*native_m(), "SCL")}
    offsets, rule, quantification = _offsets(where, arrays, baseline)
    root_path = _store(store)
    return Product(
        path=where,
        name=name,
        level="L2A",
        processing_baseline=baseline,
        quantification_value=quantification,
        offsets=offsets,
        tile=_tile(where, root, attrs, props),
        band_paths={b: zarr_io.band_path(root_path, array_path(b)) for b in arrays},
        image_format="Zarr",
        offset_rule=rule,
    )


def cloud_cover(store: str | Path) -> float | None:
    """The product's ``eo:cloud_cover`` (its ``stac_discovery`` properties), if stated."""
    root = _open_group(store, Path(str(store)))
    props = (root.attrs.get("stac_discovery") or {}).get("properties") or {}
    value = props.get("eo:cloud_cover")
    return float(value) if isinstance(value, int | float) else None


def _open_group(store: str | Path, where: Path) -> Any:
    import zarr

    url = str(store)
    remote = urlparse(url).scheme in ("http", "https", "s3")
    if not remote and not Path(url).is_dir():
        raise ProductNotFoundError(f"{where}: no such Zarr product ({url})")
    try:
        return zarr.open_group(url, mode="r")
    except ImportError as exc:  # fsspec's backends: s3fs for s3://
        raise UnsupportedProductError(f"{where}: cannot open {url}: {exc}") from exc
    except FileNotFoundError as exc:
        raise ProductNotFoundError(f"{where}: no Zarr group at {url}") from exc
    except Exception as exc:  # zarr's and fsspec's errors (bad JSON, HTTP errors, ...)
        raise MetadataError(f"{where}: not a readable Zarr product ({url}): {exc}") from exc


def _store(store: str | Path) -> str:
    url = str(store).rstrip("/")
    return url if urlparse(url).scheme else str(Path(url).resolve())


def _name(store: str | Path, where: Path, discovery: Mapping[str, Any]) -> ProductName:
    """The product name: the store's, which its ``stac_discovery`` id must agree with."""
    folder = str(store).rstrip("/").rsplit("/", 1)[-1].removesuffix(SUFFIX)
    said = discovery.get("id")
    if isinstance(said, str) and said and said.removesuffix(".SAFE") != folder:
        raise MetadataError(
            f"{where}: the store is named {folder} but its stac_discovery id is {said}; "
            "rename the store after the product it holds"
        )
    try:
        return ProductName.parse(folder)
    except UnsupportedProductError as exc:
        raise UnsupportedProductError(
            f"{where}: an EOPF product store is named after its product "
            f"(S2B_MSIL2A_..._<generation>.zarr): {exc}"
        ) from exc


def _array(root: Any, band: str, where: Path) -> Any:
    path = array_path(band)
    try:
        return root[path]
    except KeyError as exc:
        raise MetadataError(f"{where}: the product has no {path} array") from exc


def _cf(arr: Any) -> Mapping[str, Any]:
    """An array's CF attributes (top level, or inside ``_eopf_attrs``)."""
    attrs = dict(arr.attrs)
    return {**(attrs.get("_eopf_attrs") or {}), **attrs}


def _offsets(
    where: Path, arrays: Mapping[str, Any], baseline: str
) -> tuple[dict[str, int], str, int]:
    """Each band's DN offset, the rule it came from, and the quantification value."""
    declared: dict[str, int] = {}
    scales = set()
    for band in native_m():
        cf = _cf(arrays[band])
        scale, offset = cf.get("scale_factor"), cf.get("add_offset")
        if isinstance(scale, int | float) and scale > 0:
            scales.add(round(1 / scale))
            if isinstance(offset, int | float):
                declared[band] = round(offset / scale)
    if len(scales) > 1:
        raise MetadataError(f"{where}: the bands' scale_factor differ ({sorted(scales)})")
    quantification = scales.pop() if scales else 10000
    known = declared_or_before_04(declared, baseline)
    if known is not None:
        return *known, quantification
    raise UnsupportedProductError(
        f"{where}: baseline {baseline} products carry an offset (BOA_ADD_OFFSET), but the band "
        "arrays declare no add_offset; refusing to guess whether its pixels include it"
    )


def _tile(
    where: Path, root: Any, attrs: Mapping[str, Any], props: Mapping[str, Any]
) -> TileGeometry:
    """The tile geometry: CRS from the metadata, corner and size from the 10 m coordinates."""
    code = (attrs.get("other_metadata") or {}).get("horizontal_CRS_code") or props.get("proj:code")
    epsg = props.get("proj:epsg")
    if isinstance(code, str) and code.upper().startswith("EPSG:"):
        epsg = int(code.split(":", 1)[1])
    if not isinstance(epsg, int):
        raise MetadataError(
            f"{where}: no CRS (other_metadata.horizontal_CRS_code or stac_discovery proj:epsg)"
        )
    try:
        x = root[f"{REFLECTANCE}/r10m/x"][:2]
        y = root[f"{REFLECTANCE}/r10m/y"][:2]
        side_px = int(root[f"{REFLECTANCE}/r10m/x"].shape[0])
    except KeyError as exc:
        raise MetadataError(f"{where}: no x/y coordinates in {REFLECTANCE}/r10m") from exc
    if float(x[1] - x[0]) != 10.0 or float(y[0] - y[1]) != 10.0:
        raise MetadataError(f"{where}: the r10m coordinates are not a 10 m grid ({x}, {y})")
    return TileGeometry(
        epsg=epsg,
        ulx_m=float(x[0]) - 5.0,
        uly_m=float(y[0]) + 5.0,
        size_m=side_px * 10.0,
    )
