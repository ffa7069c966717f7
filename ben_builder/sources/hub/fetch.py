"""A run's hub input: search (or read the manifest), then download what was found."""

from __future__ import annotations

import logging
from pathlib import Path

from ben_builder.config import HubInputs, SelectSettings
from ben_builder.sources import Unavailable
from ben_builder.sources.local import read_product_list
from ben_builder.sources.select import Candidate, in_area, select_clearest

log = logging.getLogger(__name__)


def fetch_from_hub(
    hub: HubInputs, select: SelectSettings | None = None, aoi_wkt: str | None = None
) -> tuple[list[Path], list[Unavailable], tuple[str, ...]]:
    """Search (or read the manifest), pick, and download; failed downloads come back as data.

    With ``select``, only the clearest acquisitions per tile and period are downloaded (by the
    hub's cloud cover); the others are listed in the notes returned, with the reason.
    """
    from ben_builder.sources.hub import HubSettings, make_backend
    from ben_builder.sources.hub.manifest import read_manifest, write_manifest
    from ben_builder.sources.hub.query import Query, area_from_bbox, area_from_geojson
    from ben_builder.sources.hub.transfer import TransferPolicy, download_all

    settings = HubSettings(backend=hub.backend, api_url=hub.api_url, endpoints=hub.endpoints)
    backend = make_backend(settings)
    names: tuple[str, ...] = ()
    if hub.manifest is not None and hub.manifest.exists():
        items = read_manifest(hub.manifest)
    else:
        q = hub.query
        assert q is not None  # validated by the model
        area = area_from_geojson(q.geojson) if q.geojson else None
        if q.bbox:
            area = area_from_bbox(q.bbox)
        if q.names:
            names = tuple(read_product_list(q.names.csv, q.names.column))
        query = Query(
            level=q.level,
            start=q.start,
            end=q.end,
            area_wkt=area,
            tiles=q.tiles,
            max_cloud=q.max_cloud,
            names=names,
        )
        items = backend.search(query)
        write_manifest(hub.manifest or hub.download_dir / "manifest.jsonl", items)
    policy = TransferPolicy(
        max_concurrent=hub.max_concurrent,
        offline_rounds=hub.offline_rounds,
        offline_wait_s=hub.offline_wait_s,
    )
    notes: tuple[str, ...] = ()
    if aoi_wkt is not None:  # products of tiles that do not touch it are not downloaded
        items, notes = in_area(items, lambda i: i.name, aoi_wkt)
    if select is not None:
        chosen = select_clearest(
            [Candidate(i.name, i.cloud_cover, i) for i in items],
            select.n,
            select.per,
            select.level,
        )
        items, notes = [c.item for c in chosen.picked], notes + tuple(chosen.lines())
    results = download_all(items, hub.download_dir, backend, policy)
    found = sorted(Path(r.path) for r in results if r.ok and r.path)
    failed = [
        Unavailable(product=r.name, stage="download", error=r.error or "download failed")
        for r in results
        if not r.ok
    ]
    if hub.query is not None and hub.query.names is not None:  # named products the hub lacks
        have = {i.name.removesuffix(".SAFE") for i in items}
        failed += [
            Unavailable(
                product=n,
                stage="search",
                error=f"listed in {hub.query.names.csv.name} but not found at the hub",
            )
            for n in (w.removesuffix(".SAFE") for w in names)
            if n not in have
        ]
    return found, failed, notes
