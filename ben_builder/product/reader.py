"""Any product the chain takes: a SAFE folder or zip, or a STAC item (``<name>.json``).

The chain opens products through here; :mod:`.safe` and :mod:`.stac` make the same
:class:`~ben_builder.product.safe.Product` record of each.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ben_builder.product import safe, stac
from ben_builder.product.safe import Product
from ben_builder.product.verify import stat_fingerprint


def open_product(path: str | Path) -> Product:
    """The product record of a SAFE folder or zip, or of a STAC item file.

    Raises:
        ProductNotFoundError, MetadataError, UnsupportedProductError, ...: as
            :func:`ben_builder.product.safe.open_product` and
            :func:`ben_builder.product.stac.open_item`.
    """
    return stac.open_item(path) if stac.is_item(path) else safe.open_product(path)


def read_cloud_cover(path: str | Path) -> float | None:
    """The product's own cloud cover in percent, if it states one."""
    return stac.item_cloud_cover(path) if stac.is_item(path) else safe.read_cloud_cover(path)


def product_identity(path: str | Path) -> str:
    """A cheap identity of a product's files (path, size, mtime; no content).

    A STAC item: the item's bytes (its asset hrefs and any checksums or ETags it publishes)
    and the size and mtime of its local assets.
    """
    if not stac.is_item(path):
        return stat_fingerprint(path)
    h = hashlib.sha256(Path(path).read_bytes())
    for local in stac.local_assets(path):
        h.update(stat_fingerprint(local).encode())
    return h.hexdigest()
