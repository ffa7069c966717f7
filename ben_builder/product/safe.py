"""Sentinel-2 SAFE products: names, metadata and band rasters (L1C and L2A, folder or zip).

This is one of the few modules that touches files. It turns a product path into a small frozen
:class:`Product` record (paths as GDAL strings, parsed metadata) and reads whole bands into numpy
arrays. Zipped products are read in place through ``/vsizip/``; nothing is extracted.

DN convention: every band this module returns follows the pre-04.00 convention
(reflectance = DN / quantification value). From processing baseline 04.00 on, products carry a
per-band additive offset (``BOA_ADD_OFFSET`` / ``RADIO_ADD_OFFSET``, typically -1000); it is
applied here (``DN + offset``), valid pixels are clipped to >= 1 so they never collide with the
no-data value 0, and no-data pixels stay 0. The offset is recorded in the product metadata.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import numpy as np
import rasterio
from rasterio.errors import RasterioIOError
from rasterio.windows import Window

from ben_builder import specs
from ben_builder.errors import (
    BandShapeError,
    CorruptProductError,
    MetadataError,
    MissingBandError,
    UnsupportedProductError,
)
from ben_builder.patches.grid import TileGeometry
from ben_builder.product import zarr_io
from ben_builder.product.names import PRODUCT_TYPES, ProductName
from ben_builder.product.source import ProductSource, find_all, parse_xml, parse_xml_bytes

log = logging.getLogger(__name__)

BAND_INDEX = {
    "B01": 0,
    "B02": 1,
    "B03": 2,
    "B04": 3,
    "B05": 4,
    "B06": 5,
    "B07": 6,
    "B08": 7,
    "B8A": 8,
    "B09": 9,
    "B10": 10,
    "B11": 11,
    "B12": 12,
}
OFFSET_BASELINE = (4, 0)


def native_m() -> dict[str, int]:
    """Each band's native resolution (``data_specs/bands.yaml``; B10 is not in L2A)."""
    return {b.name: b.resolution_m for b in specs.bands().bands}


SCL_RESOLUTION_M = 20
IMAGE_FORMATS = {"JPEG2000": ".jp2", "GeoTIFF": ".tif"}  # Granule/@imageFormat -> file extension


@dataclass(frozen=True)
class Product:
    """A Sentinel-2 product resolved on disk: metadata parsed, band locations known.

    Attributes:
        path: The product as given (``.SAFE`` folder or ``.zip``).
        name: Parsed product name.
        level: ``"L1C"`` or ``"L2A"``.
        processing_baseline: e.g. ``"04.00"``.
        quantification_value: DN per unit reflectance (10000).
        offsets: Additive offset per band name (0 before baseline 04.00).
        tile: Tile geometry from MTD_TL.xml.
        band_paths: GDAL path per band name (``B02``..``B12``, and ``SCL`` for L2A).
        mask_paths: GDAL paths of the L1C cloud masks present (``MSK_CLASSI`` / ``MSK_CLOUDS``).
        image_format: ``Granule/@imageFormat``: ``JPEG2000`` (``.jp2``) or ``GeoTIFF`` (``.tif``).
    """

    path: Path
    name: ProductName
    level: str
    processing_baseline: str
    quantification_value: int
    offsets: Mapping[str, int]
    tile: TileGeometry
    band_paths: Mapping[str, str]
    mask_paths: Mapping[str, str] = field(default_factory=dict)
    image_format: str = "JPEG2000"
    offset_rule: str = ""  # a STAC item's: how its offsets were determined (ben_builder.stac)

    @property
    def stem(self) -> str:
        """Product name without its generation time."""
        return self.name.stem

    @property
    def uses_offset(self) -> bool:
        """Whether bands carry the additive offset of baseline 04.00 and later."""
        return any(v != 0 for v in self.offsets.values())


def _text(root: Element, name: str, src: ProductSource, rel: str) -> str:
    found = find_all(root, name)
    if not found or not (found[0].text or "").strip():
        raise MetadataError(f"{src.path}: {rel} has no <{name}> element")
    return (found[0].text or "").strip()


def _int(value: str, what: str, src: ProductSource, rel: str) -> int:
    try:
        return int(float(value))
    except ValueError as exc:
        raise MetadataError(f"{src.path}: {rel}: {what} {value!r} is not a number") from exc


