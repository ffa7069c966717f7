"""STAC items of generated products, as Planetary Computer publishes them.

Planetary Computer's ``sentinel-2-l2a`` items point at GeoTIFF bands inside the SAFE structure
and link the product's ``MTD_MSIL2A.xml`` (``tests/data/real-stac-items``). The generator writes
such an item for a product it wrote with GeoTIFF bands: the same asset keys, ``s2:*`` and
``proj:*`` properties and roles as the real item, hrefs to the product's own files. A build
from the items then reads the same pixels as a build from the SAFE products.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import shapely
from pyproj import Transformer

from ben_builder.files import write_bytes
from ben_builder.patches.grid import TileGeometry
from ben_builder.product.safe import open_product
from ben_builder.product.stac import ITEM_BANDS

STAC_VERSION = "1.0.0"
EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
    "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
]


def write_item(
    product: Path, out_dir: Path, base_url: str | None = None, style: str = "planetary"
) -> Path:
    """Write ``<out_dir>/<product name>.json``, the STAC item of a GeoTIFF SAFE folder.

    Asset hrefs are the files' absolute paths, or with ``base_url`` their URLs
    (``<base_url>/<product folder>/<path in the product>``: a test's HTTP server, or
    ``s3://eodata/...`` as the CDSE catalogue links its S3 store).

    ``style``: ``planetary`` (Planetary Computer's asset keys ``B02``, ``s2:product_uri``,
    ``product-metadata``) or ``cdse`` (the CDSE catalogue's: the item id is the product name,
    asset keys ``B02_10m`` ... ``SCL_20m``, ``product_metadata``, ``processing:version``).

    Raises:
        ValueError: the product's bands are not GeoTIFFs (catalogues serve GeoTIFFs).
    """
    p = open_product(product)
    if p.image_format != "GeoTIFF" or not p.path.is_dir():
        raise ValueError(f"{product}: write items of GeoTIFF SAFE folders (catalogues serve COGs)")
    t = p.tile

    def href(file: str | Path) -> str:
        file = Path(file).resolve()
        if base_url is None:
            return str(file)
        return f"{base_url}/{p.path.name}/{file.relative_to(p.path.resolve()).as_posix()}"

    assets: dict[str, Any] = {}
    for band in ITEM_BANDS:
        res = 20 if band == "SCL" else _resolution(p.band_paths[band])
        side_px = round(t.size_m / res)
        assets[band if style == "planetary" else f"{band}_{res}m"] = {
            "href": href(p.band_paths[band]),
            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
            "gsd": res,
            "proj:shape": [side_px, side_px],
            "proj:transform": [float(res), 0.0, t.ulx_m, 0.0, -float(res), t.uly_m],
            "roles": ["data"],
        }
    mtd = next(p.path.glob("MTD_MSIL2A.xml"))
    assets["product-metadata" if style == "planetary" else "product_metadata"] = {
        "href": href(mtd),
        "type": "application/xml",
        "roles": ["metadata"],
    }
    n = p.name
    footprint = tile_footprint(t)
    item: dict[str, Any] = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": EXTENSIONS,
        "id": f"{n.mission}_MSI{n.level}_{n.sensing_time:%Y%m%dT%H%M%S}_R{n.relative_orbit:03d}_"
        f"{n.tile_id}_{n.name.rsplit('_', 1)[1]}",
        "collection": "sentinel-2-l2a",
        "geometry": shapely.geometry.mapping(footprint),
        "bbox": list(footprint.bounds),
        "properties": {
            "datetime": f"{n.sensing_time:%Y-%m-%dT%H:%M:%S}.024000Z",
            "platform": f"Sentinel-2{n.mission[-1]}",
            "constellation": "Sentinel 2",
            "instruments": ["msi"],
            "proj:epsg": t.epsg,
            "s2:mgrs_tile": n.tile_id[1:],
            "s2:product_type": "S2MSI2A",
            "s2:product_uri": f"{n.name}.SAFE",
            "s2:processing_baseline": p.processing_baseline,
            "sat:relative_orbit": n.relative_orbit,
        },
        "assets": assets,
        "links": [],
    }
    if style == "cdse":
        props = item["properties"]
        for key in ("s2:product_uri", "s2:processing_baseline", "s2:product_type"):
            del props[key]
        props |= {"processing:version": p.processing_baseline, "product:type": "S2MSI2A"}
        item["id"] = n.name
    elif style != "planetary":
        raise ValueError(f"style {style!r}: planetary or cdse")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{n.name}.json"
    write_bytes(path, (json.dumps(item, indent=2) + "\n").encode())
    return path


def tile_footprint(t: TileGeometry) -> shapely.Polygon:
    """A tile's square in longitude and latitude (an item's ``geometry``)."""
    to_lonlat = Transformer.from_crs(t.epsg, 4326, always_xy=True)
    corners = [(t.ulx_m, t.uly_m), (t.ulx_m + t.size_m, t.uly_m)]
    corners += [(t.ulx_m + t.size_m, t.uly_m - t.size_m), (t.ulx_m, t.uly_m - t.size_m)]
    return shapely.Polygon([to_lonlat.transform(x, y) for x, y in corners])


def _resolution(path: str) -> int:
    """A band file's resolution from its name (``..._B02_10m.tif``)."""
    return int(Path(path).stem.rsplit("_", 1)[1].removesuffix("m"))
