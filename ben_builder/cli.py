"""The ``ben-builder`` command line: one subcommand per stage."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
import rasterio
from tqdm import tqdm

from ben_builder import __version__, archive
from ben_builder.errors import BenBuilderError
from ben_builder.hub import HubSettings, make_backend
from ben_builder.hub.cdse import CdseEndpoints

log = logging.getLogger("ben_builder")

F = TypeVar("F", bound=Callable[..., Any])


def gdal_env() -> rasterio.Env:
    """GDAL settings for every entry point (block cache bounded, no directory scans)."""
    return rasterio.Env(GDAL_CACHEMAX=256, GDAL_DISABLE_READDIR_ON_OPEN="EMPTY_DIR",
                        GDAL_NUM_THREADS=1)  # fmt: skip


def _friendly(fn: F) -> F:
    """Turn BenBuilderError into a one-line message and exit status 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with gdal_env():
                return fn(*args, **kwargs)
        except BenBuilderError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(__version__)
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More messages: -v this project's progress, -vv its debug output and the libraries' "
    "info, -vvv everything.",
)
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
def main(verbose: int, quiet: bool) -> None:
    """Build BigEarthNet-style archives from Sentinel-2 products and CLC 2018."""
    setup_logging(-1 if quiet else verbose, sys.stderr.isatty())


def setup_logging(verbose: int, terminal: bool) -> None:
    """Logging for the command line.

    The project's messages: errors only (-q), warnings (default on a terminal, where progress
    bars show the rest), progress (one line per finished product and the like: default without
    a terminal, so batch jobs see what happens, and -v), debug (-vv). The libraries' messages
    (Dask, GDAL bindings, urllib3): warnings, info at -vv, debug only at -vvv.
    """
    if verbose < 0:
        own = logging.ERROR
    elif verbose == 0:
        own = logging.WARNING if terminal else logging.INFO
    else:
        own = logging.INFO if verbose == 1 else logging.DEBUG
    libraries = {0: logging.WARNING, 1: logging.WARNING, 2: logging.INFO}.get(
        max(verbose, 0), logging.DEBUG
    )
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(libraries)
    handler.addFilter(
        lambda r: r.levelno >= (own if r.name.startswith("ben_builder") else libraries)
    )
    # the project's logger passes progress through to the run log (report/run.log) in any case
    logging.getLogger("ben_builder").setLevel(min(own, logging.INFO))
    # Dask's workers log on their own: quiet unless -vv
    if verbose < 2:
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


@main.command()
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
def synth(out_dir: Path, size_px: int, seed: int, tiles: tuple[str, ...]) -> None:
    """Write synthetic products (SAFE, JP2), a CLC GeoPackage and the ground truth."""
    from ben_builder.synth.products import demo_recipes
    from ben_builder.synth.writer import check_size_px, write_dataset

    try:
        check_size_px(size_px)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--size-px") from exc

    @_friendly
    def run() -> None:
        recipes = [r for r in demo_recipes() if not tiles or r.tile_id in tiles]
        if not recipes:
            raise click.BadParameter(f"no demo products for tiles {tiles}")
        written = write_dataset(recipes, out_dir, size_px=size_px, seed=seed)
        click.echo(f"{len(written.products)} products, CLC {written.clc} under {out_dir}")

    run()


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
    from ben_builder.process import Options

    options = Options(clc_path=clc, layout=layout, verify=verify, force=force)  # type: ignore[arg-type]
    with archive.output_lock(out, "ben-builder patch/process"):
        _process_locally(products, out, options, fail_fast, duplicates)