def _parse_tile(src: ProductSource, root: Element, rel: str) -> TileGeometry:
    code = _text(root, "HORIZONTAL_CS_CODE", src, rel)
    m = re.fullmatch(r"EPSG:(\d+)", code)
    if not m:
        raise MetadataError(f"{src.path}: {rel}: HORIZONTAL_CS_CODE {code!r} is not EPSG:<code>")
    geo = [g for g in find_all(root, "Geoposition") if g.get("resolution") == "10"]
    sizes = [s for s in find_all(root, "Size") if s.get("resolution") == "10"]
    if not geo or not sizes:
        raise MetadataError(f"{src.path}: {rel} lacks the 10 m <Geoposition> or <Size>")
    ulx = float(_text(geo[0], "ULX", src, rel))
    uly = float(_text(geo[0], "ULY", src, rel))
    ncols = _int(_text(sizes[0], "NCOLS", src, rel), "NCOLS", src, rel)
    nrows = _int(_text(sizes[0], "NROWS", src, rel), "NROWS", src, rel)
    if ncols != nrows or ncols <= 0 or ncols % 6:
        raise MetadataError(
            f"{src.path}: {rel}: tile size {nrows} x {ncols} px is not square or not a multiple "
            "of 6 px (60 m)"
        )
    return TileGeometry(epsg=int(m[1]), ulx_m=ulx, uly_m=uly, size_m=ncols * 10.0)


def _strip_image_ext(rel: str) -> str:
    """IMAGE_FILE entries name files without extension; tolerate the few that carry one."""
    for ext in IMAGE_FORMATS.values():
        if rel.lower().endswith(ext):
            return rel[: -len(ext)]
    return rel


def _native_image_file(image_files: list[str], band: str, res: int, level: str) -> str | None:
    """The IMAGE_FILE of ``band`` at resolution ``res`` (L2A: ``R<res>m/..._<band>_<res>m``).

    L1C delivers each band once, at its native resolution, directly under ``IMG_DATA``. L2A
    delivers most bands at several resolutions (B01 at 20 m and 60 m, B02 at 10, 20 and 60 m,
    ...); only the file at the band's native resolution is the one to cut.
    """
    if level == "L2A":
        rx = re.compile(rf".*/IMG_DATA/R{res}m/[^/]+_{band}_{res}m")
    else:
        rx = re.compile(rf".*/IMG_DATA/[^/]+_{band}")
    return next((f for f in image_files if rx.fullmatch(f)), None)


def _find_file(src: ProductSource, folder: str, name: str, referrer: str) -> str:
    """Relative path of ``folder/name``, matching the file name case-insensitively."""
    exact = f"{folder}/{name}" if folder else name
    if src.exists(exact):
        return exact
    prefix = f"{folder}/" if folder else ""
    hits = src.glob(rf"{re.escape(prefix)}(?i:{re.escape(name)})")
    if len(hits) == 1:
        return hits[0]
    where = f"{folder}/" if folder else "the product root"
    raise MetadataError(
        f"{src.path}: {name} not found in {where}"
        + (f" (several candidates: {hits})" if hits else "")
        + (f"; {referrer} refers to it" if referrer else "")
        + "; the product is incomplete: download it again"
    )


def open_product(path: str | Path) -> Product:
    """Resolve a SAFE folder or zip into a :class:`Product`.

    Args:
        path: ``<name>.SAFE`` folder or ``<name>.zip``.

    Returns:
        The product record, with band paths usable by rasterio.

    Raises:
        ProductNotFoundError: the path does not exist.
        CorruptProductError: the zip cannot be read.
        UnsafeArchiveError: the zip has members outside the product.
        MetadataError: a metadata file is missing, malformed or hostile.
        UnsupportedProductError: not an L1C or L2A product.
        MissingBandError: a band listed or required is absent.
    """
    path = Path(path)
    src = ProductSource(path)
    try:
        return _open(src)
    finally:
        src.close()


def read_cloud_cover(path: str | Path) -> float | None:
    """A product's own cloud cover in percent (``Cloud_Coverage_Assessment``), if it states one.

    Raises:
        ProductNotFoundError, CorruptProductError, MetadataError: as :func:`open_product`.
    """
    src = ProductSource(Path(path))
    try:
        name = ProductName.parse(src.safe_name)
        mtd_rel = _product_metadata(src, name.level)
        found = find_all(parse_xml(src, mtd_rel), "Cloud_Coverage_Assessment")
        text = (found[0].text or "").strip() if found else ""
        try:
            return float(text) if text else None
        except ValueError:
            return None
    finally:
        src.close()


