"""Commands on a finished archive: ``encode`` (rico-hdl's LMDB) and ``compare`` (with a release)."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from tqdm import tqdm

from ben_builder.cli.common import friendly

log = logging.getLogger(__name__)


@click.command()
@click.argument("archive_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Folder for BigEarthNet.lmdb and the metadata parquets beside it.",
)
@click.option(
    "--s1",
    "s1_root",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="BigEarthNet-S1 folder: also encode each patch's s1_name (VV, VH); default: the "
    "archive's own BigEarthNet-S1/ when it holds any.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Reading processes (default 1); the output does not depend on it.",
)
@friendly
def encode(archive_root: Path, out: Path, s1_root: Path | None, workers: int | None) -> None:
    """Encode a BigEarthNet-v2-layout archive (ours or the official one) in rico-hdl's layout.

    One LMDB: key <patch> -> safetensors of the native-resolution bands, <patch>_reference_map
    -> {"Data": CLC codes}, <s1_name> -> {"VV", "VH"} with --s1. Every patch of both metadata
    parquets is encoded (recommended and cloudy/snowy ones).
    """
    from ben_builder.encode import encode_archive

    with tqdm(unit="patch", desc="encode", disable=None) as bar:
        s = encode_archive(archive_root, out, s1_root, on_patch=bar.update, workers=workers)
    click.echo(f"{s.patches} patches {'already ' if s.skipped else ''}encoded in {s.db}")


@click.command()
@click.argument("archive_root", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--reference",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    required=True,
    help="The published release (BigEarthNet-v2 layout: metadata parquets, optional folders).",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Markdown report (default: ARCHIVE/report/compare.md).",
)
@click.option(
    "--every",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Compare the files of every n-th common patch (metadata always in full).",
)
@friendly
def compare(archive_root: Path, reference: Path, report_path: Path | None, every: int) -> None:
    """Compare an archive with a published release; exit 1 on any difference.

    Patches only on one side, the parquet schemas, agreement per metadata column (and which parquet
    each patch is in), pixel-equal band files and reference maps.
    """
    from ben_builder.archive.compare import compare_archives, report_markdown

    with tqdm(unit="patch", desc="compare files", disable=None) as bar:
        c = compare_archives(archive_root, reference, every=every, on_patch=bar.update)
    path = report_path or archive_root / "report" / "compare.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report_markdown(c))
    differing = [
        f"{k} ({a.differ:,} of {a.compared:,})"
        for k, a in {**c.columns, **c.files}.items()
        if a.differ
    ]
    click.echo(
        f"{'identical' if c.identical else 'DIFFERENT'}: {c.patches_built:,} vs "
        f"{c.patches_reference:,} patches, {len(c.only_built):,} only built, "
        f"{len(c.only_reference):,} only in the reference; report: {path}"
    )
    for line in differing + [f"schema: {k}: {v}" for k, v in c.schema.items()]:
        click.echo(f"  differs: {line}")
    if not c.identical:
        raise SystemExit(1)


COMMANDS = [encode, compare]