def _process_locally(
    products: tuple[Path, ...], out: Path, options: Any, fail_fast: bool, duplicates: str
) -> None:
    from ben_builder.process import process_product
    from ben_builder.safe import decoder_environ, select_products

    os.environ.update(decoder_environ())  # one decoding thread here: as the workers decode

    chosen, dropped = select_products(products, duplicates)
    if options.layout in ("v1", "both"):
        from ben_builder.preflight import check_v1_names

        check_v1_names(list(chosen))
    for d in dropped:
        click.echo(f"skipped {d.path.name}: {d.reason}", err=True)
    failures: list[tuple[Path, str]] = []
    warnings: list[str] = []
    with tqdm(total=len(chosen), unit="product", desc="products", disable=None) as bar:
        for path in chosen:
            with tqdm(unit="patch", desc=path.name[:44], leave=False, disable=None) as pbar:
                try:
                    s = process_product(path, out, options, on_patch=pbar.update)
                except BenBuilderError as exc:
                    if fail_fast:
                        raise
                    failures.append((path, str(exc)))
                    log.error("%s", exc)
                else:
                    tqdm.write(s.line() + (" (already done)" if s.skipped else ""))
                    warnings += [f"{path.name}: {w}" for w in s.warnings]
            bar.update()
    counts = archive.finalize(out, layout=options.layout)
    click.echo(f"metadata: {counts['metadata']} patches, flagged: {counts['flagged']} -> {out}")
    for w in warnings:
        click.echo(f"WARNING {w}", err=True)
    if failures:
        for path, msg in failures:
            click.echo(f"FAILED {path.name}: {msg}", err=True)
        raise SystemExit(1)
    if counts["metadata"] + counts["flagged"] == 0:
        click.echo(f"FAILED: no patch was produced in {out}", err=True)
        raise SystemExit(1)


_products_arg = click.argument("products", nargs=-1, required=True, type=click.Path(path_type=Path))
_out_opt = click.option("--out", type=click.Path(path_type=Path), required=True,
                        help="Archive root folder.")  # fmt: skip
_layout_opt = click.option(
    "--layout",
    type=click.Choice(["v2", "v1", "both"]),
    default="v2",
    show_default=True,
    help="BigEarthNet v2 layout, v1 layout or both.",
)
_ff_opt = click.option("--fail-fast", is_flag=True, help="Stop at the first failing product.")
_verify_opt = click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Check each product against its manifest.safe checksums and zip CRCs before cutting.",
)
_force_opt = click.option(
    "--force",
    is_flag=True,
    help="Redo every product, even those already made from the same inputs.",
)
_dup_opt = click.option(
    "--duplicates",
    type=click.Choice(["latest", "fail"]),
    default="latest",
    show_default=True,
    help="Several products of one acquisition: keep the latest generation time, or fail.",
)


@main.command()
@_products_arg
@_out_opt
@click.option(
    "--clc",
    type=click.Path(path_type=Path),
    default=None,
    help="CLC 2018 GeoPackage: also label and screen by labels (else unlabelled).",
)
@_layout_opt
@_ff_opt
@_verify_opt
@_dup_opt
@_force_opt
def patch(products: tuple[Path, ...], out: Path, clc: Path | None, layout: str,
          fail_fast: bool, verify: bool, duplicates: str, force: bool) -> None:  # fmt: skip
    """Cut PRODUCTS (.SAFE folders or .zip) into 1.2 km patches under --out."""
    _friendly(_run_products)(products, out, clc, layout, fail_fast, verify, duplicates, force)