def _open(src: ProductSource) -> Product:
    name = ProductName.parse(src.safe_name)
    mtd_rel = _product_metadata(src, name.level)
    mtd = parse_xml(src, mtd_rel)
    ptype = _text(mtd, "PRODUCT_TYPE", src, mtd_rel)
    if ptype != PRODUCT_TYPES[name.level]:
        raise UnsupportedProductError(
            f"{src.path}: PRODUCT_TYPE {ptype!r} in {mtd_rel}; expected "
            f"{PRODUCT_TYPES[name.level]} for an {name.level} product (only S2MSI1C and S2MSI2A "
            "are supported)"
        )
    baseline = _text(mtd, "PROCESSING_BASELINE", src, mtd_rel)
    if not re.fullmatch(r"\d{2}\.\d{2}", baseline):
        raise MetadataError(f"{src.path}: {mtd_rel}: PROCESSING_BASELINE {baseline!r} malformed")
    q_tag = "BOA_QUANTIFICATION_VALUE" if name.level == "L2A" else "QUANTIFICATION_VALUE"
    quant = _int(_text(mtd, q_tag, src, mtd_rel), q_tag, src, mtd_rel)
    offsets = _offsets(src, mtd, mtd_rel, name.level, baseline)
    granule, image_files, image_format = _granule(src, mtd, mtd_rel)
    tl_rel = _find_file(src, granule, "MTD_TL.xml", mtd_rel)
    tl = parse_xml(src, tl_rel)
    tile = _parse_tile(src, tl, tl_rel)
    _check_says_who(src, name, mtd, mtd_rel, tl, tl_rel)
    band_paths = _band_paths(src, mtd_rel, name.level, image_files, IMAGE_FORMATS[image_format])
    masks: dict[str, str] = {}
    for key, fname in (("MSK_CLASSI", "MSK_CLASSI_B00.jp2"), ("MSK_CLOUDS", "MSK_CLOUDS_B00.gml")):
        rel = f"{granule}/QI_DATA/{fname}"
        if src.exists(rel):
            masks[key] = src.gdal_path(rel)
    return Product(
        path=src.path,
        name=name,
        level=name.level,
        processing_baseline=baseline,
        quantification_value=quant,
        offsets=offsets,
        tile=tile,
        band_paths=band_paths,
        mask_paths=masks,
        image_format=image_format,
    )


def _first_text(root: Element, name: str) -> str | None:
    found = find_all(root, name)
    return (found[0].text or "").strip() if found else None


def _check_says_who(
    src: ProductSource, name: ProductName, mtd: Element, mtd_rel: str, tl: Element, tl_rel: str
) -> None:
    """Refuse a product whose metadata contradicts its name.

    Mission, level, sensing time, relative orbit and tile are compared: a product that
    contradicts its name would have its patches named after one place and cut from another.
    What the metadata leaves out is not compared (every real product's metadata has them all).

    Raises:
        MetadataError: names the field, the name's value and the metadata's.
    """
    said: list[tuple[str, str, str | None, str]] = []
    craft = _first_text(mtd, "SPACECRAFT_NAME")  # Sentinel-2A
    said.append(("mission", name.mission, craft and "S2" + craft[-1:], mtd_rel))
    level = _first_text(mtd, "PROCESSING_LEVEL")  # Level-2A
    said.append(("level", name.level, level and "L" + level.removeprefix("Level-"), mtd_rel))
    start = _first_text(mtd, "DATATAKE_SENSING_START") or _first_text(mtd, "PRODUCT_START_TIME")
    sensing = name.sensing_time.strftime("%Y-%m-%dT%H:%M:%S")
    said.append(("sensing time", sensing, start and start[:19], mtd_rel))
    orbit = _first_text(mtd, "SENSING_ORBIT_NUMBER")
    orbit = str(int(orbit)) if orbit and orbit.isdigit() else orbit
    said.append(("relative orbit", str(name.relative_orbit), orbit, mtd_rel))
    tile_id = _first_text(tl, "TILE_ID")
    tile = re.search(r"_T(\d{2}[A-Z]{3})_", tile_id or "")
    said.append(("tile", name.tile_id, tile and "T" + tile[1], tl_rel))
    for what, by_name, by_metadata, rel in said:
        if by_metadata is not None and by_metadata != by_name:
            raise MetadataError(
                f"{src.path}: the name says {what} {by_name}, {rel} says {by_metadata}; a "
                "renamed or mixed-up product (download it again under its own name)"
            )


