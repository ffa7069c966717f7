"""Any product the chain takes: a SAFE product, a STAC item or an EOPF Zarr product.

SAFE folders and zips; STAC items (``<name>.json``); EOPF Zarr stores (``<name>.zarr``, or a
STAC item whose ``product`` asset is one).
The chain opens products through here; :mod:`.safe`, :mod:`.stac` and :mod:`.eopf` make the
same :class:`~ben_builder.product.safe.Product` record of each.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ben_builder.errors import HubError
from ben_builder.product import eopf, safe, stac
from ben_builder.product.safe import Product
from ben_builder.product.verify import stat_fingerprint


def open_product(path: str | Path) -> Product:
    """The product record of a SAFE folder or zip, a STAC item file or an EOPF Zarr store.

    Raises:
        ProductNotFoundError, MetadataError, UnsupportedProductError, ...: as
            :func:`ben_builder.product.safe.open_product`,
            :func:`ben_builder.product.stac.open_item` and
            :func:`ben_builder.product.eopf.open_eopf`.
    """
    if eopf.is_eopf(path):
        return eopf.open_eopf(path)
    if stac.is_item(path):
        store = stac.zarr_product(path)
        return eopf.open_eopf(store, record=Path(path)) if store else stac.open_item(path)
    return safe.open_product(path)


def is_safe(path: str | Path) -> bool:
    """Whether the product is a SAFE folder or zip (with a ``manifest.safe`` to verify)."""
    return not (eopf.is_eopf(path) or stac.is_item(path))


def read_cloud_cover(path: str | Path) -> float | None:
    """The product's own cloud cover in percent, if it states one."""
    if eopf.is_eopf(path):
        return eopf.cloud_cover(path)
    return stac.item_cloud_cover(path) if stac.is_item(path) else safe.read_cloud_cover(path)


def product_identity(path: str | Path) -> str:
    """A cheap identity of a product's files (path, size, mtime; no content).

    A STAC item: the item's bytes (its asset hrefs and any checksums it publishes), the size and
    mtime of its local assets, and what the servers of its remote ones answer to a HEAD request
    (``ETag``, ``Content-Length``, ``Last-Modified``), so a file replaced under the same item is
    seen. An EOPF store: its files, as a SAFE folder's.

    Raises:
        HubError: a remote asset cannot be checked (whether it changed is then unknown).
    """
    if not stac.is_item(path):
        return stat_fingerprint(path)
    h = hashlib.sha256(Path(path).read_bytes())
    for local in stac.local_assets(path):
        h.update(stat_fingerprint(local).encode())
    for url in stac.remote_assets(path):
        h.update(_http_identity(path, url).encode())
    return h.hexdigest()


def _http_identity(path: str | Path, url: str) -> str:
    import requests

    try:
        resp = requests.head(url, allow_redirects=True, timeout=30)
    except requests.RequestException as exc:
        raise HubError(
            f"{path}: cannot check {url} ({exc}); whether the product changed since it was cut "
            "is unknown without it"
        ) from exc
    if resp.status_code == 404:
        return f"{url}\0absent\n"  # e.g. the Zarr v3 document of a v2 store
    if resp.status_code >= 400:
        raise HubError(f"{path}: {url} answers HTTP {resp.status_code} to HEAD")
    tags = (resp.headers.get(k, "") for k in ("ETag", "Content-Length", "Last-Modified"))
    return url + "\0" + "\0".join(tags) + "\n"