@main.command()
@_products_arg
@_out_opt
@click.option("--clc", type=click.Path(path_type=Path), required=True, help="CLC 2018 GeoPackage.")
@_layout_opt
@_ff_opt
@_verify_opt
@_dup_opt
@_force_opt
def process(products: tuple[Path, ...], out: Path, clc: Path, layout: str,
            fail_fast: bool, verify: bool, duplicates: str, force: bool) -> None:  # fmt: skip
    """Cut, label from CLC 2018 and screen PRODUCTS, writing patches and metadata under --out.

    Prints a per-tile summary: candidates, dropped for no-data, dropped for unlabelled, flagged
    cloud/shadow, flagged snow, kept.
    """
    _friendly(_run_products)(products, out, clc, layout, fail_fast, verify, duplicates, force)


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--fail-fast",
    is_flag=True,
    default=None,
    help="Stop at the first failing product (default: the config's fail_fast).",
)
@_force_opt
@click.option(
    "--check",
    is_flag=True,
    help="Only check inputs, output and disk space, and print what the run would do.",
)
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Exit 0 even if the archive holds no patch (else that is a failure).",
)
def build(
    config: Path, fail_fast: bool | None, force: bool, check: bool, allow_empty: bool
) -> None:
    """Run the whole chain for a run configuration (pipelines/*.yaml).

    Products -> patches -> labels -> screening -> archive -> metadata and split, on a Dask
    cluster (local processes, SLURM, or an existing scheduler), then the run report. Re-running
    skips the products already made from the same inputs (product files, CLC, specs, options,
    version) and redoes the others. Exits 1 if any product failed (after writing the report).
    """
    from ben_builder.config import load_config
    from ben_builder.pipeline import run

    @_friendly
    def go() -> None:
        cfg = load_config(config)
        if check:
            from ben_builder.pipeline import plan_run

            plan, duplicates, missing = plan_run(cfg)
            click.echo(f"{cfg.name}: would build {cfg.output}")
            for line in plan.lines():
                click.echo(line)
            for d in duplicates:
                click.echo(f"would skip {d.path.name}: {d.reason}")
            for m in missing:
                click.echo(f"missing {m.product}: {m.error}")
            if plan.unreadable or missing:  # the run would record them as failures
                click.echo("check FAILED: products above are unreadable or missing", err=True)
                raise SystemExit(1)
            click.echo("check passed" + (" with warnings" if plan.warnings else ""))
            return
        result = run(cfg, fail_fast=fail_fast, force=force)
        click.echo(
            f"{cfg.name}: {result.counts['metadata']} patches in metadata.parquet, "
            f"{result.counts['flagged']} flagged; report {result.report}"
        )
        for d in result.skipped:
            click.echo(f"skipped {d.path.name}: {d.reason}", err=True)
        for w in result.warnings:
            click.echo(f"WARNING {w}", err=True)
        if result.failures:
            for r in result.failures:
                click.echo(f"FAILED {r.product} [{r.stage}]: {r.error}", err=True)
            raise SystemExit(1)
        if result.produced_nothing and not allow_empty:
            click.echo(
                f"FAILED: the run produced no patch (see the warnings above and {result.report}; "
                "--allow-empty accepts that)",
                err=True,
            )
            raise SystemExit(1)

    go()


@main.command("cluster-script")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def cluster_script(config: Path) -> None:
    """Print the SLURM job script the configuration's cluster settings generate."""
    from ben_builder.config import load_config
    from ben_builder.pipeline import make_slurm_cluster

    @_friendly
    def go() -> None:
        cfg = load_config(config)
        if cfg.cluster.kind != "slurm":
            raise click.UsageError(f"{config}: cluster kind is {cfg.cluster.kind!r}, not 'slurm'")
        cluster = make_slurm_cluster(cfg.cluster)
        try:
            click.echo(cluster.job_script())
        finally:
            cluster.close()

    go()


def _hub_options(fn: F) -> F:
    opts = [
        click.option("--backend", type=click.Choice(["cdse", "dhus"]), default="cdse",
                     show_default=True, help="Copernicus Data Space, or a DHuS hub."),
        click.option("--api-url", help="DHuS base URL, e.g. https://<mirror>/dhus/."),
        click.option("--catalogue-url", default=CdseEndpoints.catalogue, show_default=True),
        click.option("--download-url", default=CdseEndpoints.download, show_default=True),
        click.option("--token-url", default=CdseEndpoints.token, show_default=True),
    ]  # fmt: skip
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _settings(backend: str, api_url: str | None, catalogue_url: str, download_url: str,
              token_url: str) -> HubSettings:  # fmt: skip
    return HubSettings(backend=backend, api_url=api_url,
                       endpoints=CdseEndpoints(catalogue_url, download_url, token_url))  # fmt: skip


