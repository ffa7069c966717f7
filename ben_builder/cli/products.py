"""Commands on products: ``synth`` makes them, ``patch`` and ``process`` cut them (no Dask)."""

from __future__ import annotations

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
    help="Only products of these tiles (default: all of the demo set).",
)
@friendly
def synth(out_dir: Path, size_px: int, seed: int, tiles: tuple[str, ...]) -> None:
    """Write synthetic products (SAFE, JP2), a CLC GeoPackage and the ground truth."""
    from ben_builder.sources.synthetic.products import demo_recipes
    from ben_builder.sources.synthetic.writer import check_size_px, write_dataset

    try:
        check_size_px(size_px)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--size-px") from exc
    recipes = [r for r in demo_recipes() if not tiles or r.tile_id in tiles]
    if not recipes:
        raise click.BadParameter(f"no demo products for tiles {tiles}")
    written = write_dataset(recipes, out_dir, size_px=size_px, seed=seed)
    click.echo(f"{len(written.products)} products, CLC {written.clc} under {out_dir}")


def _run_products(
    products: tuple[Path, ...],
    out: Path,
    clc: Path | None,
    layout: str,
    fail_fast: bool,
    verify: bool = True,
    duplicates: str = "latest",
    force: bool = False,
) -> None:
    """The serial chain over ``products``, and its outcome printed (exit 1 on a failure)."""
    from ben_builder.chain.product import Options
    from ben_builder.chain.serial import run_serial

    options = Options(clc_path=clc, layout=layout, verify=verify, force=force)  # type: ignore[arg-type]
    result = run_serial(products, out, options, fail_fast, duplicates)
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
    force: bool,
) -> None:
    """Cut PRODUCTS (.SAFE folders or .zip) into 1.2 km patches under --out."""
    _run_products(products, out, clc, layout, fail_fast, verify, duplicates, force)


@click.command()
@products_arg
@out_opt
@click.option("--clc", type=click.Path(path_type=Path), required=True, help="CLC 2018 GeoPackage.")
@layout_opt
@fail_fast_opt
@verify_opt
@duplicates_opt
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
    force: bool,
) -> None:
    """Cut, label from CLC 2018 and screen PRODUCTS, writing patches and metadata under --out.

    Prints a per-tile summary: candidates, dropped for no-data, dropped for unlabelled, flagged
    cloud/shadow, flagged snow, kept.
    """
    _run_products(products, out, clc, layout, fail_fast, verify, duplicates, force)


COMMANDS = [synth, patch, process]
