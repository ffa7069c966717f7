"""A STAC API as the products' source: search with pystac-client, keep the items found.

The items are written to ``items_dir`` as ``<product name>.json`` (a folder of products like
any other, see :func:`ben_builder.sources.inputs.find_products`); their bands stay where the
catalogue serves them and are read by GDAL from the assets (:mod:`ben_builder.product.stac`).
Items of other tiles than asked, or that name no product, are left out with a log line.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import shapely
import shapely.wkt

from ben_builder.config import StacInputs
from ben_builder.errors import BenBuilderError, HubError
from ben_builder.files import write_bytes
from ben_builder.product.names import ProductName
from ben_builder.product.stac import named_product
from ben_builder.sources.hub.query import area_from_bbox, area_from_geojson

log = logging.getLogger(__name__)


def search_items(stac: StacInputs) -> Path:
    """Search the catalogue, write the items found into ``stac.items_dir``; return that folder.

    Items kept from an earlier search that this one no longer finds are removed, so the
    folder is the answer of today's search.

    Raises:
        HubError: the catalogue cannot be reached or answers with an error.
    """
    import pystac_client
    from pystac_client.exceptions import APIError

    q = stac.query
    params: dict[str, Any] = {"collections": [stac.collection]}
    area = area_from_geojson(q.geojson) if q.geojson else None
    if area is not None:
        params["intersects"] = shapely.geometry.mapping(shapely.wkt.loads(area))
    elif q.bbox is not None:
        area_from_bbox(q.bbox)  # checks the box
        params["bbox"] = list(q.bbox)
    if q.start or q.end:
        params["datetime"] = f"{q.start or '..'}/{q.end or '..'}"
    if q.max_cloud is not None:
        params["query"] = {"eo:cloud_cover": {"lte": q.max_cloud}}
    try:
        client = pystac_client.Client.open(stac.url)
        found = [item.to_dict() for item in client.search(**params).items()]
    except (APIError, OSError, ValueError) as exc:
        raise HubError(f"{stac.url}: STAC search failed ({type(exc).__name__}: {exc})") from exc
    folder = stac.items_dir
    folder.mkdir(parents=True, exist_ok=True)
    kept: set[str] = set()
    for item in found:
        name = _product_name(item)
        if name is None or q.tiles and name.tile_id not in q.tiles:
            continue
        path = folder / f"{name.name}.json"
        write_bytes(path, (json.dumps(item, indent=2, sort_keys=True) + "\n").encode())
        kept.add(path.name)
    for old in folder.glob("S2*.json"):
        if old.name not in kept:
            old.unlink()
            log.info("%s: no longer found by the search; removed", old.name)
    log.info("%s: %d items of %s kept in %s", stac.url, len(kept), stac.collection, folder)
    return folder


def _product_name(item: dict[str, Any]) -> ProductName | None:
    value = named_product(item)
    if value is None:
        log.warning("STAC item %s skipped: it names no product", item.get("id"))
        return None
    try:
        return ProductName.parse(value)
    except BenBuilderError as exc:
        log.warning("STAC item %s skipped: %s", item.get("id"), exc)
        return None
