"""Commands on a hub: ``search`` writes a manifest, ``download`` fetches and verifies it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click
from tqdm import tqdm

from ben_builder.cli.common import F, friendly
from ben_builder.config import CdseEndpoints
from ben_builder.sources.hub import HubSettings, make_backend

log = logging.getLogger(__name__)


def _hub_options(fn: F) -> F:
    opts = [
        click.option(
            "--backend",
            type=click.Choice(["cdse", "dhus"]),
            default="cdse",
            show_default=True,
            help="Copernicus Data Space, or a DHuS hub.",
        ),
        click.option("--api-url", help="DHuS base URL, e.g. https://<mirror>/dhus/."),
        click.option("--catalogue-url", default=CdseEndpoints.catalogue, show_default=True),
        click.option("--download-url", default=CdseEndpoints.download, show_default=True),
        click.option("--token-url", default=CdseEndpoints.token, show_default=True),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _settings(
    backend: str, api_url: str | None, catalogue_url: str, download_url: str, token_url: str
) -> HubSettings:
    return HubSettings(
        backend=backend,
        api_url=api_url,
        endpoints=CdseEndpoints(catalogue_url, download_url, token_url),
    )


@click.command()
@_hub_options
@click.option("--tile", "tiles", multiple=True, help="MGRS tile id (T33UUP); repeatable.")
@click.option("--bbox", nargs=4, type=float, help="West south east north, degrees.")
@click.option("--geojson", type=click.Path(exists=True, path_type=Path), help="Search area.")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]), help="First sensing day.")
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), help="Last sensing day.")
@click.option("--level", type=click.Choice(["L1C", "L2A"]), default="L2A", show_default=True)
@click.option("--max-cloud", type=float, help="Maximum cloud cover, percent.")
@click.option(
    "--names",
    type=click.Path(exists=True, path_type=Path),
    help="File with exact product names, one per line (other criteria ignored).",
)
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Manifest to write (JSON lines)."
)
@friendly
def search(
    backend: str,
    api_url: str | None,
    catalogue_url: str,
    download_url: str,
    token_url: str,
    tiles: tuple[str, ...],
    bbox: tuple[float, ...] | None,
    geojson: Path | None,
    start: Any,
    end: Any,
    level: str,
    max_cloud: float | None,
    names: Path | None,
    out: Path,
) -> None:
    """Search a hub and write a product manifest (id, name, size, checksums, footprint, online)."""
    from ben_builder.sources.hub.manifest import write_manifest
    from ben_builder.sources.hub.query import Query, area_from_bbox, area_from_geojson

    area = area_from_geojson(geojson) if geojson else None
    if bbox:
        area = area_from_bbox((bbox[0], bbox[1], bbox[2], bbox[3]))
    wanted = tuple(x.strip() for x in names.read_text().splitlines() if x.strip()) if names else ()
    query = Query(
        level=level,
        start=start.date() if start else None,
        end=end.date() if end else None,
        area_wkt=area,
        tiles=tiles,
        max_cloud=max_cloud,
        names=wanted,
    )
    hub = make_backend(
        _settings(backend, api_url, catalogue_url, download_url, token_url),
        need_credentials=backend != "cdse",
    )
    items = hub.search(query)
    write_manifest(out, items)
    size = sum(i.size or 0 for i in items) / 1e9
    offline = sum(not i.online for i in items)
    click.echo(f"{len(items)} products ({size:.1f} GB, {offline} offline) -> {out}")


@click.command()
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_hub_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Download folder.")
@click.option(
    "--max-concurrent",
    type=int,
    default=4,
    show_default=True,
    help="Simultaneous downloads (CDSE allows 4 per user).",
)
@click.option(
    "--offline-rounds",
    type=int,
    default=0,
    show_default=True,
    help="Come back this many times for products that were offline.",
)
@click.option(
    "--offline-wait",
    type=float,
    default=600,
    show_default=True,
    help="Seconds between those rounds.",
)
@friendly
def download(
    manifest: Path,
    backend: str,
    api_url: str | None,
    catalogue_url: str,
    download_url: str,
    token_url: str,
    out: Path,
    max_concurrent: int,
    offline_rounds: int,
    offline_wait: float,
) -> None:
    """Download the products of a MANIFEST, resuming and verifying each (MD5, BLAKE3)."""
    from ben_builder.sources.hub.manifest import read_manifest
    from ben_builder.sources.hub.transfer import TransferPolicy, download_all

    items = read_manifest(manifest)
    hub = make_backend(_settings(backend, api_url, catalogue_url, download_url, token_url))
    policy = TransferPolicy(
        max_concurrent=max_concurrent, offline_rounds=offline_rounds, offline_wait_s=offline_wait
    )
    total = sum(i.size or 0 for i in items)
    with tqdm(total=total, unit="B", unit_scale=True, desc="download", disable=None) as bar:
        results = download_all(items, out, hub, policy, on_bytes=bar.update)
    failed = [r for r in results if not r.ok]
    done = len(results) - len(failed)
    click.echo(f"{done} of {len(results)} products verified in {out}")
    for r in failed:
        click.echo(f"{'OFFLINE' if r.offline else 'FAILED'} {r.name}: {r.error}", err=True)
    if failed:
        raise SystemExit(1)


COMMANDS = [search, download]