def _product_metadata(src: ProductSource, level: str) -> str:
    """The relative path of ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` (its name in any case)."""
    try:
        return _find_file(src, "", f"MTD_MSI{level}.xml", "")
    except MetadataError:
        others = src.glob(r"(?i:MTD_\w+\.xml)")
        raise MetadataError(
            f"{src.path}: MTD_MSI{level}.xml not found at the product root"
            + (f" (found {others})" if others else "")
        ) from None


def _offsets(
    src: ProductSource, mtd: Element, mtd_rel: str, level: str, baseline: str
) -> dict[str, int]:
    """The additive offset of every band (0 where none is listed; required from 04.00 on)."""
    return _offsets_of(mtd, f"{src.path}: {mtd_rel}", level, baseline)


def offsets_from_mtd(data: bytes, where: str, level: str, baseline: str) -> dict[str, int]:
    """The offsets an ``MTD_MSIL*.xml`` lists (its bytes; ``where`` names it in errors).

    Raises:
        MetadataError: hostile or malformed XML, or no offsets where the baseline needs them.
    """
    return _offsets_of(parse_xml_bytes(data, where), where, level, baseline)


def _offsets_of(mtd: Element, where: str, level: str, baseline: str) -> dict[str, int]:
    off_tag = "BOA_ADD_OFFSET" if level == "L2A" else "RADIO_ADD_OFFSET"
    by_index: dict[int, int] = {}
    for e in find_all(mtd, off_tag):
        try:
            by_index[int(e.get("band_id", "-1"))] = int(float((e.text or "").strip()))
        except ValueError as exc:
            raise MetadataError(f"{where}: {off_tag} {e.text!r} is not a number") from exc
    major_minor = tuple(int(v) for v in baseline.split("."))
    if major_minor >= OFFSET_BASELINE and not by_index:
        raise MetadataError(f"{where}: baseline {baseline} products must list {off_tag} per band")
    return {band: by_index.get(idx, 0) for band, idx in BAND_INDEX.items()}


def _granule(src: ProductSource, mtd: Element, mtd_rel: str) -> tuple[str, list[str], str]:
    """The product's one granule folder, its IMAGE_FILEs (no extension) and image format."""
    granule_els = [g for g in find_all(mtd, "Granule") if g.get("granuleIdentifier")]
    image_files = [
        _strip_image_ext((e.text or "").strip())
        for g in granule_els
        for e in find_all(g, "IMAGE_FILE")
    ]
    granules = sorted({f.split("/")[1] for f in image_files if f.startswith("GRANULE/")})
    if len(granules) != 1:
        raise MetadataError(
            f"{src.path}: {mtd_rel} must list the IMAGE_FILEs of exactly one granule, "
            f"found {granules}"
        )
    image_format = granule_els[0].get("imageFormat", "JPEG2000")
    if image_format not in IMAGE_FORMATS:
        raise UnsupportedProductError(
            f"{src.path}: {mtd_rel}: Granule imageFormat {image_format!r} is not supported "
            f"(known: {', '.join(IMAGE_FORMATS)})"
        )
    return f"GRANULE/{granules[0]}", image_files, image_format


def _band_paths(
    src: ProductSource, mtd_rel: str, level: str, image_files: list[str], ext: str
) -> dict[str, str]:
    """The GDAL path of every band (and of SCL for L2A) at its native resolution."""
    band_paths: dict[str, str] = {}
    native = {b.name: b.resolution_m for b in specs.bands().bands}
    wanted = dict(native, SCL=SCL_RESOLUTION_M) if level == "L2A" else native
    for band, res in wanted.items():
        hit = _native_image_file(image_files, band, res, level)
        if hit is None:
            listed = sorted(f.rsplit("/", 1)[-1] for f in image_files if f"_{band}" in f)
            raise MissingBandError(
                f"{src.path}: {mtd_rel} lists no image file for band {band} at its native "
                f"{res} m resolution"
                + (f" (it lists {', '.join(listed)})" if listed else "")
                + "; the product is incomplete"
            )
        rel = hit + ext
        if not src.exists(rel):
            raise MissingBandError(
                f"{src.path}: band {band} file {rel} is listed in {mtd_rel} but missing; the "
                "product is incomplete: download it again"
            )
        band_paths[band] = src.gdal_path(rel)
    return band_paths


