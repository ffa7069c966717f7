"""Commands on products: ``synth`` makes them, ``patch`` and ``process`` cut them (no Dask)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import click

from ben_builder.cli.common import force_opt, friendly

products_arg = click.argument("products", nargs=-1, required=True, type=click.Path(path_type=Path))
out_opt = click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="Archive root folder."
)
layout_opt = click.option(
    "--layout",
    type=click.Choice(["v2", "v1", "both"]),
    default="v2",
    show_default=True,
    help="BigEarthNet v2 layout, v1 layout or both.",
)
fail_fast_opt = click.option("--fail-fast", is_flag=True, help="Stop at the first failing product.")
verify_opt = click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check each product against its manifest.safe checksums and zip CRCs before cutting.",
)
overlap_opt = click.option(
    "--overlap",
    type=click.Choice(["once", "keep"]),
    default="once",
    show_default=True,
    help="Where the products' tiles overlap: keep each place once (in the tile whose own 100 km "
    "square holds it), or keep every tile's patches.",
)
duplicates_opt = click.option(
    "--duplicates",
    type=click.Choice(["latest", "fail"]),
    default="latest",
    show_default=True,
    help="Several products of one acquisition: keep the latest generation time, or fail.",
)


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder for products/, clc/ and ground_truth/.",
)
@click.option(
    "--size-px",
    type=int,
    default=2460,
    show_default=True,
    help="Tile side in 10 m pixels (10980 = a real full tile; multiple of 6).",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--tile",
    "tiles",
    multiple=True,
    help="Any Sentinel-2 tile (T30TVK); repeatable. Default: the demo set. Tiles outside the "
    "demo set, or --sensing-time, make one product per tile from one datatake.",
)
@click.option(
    "--level",
    type=click.Choice(["L1C", "L2A"]),
    default="L2A",
    show_default=True,
    help="Level of a datatake's products.",
)
@click.option(
    "--sensing-time",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S"]),
    default=None,
    help="Sensing time of the datatake, e.g. 2021-07-14T10:56:21 (all tiles share it).",
)
@click.option(
    "--s1", is_flag=True, help="Also write a BigEarthNet-S1 v1.0 folder of their S1 patches."
)
@friendly
def synth(
    out_dir: Path,
    size_px: int,
    seed: int,
    tiles: tuple[str, ...],
    level: str,
    sensing_time: datetime | None,
    s1: bool,
) -> None:
    """Write synthetic products (SAFE, JP2), a CLC GeoPackage covering them and the ground truth."""
    from ben_builder.sources.synthetic.products import recipes_for
    from ben_builder.sources.synthetic.writer import check_size_px, write_dataset
    from ben_builder.specs import check_tile_id

    try:
        check_size_px(size_px)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--size-px") from exc
    for tile in tiles:
        try:
            check_tile_id(tile)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--tile") from exc
    recipes = recipes_for(tiles, sensing_time, level)
    written = write_dataset(recipes, out_dir, size_px=size_px, seed=seed, s1=s1)
    n = len(written.products)
    click.echo(f"{n} product{'s' if n != 1 else ''}, CLC {written.clc} under {out_dir}")


def _run_products(
    products: tuple[Path, ...],
    out: Path,
    clc: Path | None,
    layout: str,
    fail_fast: bool,
    verify: bool = True,
    duplicates: str = "latest",
    force: bool = False,
    overlap: str = "once",
) -> None:
    """The serial chain over ``products``, and its outcome printed (exit 1 on a failure)."""
    from ben_builder import specs
    from ben_builder.chain.product import Options
    from ben_builder.chain.serial import run_serial
    from ben_builder.patches.clc import check_clc

    if clc is not None:  # before any product is opened: a missing or unusable file is one line
        check_clc(clc, specs.clc())

    options = Options(clc_path=clc, layout=layout, verify=verify, force=force)  # type: ignore[arg-type]
    result = run_serial(products, out, options, fail_fast, duplicates, overlap=overlap)
    for d in result.skipped:
        click.echo(f"skipped {d.path.name}: {d.reason}", err=True)
    counts = result.counts
    click.echo(f"metadata: {counts['metadata']} patches, flagged: {counts['flagged']} -> {out}")
    for w in result.warnings:
        click.echo(f"WARNING {w}", err=True)
    if result.failures:
        for path, msg in result.failures:
            click.echo(f"FAILED {path.name}: {msg}", err=True)
        raise SystemExit(1)
    if counts["metadata"] + counts["flagged"] == 0:
        click.echo(f"FAILED: no patch was produced in {out}", err=True)
        raise SystemExit(1)


@click.command()
@products_arg
@out_opt
@click.option(
    "--clc",
    type=click.Path(path_type=Path),
    default=None,
    help="CLC 2018 GeoPackage: also label and screen by labels (else unlabelled).",
)
@layout_opt
@fail_fast_opt
@verify_opt
@duplicates_opt
@overlap_opt
@force_opt
@friendly
def patch(
    products: tuple[Path, ...],
    out: Path,
    clc: Path | None,
    layout: str,
    fail_fast: bool,
    verify: bool,
    duplicates: str,
    overlap: str,
    force: bool,
) -> None:
    """Cut PRODUCTS (SAFE folders or zips, STAC items, .zarr stores) into 1.2 km patches."""
    _run_products(products, out, clc, layout, fail_fast, verify, duplicates, force, overlap)


@click.command()
@products_arg
@out_opt
@click.option("--clc", type=click.Path(path_type=Path), required=True, help="CLC 2018 GeoPackage.")
@layout_opt
@fail_fast_opt
@verify_opt
@duplicates_opt
@overlap_opt
@force_opt
@friendly
def process(
    products: tuple[Path, ...],
    out: Path,
    clc: Path,
    layout: str,
    fail_fast: bool,
    verify: bool,
    duplicates: str,
    overlap: str,
    force: bool,
) -> None:
    """Cut, label from CLC 2018 and screen PRODUCTS, writing patches and metadata under --out.

    Prints a per-tile summary: candidates, dropped for no-data, dropped for unlabelled, flagged
    cloud/shadow, flagged snow, kept.
    """
    _run_products(products, out, clc, layout, fail_fast, verify, duplicates, force, overlap)


COMMANDS = [synth, patch, process]