@main.command()
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
def search(backend: str, api_url: str | None, catalogue_url: str, download_url: str,
           token_url: str, tiles: tuple[str, ...], bbox: tuple[float, ...] | None,
           geojson: Path | None, start: Any, end: Any, level: str, max_cloud: float | None,
           names: Path | None, out: Path) -> None:  # fmt: skip
    """Search a hub and write a product manifest (id, name, size, checksums, footprint, online)."""
    from ben_builder.hub.manifest import write_manifest
    from ben_builder.hub.query import Query, area_from_bbox, area_from_geojson

    @_friendly
    def go() -> None:
        area = area_from_geojson(geojson) if geojson else None
        if bbox:
            area = area_from_bbox((bbox[0], bbox[1], bbox[2], bbox[3]))
        wanted = (
            tuple(x.strip() for x in names.read_text().splitlines() if x.strip()) if names else ()
        )
        query = Query(level=level, start=start.date() if start else None,
                      end=end.date() if end else None, area_wkt=area, tiles=tiles,
                      max_cloud=max_cloud, names=wanted)  # fmt: skip
        hub = make_backend(_settings(backend, api_url, catalogue_url, download_url, token_url),
                           need_credentials=backend != "cdse")  # fmt: skip
        items = hub.search(query)
        write_manifest(out, items)
        size = sum(i.size or 0 for i in items) / 1e9
        offline = sum(not i.online for i in items)
        click.echo(f"{len(items)} products ({size:.1f} GB, {offline} offline) -> {out}")

    go()


@main.command()
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
def download(manifest: Path, backend: str, api_url: str | None, catalogue_url: str,
             download_url: str, token_url: str, out: Path, max_concurrent: int,
             offline_rounds: int, offline_wait: float) -> None:  # fmt: skip
    """Download the products of a MANIFEST, resuming and verifying each (MD5, BLAKE3)."""
    from ben_builder.hub.manifest import read_manifest
    from ben_builder.hub.transfer import TransferPolicy, download_all

    @_friendly
    def go() -> None:
        items = read_manifest(manifest)
        hub = make_backend(_settings(backend, api_url, catalogue_url, download_url, token_url))
        policy = TransferPolicy(max_concurrent=max_concurrent, offline_rounds=offline_rounds,
                                offline_wait_s=offline_wait)  # fmt: skip
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

    go()


@main.command()
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
    help="BigEarthNet-S1 folder: also encode each patch's s1_name (VV, VH).",
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None,
    help="Reading processes (default 1); the output does not depend on it.",
)  # fmt: skip
def encode(archive_root: Path, out: Path, s1_root: Path | None, workers: int | None) -> None:
    """Encode a BigEarthNet-v2-layout archive (ours or the official one) in rico-hdl's layout.

    One LMDB: key <patch> -> safetensors of the native-resolution bands, <patch>_reference_map
    -> {"Data": CLC codes}, <s1_name> -> {"VV", "VH"} with --s1. Every patch of both metadata
    parquets is encoded (recommended and cloudy/snowy ones).
    """
    from ben_builder.encode import encode_archive

    @_friendly
    def go() -> None:
        with tqdm(unit="patch", desc="encode", disable=None) as bar:
            s = encode_archive(archive_root, out, s1_root, on_patch=bar.update, workers=workers)
        click.echo(f"{s.patches} patches {'already ' if s.skipped else ''}encoded in {s.db}")

    go()