@contextmanager
def _open_raster(product: Product, key: str, path: str) -> Iterator[Any]:
    try:
        with zarr_io.open_band(path) if zarr_io.is_zarr_path(path) else rasterio.open(path) as ds:
            yield ds
    except (RasterioIOError, zarr_io.ZarrReadError) as exc:
        raise CorruptProductError(f"{product.path}: cannot read {key} ({path}): {exc}") from exc


#: A part of the tile in 10 m pixels: ``(row_start, row_stop, col_start, col_stop)``, on patch
#: borders (multiples of 120 px), so it is whole pixels at 20 m and 60 m too.
Window10m = tuple[int, int, int, int]


def read_raster(
    product: Product, key: str, path: str, resolution_m: int, window: Window10m | None = None
) -> np.ndarray:
    """Read band 1 of a product raster, checking its size against the tile.

    Args:
        product: The product the raster belongs to (for error messages and geometry).
        key: What the raster is (band name, ``SCL``, mask name), for error messages.
        path: GDAL path of the raster (or a Zarr array's, :mod:`.zarr_io`).
        resolution_m: The raster's pixel size; its side must be the tile side at this size.
        window: Read only this part (10 m pixels); the rest of the array is 0 (no data). GDAL
            then reads only the blocks (COG tiles, JP2 tiles) the part covers.

    Returns:
        The raster's first band as a 2-D array (all bands for multi-band masks, 3-D), the whole
        tile's size.
    """
    n = product.tile.size_px(resolution_m)
    with _open_raster(product, key, path) as ds:
        if (ds.height, ds.width) != (n, n):
            raise BandShapeError(
                f"{product.path}: {key} is {ds.width} x {ds.height} px, but MTD_TL.xml makes the "
                f"tile {n} x {n} px at {resolution_m} m"
            )
        try:
            if window is None:
                data = ds.read() if ds.count > 1 else ds.read(1)
            else:
                f = resolution_m // 10
                r0, r1, c0, c1 = (v // f for v in window)
                part = Window(c0, r0, c1 - c0, r1 - r0)
                got = ds.read(window=part) if ds.count > 1 else ds.read(1, window=part)
                data = np.zeros(got.shape[:-2] + (n, n), got.dtype)
                data[..., r0:r1, c0:c1] = got
        except (RasterioIOError, zarr_io.ZarrReadError) as exc:
            raise CorruptProductError(
                f"{product.path}: {key} ({path}) cannot be decoded: {exc}"
            ) from exc
    return np.asarray(data)


HARMONIZE_ROWS = 256  # rows per step: temporaries of a few MB, not of a whole band


def harmonize(dn: np.ndarray, offset: int, in_place: bool = False) -> np.ndarray:
    """Apply an additive radiometric offset, keeping 0 as no-data and valid pixels >= 1.

    Args:
        dn: uint16 digital numbers as stored in the product.
        offset: The band's ``BOA_ADD_OFFSET`` / ``RADIO_ADD_OFFSET`` (0 before baseline 04.00).
        in_place: Overwrite ``dn`` (a freshly decoded band nobody else holds) instead of
            returning a new array. A new 10 m band is a few hundred MB whose pages the kernel
            zeroes first; done in place, in steps of :data:`HARMONIZE_ROWS` rows, nothing of
            that size is allocated.

    Returns:
        uint16 DNs in the pre-04.00 convention (the input itself when ``offset`` is 0).
    """
    if offset == 0:
        return dn
    if offset < 0:  # the usual case (-1000): stay in uint16, no temporary int32 copy
        writable = in_place and dn.flags.c_contiguous and dn.flags.writeable
        out = dn if writable else dn.copy()
        floor, shift = np.uint16(1 - offset), np.uint16(-offset)
        rows = out.reshape(-1, out.shape[-1]) if out.ndim else out.reshape(1, 1)
        for r in range(0, rows.shape[0], HARMONIZE_ROWS):
            step = rows[r : r + HARMONIZE_ROWS]
            zero = step == 0
            np.maximum(step, floor, out=step)
            step -= shift
            step[zero] = 0
        return out
    out = dn.astype(np.int32)
    out += offset
    np.clip(out, 1, np.iinfo(np.uint16).max, out=out)
    out[dn == 0] = 0
    return out.astype(np.uint16)


def read_band(
    product: Product, band: str, resolution_m: int, window: Window10m | None = None
) -> np.ndarray:
    """Read one spectral band (or a ``window`` of it), in the pre-04.00 DN convention."""
    if band not in product.band_paths:
        raise MissingBandError(f"{product.path}: band {band} is not in the product")
    dn = read_raster(product, band, product.band_paths[band], resolution_m, window)
    if dn.dtype != np.uint16:
        raise BandShapeError(f"{product.path}: band {band} is {dn.dtype}, expected uint16")
    return harmonize(dn, product.offsets.get(band, 0), in_place=True)


def product_info(product: Product) -> dict[str, Any]:
    """Plain-data summary of a product for metadata and reports."""
    return {
        "product": product.name.name,
        "level": product.level,
        "tile_id": product.name.tile_id,
        "sensing_time": product.name.sensing_time.isoformat(),
        "processing_baseline": product.processing_baseline,
        "quantification_value": product.quantification_value,
        "radiometric_offset": {k: v for k, v in product.offsets.items() if v},
        "image_format": product.image_format,
        "epsg": product.tile.epsg,
        "ulx_m": product.tile.ulx_m,
        "uly_m": product.tile.uly_m,
        "size_m": product.tile.size_m,
    } | ({"offset_rule": product.offset_rule} if product.offset_rule else {})


def read_scl(product: Product, window: Window10m | None = None) -> np.ndarray:
    """The L2A Scene Classification map (20 m, uint8; outside a ``window``: 0)."""
    if "SCL" not in product.band_paths:
        raise MissingBandError(f"{product.path}: no SCL layer; is this an L2A product?")
    return read_raster(product, "SCL", product.band_paths["SCL"], 20, window)


def read_classi(product: Product) -> np.ndarray | None:
    """L1C ``MSK_CLASSI_B00.jp2`` (60 m, bands: opaque cloud, cirrus, snow), or None if absent."""
    path = product.mask_paths.get("MSK_CLASSI")
    if path is None:
        return None
    data = read_raster(product, "MSK_CLASSI_B00", path, 60)
    if data.ndim != 3 or data.shape[0] < 3:
        raise BandShapeError(
            f"{product.path}: MSK_CLASSI_B00 must have 3 bands (cloud, cirrus, snow)"
        )
    return data


def read_cloud_gml(
    product: Product,
) -> list[tuple[list[tuple[float, float]], list[list[tuple[float, float]]]]] | None:
    """Polygons of an old-baseline L1C ``MSK_CLOUDS_B00.gml`` (OPAQUE and CIRRUS), or None.

    Returns:
        ``[(exterior, [interiors...]), ...]`` with coordinates in the tile CRS.
    """
    path = product.mask_paths.get("MSK_CLOUDS")
    if path is None:
        return None
    src = ProductSource(product.path)
    try:
        rel = src.relative(path)
        root = parse_xml(src, rel)
    finally:
        src.close()
    polygons = []
    for feat in find_all(root, "MaskFeature"):
        kind = next((e.text or "" for e in find_all(feat, "maskType")), "")
        if kind.strip() not in ("OPAQUE", "CIRRUS"):
            continue
        for poly in find_all(feat, "Polygon"):
            rings = []
            for ring_tag in ("exterior", "interior"):
                for ring in find_all(poly, ring_tag):
                    for pos in find_all(ring, "posList"):
                        try:
                            vals = [float(v) for v in (pos.text or "").split()]
                        except ValueError as exc:
                            raise MetadataError(
                                f"{product.path}: {rel}: bad posList: {exc}"
                            ) from exc
                        if len(vals) % 2 or len(vals) < 8:
                            raise MetadataError(
                                f"{product.path}: {rel}: posList of {len(vals)} values"
                            )
                        rings.append((ring_tag, list(zip(vals[::2], vals[1::2], strict=True))))
            ext = [r for t, r in rings if t == "exterior"]
            if ext:
                polygons.append((ext[0], [r for t, r in rings if t == "interior"]))
    return polygons
