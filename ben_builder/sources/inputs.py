"""Where a run's products come from: the synthetic generator, a local folder, or a hub."""

from __future__ import annotations

import logging
from pathlib import Path

import rasterio

from ben_builder.config import Inputs, ProductListFilter
from ben_builder.errors import ProductNotFoundError
from ben_builder.sources import Unavailable
from ben_builder.sources.local import filter_by_list

log = logging.getLogger(__name__)


def discover_products(
    inputs: Inputs, default_list: ProductListFilter | None = None
) -> tuple[list[Path], list[Unavailable], Path | None]:
    """The products to process, those asked for but unavailable, and the CLC path.

    Args:
        inputs: The run configuration's inputs.
        default_list: The product list of a local folder when ``inputs`` names none (a
            reproduction's published list).
    """
    if inputs.source == "synthetic":
        return _synthetic(inputs)
    if inputs.source == "hub":
        from ben_builder.sources.hub.fetch import fetch_from_hub

        if inputs.hub is None:
            raise ValueError("source 'hub' needs a 'hub' section")  # the model checks it first
        found, failed = fetch_from_hub(inputs.hub)
        return found, failed, inputs.clc_path
    folder = inputs.products_dir
    if folder is None:
        raise ValueError("source 'local' needs 'products_dir'")  # the model checks it first
    if not folder.is_dir():
        raise ProductNotFoundError(f"{folder}: products_dir does not exist")
    found = sorted(p for p in folder.iterdir() if p.name.endswith((".SAFE", ".zip")))
    missing: list[Unavailable] = []
    product_list = inputs.product_list or default_list
    if product_list is not None:
        found, missing = filter_by_list(found, product_list, folder)
    return found, missing, inputs.clc_path


def _synthetic(inputs: Inputs) -> tuple[list[Path], list[Unavailable], Path | None]:
    """The embedded default: the demo products (of the configured tiles) and their CLC."""
    from ben_builder.sources.synthetic.products import demo_recipes
    from ben_builder.sources.synthetic.writer import write_dataset

    syn = inputs.synthetic
    if syn is None:
        raise ValueError("source 'synthetic' needs a 'synthetic' section")  # checked by the model
    recipes = [r for r in demo_recipes() if not syn.tiles or r.tile_id in syn.tiles]
    with rasterio.Env():
        written = write_dataset(recipes, syn.dir, size_px=syn.size_px, seed=syn.seed)
    return written.products, [], inputs.clc_path or written.clc