@main.command()
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
def compare(archive_root: Path, reference: Path, report_path: Path | None, every: int) -> None:
    """Compare an archive with a published release; exit 1 on any difference.

    Patches only on one side, the parquet schemas, agreement per metadata column (and which parquet
    each patch is in), pixel-equal band files and reference maps.
    """
    from ben_builder.compare import compare_archives, report_markdown

    @_friendly
    def go() -> None:
        with tqdm(unit="patch", desc="compare files", disable=None) as bar:
            c = compare_archives(archive_root, reference, every=every, on_patch=bar.update)
        path = report_path or archive_root / "report" / "compare.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report_markdown(c))
        differing = [f"{k} ({a.differ:,} of {a.compared:,})"
                     for k, a in {**c.columns, **c.files}.items() if a.differ]  # fmt: skip
        click.echo(
            f"{'identical' if c.identical else 'DIFFERENT'}: {c.patches_built:,} vs "
            f"{c.patches_reference:,} patches, {len(c.only_built):,} only built, "
            f"{len(c.only_reference):,} only in the reference; report: {path}"
        )
        for line in differing + [f"schema: {k}: {v}" for k, v in c.schema.items()]:
            click.echo(f"  differs: {line}")
        if not c.identical:
            raise SystemExit(1)

    go()


def _need_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(
            "training needs PyTorch: pip install -e '.[train]' (or make train)"
        ) from exc


@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def train(config: Path) -> None:
    """Train a model on an encoded archive (resumes from last.pt), then evaluate it on test."""
    _need_torch()
    from ben_builder.train.config import load_train_config
    from ben_builder.train.engine import BEST, evaluate
    from ben_builder.train.engine import train as run_train

    @_friendly
    def go() -> None:
        cfg = load_train_config(config)
        with tqdm(unit="step", desc=cfg.name, disable=None) as bar:

            def step(_: int, loss: float) -> None:
                bar.update()
                bar.set_postfix(loss=f"{loss:.3f}")

            state = run_train(cfg, on_step=step)
        click.echo(f"best validation macro AP {state['best_ap']:.4f} after {state['epoch']} epochs")
        results = evaluate(cfg.output / BEST)
        m, b = results["model"], results["baseline_train_frequencies"]
        click.echo(
            f"test: macro AP {m['average_precision_macro']:.4f} (baseline "
            f"{b['average_precision_macro']:.4f}), micro F1 {m['f1_micro']:.4f} "
            f"-> {cfg.output / 'results.md'}"
        )

    go()


@main.command()
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--split", type=click.Choice(["test", "validation", "train"]), default="test", show_default=True
)
@click.option(
    "--encoded",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Encoded archive to evaluate on (default: the one the model was trained on).",
)
@click.option(
    "--bands",
    help="The model's input bands in order, comma-separated (needed for a model "
    "trained elsewhere), e.g. B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,B12.",
)
@click.option(
    "--class-order",
    type=click.Choice(["official", "alphabetical"]),
    help="Order of a foreign model's outputs (configilm-trained models: alphabetical).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the tables (default: next to the checkpoint).")  # fmt: skip
def evaluate(checkpoint: Path, split: str, encoded: Path | None, bands: str | None,
             class_order: str | None, out: Path | None) -> None:  # fmt: skip
    """Evaluate a checkpoint: results table, per-class table (and training curve) next to it.

    CHECKPOINT is a best.pt/last.pt from `ben-builder train`, or a model trained elsewhere: a
    torchvision ResNet-50 state dict (or a Lightning checkpoint of one) with --encoded, --bands
    and, if its outputs are in alphabetical order, --class-order alphabetical.
    """
    _need_torch()
    from ben_builder.train.engine import evaluate as run_eval

    band_list = tuple(b.strip() for b in bands.split(",")) if bands else None

    @_friendly
    def go() -> None:
        results = run_eval(checkpoint, split, out=out, encoded=encoded, bands=band_list,
                           class_order=class_order)  # fmt: skip
        for k, v in results["model"].items():
            click.echo(
                f"{k:28s} {v:.4f}  (baseline {results['baseline_train_frequencies'][k]:.4f})"
            )

    go()


if __name__ == "__main__":
    main()
