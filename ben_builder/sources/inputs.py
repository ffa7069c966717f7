"""Where a run's products come from: the synthetic generator, a local folder, or a hub."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import rasterio

from ben_builder.config import Inputs, ProductListFilter, SelectSettings
from ben_builder.errors import BenBuilderError, ProductNotFoundError
from ben_builder.product.names import ProductName, bare_name
from ben_builder.sources import Unavailable
from ben_builder.sources.local import filter_by_list
from ben_builder.sources.select import Candidate, in_area, select_clearest

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Discovered:
    """What a run's inputs provide.

    Attributes:
        products: The products to process.
        unavailable: Those asked for but not to be had.
        clc: The CLC file (None: unlabelled patches).
        s1_v1: A BigEarthNet-S1 v1.0 folder the source wrote (the synthetic one), if any.
        notes: What the selection picked and passed over, and why.
    """

    products: list[Path]
    unavailable: list[Unavailable]
    clc: Path | None
    s1_v1: Path | None = None
    notes: tuple[str, ...] = ()


def discover_products(
    inputs: Inputs,
    default_list: ProductListFilter | None = None,
    select: SelectSettings | None = None,
    aoi_wkt: str | None = None,
) -> Discovered:
    """The products to process, those asked for but unavailable, the CLC path (and S1 folder).

    Args:
        inputs: The run configuration's inputs.
        default_list: The product list of a local folder when ``inputs`` names none (a
            reproduction's published list).
        select: Keep only the clearest acquisitions per tile and period (a hub downloads only
            those).
        aoi_wkt: An area of interest (EPSG:4326 WKT): products of tiles that do not touch it
            are left out (a hub does not download them).
    """
    if inputs.source == "synthetic":
        return _synthetic(inputs)
    if inputs.source == "hub":
        from ben_builder.sources.hub.fetch import fetch_from_hub

        if inputs.hub is None:
            raise ValueError("source 'hub' needs a 'hub' section")  # the model checks it first
        fetched, failed, picks = fetch_from_hub(inputs.hub, select, aoi_wkt)
        return Discovered(fetched, failed, inputs.clc_path, notes=picks)
    folder: Path | None = inputs.products_dir
    if inputs.source == "stac":
        from ben_builder.sources.stac import search_items

        if inputs.stac is None:
            raise ValueError("source 'stac' needs a 'stac' section")  # the model checks it first
        folder = search_items(inputs.stac)
    if folder is None:
        raise ValueError("source 'local' needs 'products_dir'")  # the model checks it first
    found = find_products(folder)
    missing: list[Unavailable] = []
    product_list = inputs.product_list or default_list
    if product_list is not None:
        found, missing = filter_by_list(found, product_list, folder)
    notes: tuple[str, ...] = ()
    if aoi_wkt is not None:
        found, notes = in_area(found, lambda p: p.name, aoi_wkt)
    if select is not None:
        found, picked = _select_local(found, select)
        notes += picked
    return Discovered(found, missing, inputs.clc_path, notes=notes)


def _select_local(found: list[Path], select: SelectSettings) -> tuple[list[Path], tuple[str, ...]]:
    """The clearest of a folder's products by their own cloud cover (their metadata is read)."""
    from ben_builder.product.reader import read_cloud_cover

    candidates = []
    for p in found:
        try:
            cloud = read_cloud_cover(p)
        except BenBuilderError:
            cloud = None  # an unreadable product is reported when it is opened
        candidates.append(Candidate(bare_name(p.name), cloud, p))
    chosen = select_clearest(candidates, select.n, select.per, select.level)
    return sorted(c.item for c in chosen.picked), tuple(chosen.lines())


def find_products(folder: Path) -> list[Path]:
    """The products in ``folder`` and its subfolders (sorted downloads), not inside a product.

    Raises:
        ProductNotFoundError: ``folder`` does not exist or holds no product.
    """
    if not folder.is_dir():
        raise ProductNotFoundError(f"{folder}: products_dir does not exist")
    found: list[Path] = []
    pending = [folder]
    while pending:
        for p in sorted(pending.pop().iterdir()):
            if p.name.startswith("."):
                continue  # partial downloads, records
            if (
                p.name.endswith((".SAFE", ".zarr"))
                and p.is_dir()
                or (p.name.endswith(".zip") and p.is_file())
            ):
                found.append(p)  # SAFE folders and zips, EOPF Zarr stores
            elif p.name.endswith(".json") and _names_a_product(p.name) and p.is_file():
                found.append(p)  # a STAC item named after its product (ben_builder.stac)
            elif p.is_dir():
                pending.append(p)
    if not found:
        raise ProductNotFoundError(
            f"no products in {folder} (looked for <name>.SAFE folders, <name>.zip files, "
            "<name>.json STAC items and <name>.zarr EOPF products, in its subfolders too); is "
            "products_dir the folder the products were downloaded to?"
        )
    return sorted(found, key=lambda p: (p.name, p))


def _names_a_product(file_name: str) -> bool:
    """Whether a file is named after a whole product (an archive's records are not)."""
    try:
        ProductName.parse(file_name)
    except BenBuilderError:
        return False
    return True


def _synthetic(inputs: Inputs) -> Discovered:
    """The embedded default: the demo products (of the configured tiles) and their CLC."""
    from ben_builder.sources.synthetic.products import recipes_for
    from ben_builder.sources.synthetic.writer import write_dataset

    syn = inputs.synthetic
    if syn is None:
        raise ValueError("source 'synthetic' needs a 'synthetic' section")  # checked by the model
    recipes = recipes_for(syn.tiles, syn.sensing_time, syn.level)
    with rasterio.Env():
        written = write_dataset(recipes, syn.dir, size_px=syn.size_px, seed=syn.seed, s1=syn.s1)
    return Discovered(written.products, [], inputs.clc_path or written.clc, written.s1)
