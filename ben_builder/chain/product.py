"""Process one product: read bands, cut the grid, label, screen, write patches and metadata.

This is the unit of work of the chain (one Dask task per product). It takes paths and small
records, and returns a plain summary; the finished product is marked by its metadata part
``_parts/<product>.parquet``, so a re-run skips it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd
import rasterio.features
from rasterio.crs import CRS
from shapely.geometry import Polygon

from ben_builder import archive, bigearthnet, specs
from ben_builder.archive import provenance
from ben_builder.archive.finalize import remove_product
from ben_builder.archive.shards import ShardWriter, shard_writer
from ben_builder.archive.writer import BandWriter, v1_metadata
from ben_builder.bigearthnet import Reproduction
from ben_builder.chain.bandstream import BandStream
from ben_builder.chain.stages import WRITE_OVERLAPPED, Stages
from ben_builder.errors import BenBuilderError
from ben_builder.files import write_json, write_parquet
from ben_builder.patches.aoi import patches_in
from ben_builder.patches.clc import rasterize_codes, read_clc
from ben_builder.patches.grid import Patch, PatchGrid, split_for
from ben_builder.patches.labels import PatchLabels, label_patches
from ben_builder.patches.overlap import kept_places
from ben_builder.patches.screen import (
    MaskSet,
    Screening,
    masks_from_classi,
    masks_from_scl,
    nodata_fraction,
    screen,
)
from ben_builder.patches.screen import summary as summary_line
from ben_builder.product.names import ProductName
from ben_builder.product.reader import is_safe, open_product
from ben_builder.product.safe import (
    Product,
    Window10m,
    product_info,
    read_band,
    read_classi,
    read_cloud_gml,
    read_scl,
)
from ben_builder.runtime import decode_threads, gdal_env

log = logging.getLogger(__name__)

Layout = Literal["v2", "v1", "both", "lmdb"]


@dataclass(frozen=True)
class Options:
    """How to process products.

    Attributes:
        clc_path: CLC GeoPackage; ``None`` writes unlabelled patches (no label filtering).
        layout: ``v2`` (BigEarthNet v2 folders), ``v1`` (v1 folders with JSON labels), both, or
            ``lmdb`` (no GeoTIFFs: the patches go straight into rico-hdl's LMDB, for training).
        screening: Screening thresholds (defaults from ``data_specs/screening.yaml``).
        verify: Check the product against its ``manifest.safe`` checksums (and zip CRCs) before
            cutting it; a passed check is recorded in ``_parts/<product>.verified.json`` and not
            repeated while the product's files are unchanged.
        force: Redo the product even if its recorded fingerprint equals the current one.
        inputs: The run's shared inputs (computed once by the pipeline), or None to compute them.
        v1_names: ``s2v1_name`` by ``formula`` (``<mission>_MSIL2A_<sensing>_<x>_<y>``: the
            folder names of a new archive's v1 layout), ``none`` (null: a new archive without a
            v1 layout, whose patches v1 never had; a formula name would repeat across the
            tiles of one datatake), or from BigEarthNet v1's own table (``bigearthnet``: the
            published names; a patch v1 did not have is dropped, counted as
            ``dropped_not_in_v1``).
        overlap_tiles: Every tile of the archive, so a place where tiles overlap is kept by one
            of them (:mod:`ben_builder.patches.overlap`; counted as ``dropped_overlap``); empty:
            every patch of every tile is kept (a reproduction keeps what v2 kept).
        aoi_wkt: An area of interest (EPSG:4326 WKT): patches that do not intersect it are
            left out (``dropped_outside_aoi``).
    """

    clc_path: Path | None = None
    layout: Layout = "v2"
    screening: specs.ScreeningSpec = field(default_factory=specs.screening)
    verify: bool = True
    v1_names: Literal["formula", "bigearthnet", "none"] = "formula"
    overlap_tiles: tuple[str, ...] = ()
    aoi_wkt: str | None = None
    force: bool = False
    inputs: provenance.Inputs | None = None

    def output_options(self) -> dict[str, Any]:
        """The options that change what a product writes (part of its fingerprint)."""
        return {
            "layout": self.layout,
            "v1_names": self.v1_names,
            "screening": self.screening.model_dump(),
        }

    def run_inputs(self, out_root: Path) -> provenance.Inputs:
        """The shared inputs (given, or computed: CLC digest cached under ``out_root``)."""
        if self.inputs is not None:
            return self.inputs
        return provenance.run_inputs(self.clc_path, self.output_options(), out_root)


@dataclass
class ProductSummary:
    """Counts and timings of one processed product."""

    product: str
    tile_id: str
    level: str
    candidates: int = 0
    dropped_nodata: int = 0
    dropped_unlabeled: int = 0
    dropped_not_in_v1: int = 0
    dropped_overlap: int = 0
    dropped_outside_aoi: int = 0
    flagged_cloud_or_shadow: int = 0
    flagged_snow: int = 0
    kept: int = 0
    files_written: int = 0
    skipped: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    product_info: dict[str, Any] = field(default_factory=dict)
    verification: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    fingerprint: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """Human-readable one-line summary."""
        return f"{self.product}: {summary_line(asdict(self))}"


def _masks(product: Product, spec: specs.ScreeningSpec, window: Window10m | None = None) -> MaskSet:
    if product.level == "L2A":
        return masks_from_scl(read_scl(product, window), spec)
    classi = read_classi(product)
    if classi is not None:
        return masks_from_classi(classi)
    polys = read_cloud_gml(product)
    if polys is None:
        log.warning("%s: no cloud mask; cloud/snow flags stay false", product.path.name)
        return MaskSet(60, None, None)
    n = product.tile.size_px(60)
    cloud = np.zeros((n, n), bool)
    if polys:
        cloud = rasterio.features.rasterize(
            ((Polygon(ext, holes), 1) for ext, holes in polys),
            out_shape=(n, n),
            transform=product.tile.transform(60),
            fill=0,
            dtype="uint8",
        ).astype(bool)
    # MSK_CLOUDS_B00.gml carries no snow information
    return MaskSet(60, cloud, None)


def v1_name(product: Product, x: int, y: int) -> str:
    """BigEarthNet v1 patch name (``S2A_MSIL2A_<sensing>_<x>_<y>``, as v1 and ``s2v1_name``)."""
    return f"{product.name.mission}_MSIL2A_{product.name.sensing_time:%Y%m%dT%H%M%S}_{x}_{y}"


def process_product(
    path: str | Path,
    out_root: str | Path,
    options: Options | None = None,
    on_patch: Callable[[int], None] | None = None,
    threads: int = 1,
) -> ProductSummary:
    """Turn one product into patches in the archive under ``out_root``.

    Stages: ``open``, ``verify``, ``label``, ``screen``, ``read_bands``, ``write``. Labels and
    masks come first, so each band's patch files are written by background writer threads while
    other bands decode (``write_overlapped`` in the timings: their busy time, summed; ``write``:
    the time the product waited for writes). An exception escaping a stage carries its name (see
    :func:`~ben_builder.chain.stages.stage_of`); nothing of the product is marked finished.

    Args:
        path: Product ``.SAFE`` folder or ``.zip``.
        out_root: Archive root.
        options: Processing options.
        on_patch: Called with the number of patches just handled (for progress bars).
        threads: Cores for decoding: bands decode side by side in up to this many threads
            (10 m bands first), each with ``threads // band threads`` OpenJPEG threads
            (``GDAL_NUM_THREADS``). Whole bands in parallel keep every core busy while the
            writer threads (as many) run, where one band at a time on several OpenJPEG threads
            waits for its slowest thread. With more than one, the bands start decoding while
            the labels and masks are made. The speed changes, never the pixels.

    Returns:
        Counts per screening outcome and timings per stage.
    """
    options = options or Options()
    out_root = Path(out_root)
    stages = Stages()
    with stages("open"):
        product = open_product(path)
    inputs = options.run_inputs(out_root)
    fingerprint = provenance.product_fingerprint(Path(path), inputs)
    done = _already_done(out_root, product.stem, fingerprint, options.force)
    if done is not None:
        return done
    removed = remove_product(out_root, product.stem)
    if removed:
        log.info("%s: removed %d files of an earlier or interrupted run", product.stem, removed)
    verification = None
    if options.verify and is_safe(path):  # items and Zarr stores have no manifest.safe
        with stages("verify"):
            record = archive.part_path(out_root, product.stem).with_suffix(".verified.json")
            verification = _verified(Path(path), record)
    cut = _cut(product, options, out_root, stages, threads)
    s = ProductSummary(
        product=product.name.name,
        tile_id=product.name.tile_id,
        level=product.level,
        product_info=product_info(product),
        verification=verification,
        fingerprint=fingerprint,
        inputs=asdict(inputs),
    )
    if cut.codes is not None and not np.any(cut.codes != int(specs.clc().no_polygon_code)):
        s.warnings.append(
            f"no CLC polygon covers tile {product.name.tile_id} in {options.clc_path}; every "
            "patch is unlabeled (is the CLC file the right one for this region?)"
        )
    with stages("write"):
        rows = _write_patches(product, cut, options, out_root, s, on_patch)
    if s.kept == 0:
        s.warnings.append(f"no patch kept of {s.candidates} candidates ({summary_line(asdict(s))})")
    for w in s.warnings:  # data in the summary; the CLI and the run report print them once
        log.info("%s: %s", product.name.name, w)
    s.seconds = {k: round(v, 3) for k, v in stages.seconds.items()}
    _mark_finished(out_root, product.stem, s, rows)
    log.info(s.line())
    return s


def finished_summary(path: Path | str, out_root: Path, options: Options) -> ProductSummary | None:
    """The recorded summary of a product the archive holds from the current inputs, or None.

    Nothing is processed: the product is opened for its name and fingerprint only.
    """
    product = open_product(path)
    fingerprint = provenance.product_fingerprint(Path(path), options.run_inputs(Path(out_root)))
    return _already_done(Path(out_root), product.stem, fingerprint, force=False)


def _already_done(
    out_root: Path, stem: str, fingerprint: str, force: bool
) -> ProductSummary | None:
    """The recorded summary of a product already made from the same inputs (None: redo it)."""
    part = archive.part_path(out_root, stem)
    summary_file = part.with_suffix(".json")
    if not (part.exists() and summary_file.exists()):
        return None
    recorded = json.loads(summary_file.read_text())
    if recorded.get("fingerprint") == fingerprint and not force:
        done = ProductSummary(**recorded)
        done.skipped = True
        with suppress(OSError, ValueError):
            done.seconds = json.loads(_timings_path(out_root, stem).read_text())
        log.info("skip %s: already in the archive, made from the same inputs", stem)
        return done
    why = "--force" if force else "its inputs changed since it was made"
    log.info("redo %s: %s", stem, why)
    return None


def _mark_finished(
    out_root: Path, stem: str, s: ProductSummary, rows: list[dict[str, object]]
) -> None:
    """Write the product's timings, summary and part; the part, last, marks it finished."""
    part = archive.part_path(out_root, stem)
    part.parent.mkdir(parents=True, exist_ok=True)
    # content files hold no run facts (timings): two runs of the same inputs give the same bytes
    record = {k: v for k, v in asdict(s).items() if k not in ("seconds", "skipped")}
    timings = _timings_path(out_root, stem)
    timings.parent.mkdir(parents=True, exist_ok=True)
    write_json(timings, s.seconds)
    write_json(part.with_suffix(".json"), record)  # the summary first: the part marks completion
    write_parquet(part, pd.DataFrame(rows, columns=_PART_COLUMNS))


@dataclass
class Cut:
    """A product cut into its grid: labels, screening and (layout ``lmdb`` only) its bands.

    Attributes:
        grid: The patch grid of the tile.
        bands: Decoded bands by name; only for the ``lmdb`` layout (the other layouts' band
            files and reference maps were written as the bands decoded).
        codes: The CLC codes on the tile's 10 m grid (None without a CLC).
        labels: The labels of every patch (None without a CLC).
        keep_labels: Patches labelled enough to keep.
        screening: The screening outcome of every patch.
        table_names: BigEarthNet v1's names of the product's patches by ``(x, y)``, for a
            reproduction (None: names by formula).
        keep_place: Patches whose place this tile keeps (another tile of the archive keeps the
            others).
        in_aoi: Patches that intersect the area of interest (all without one).
    """

    grid: PatchGrid
    bands: dict[str, np.ndarray]
    codes: np.ndarray | None
    labels: PatchLabels | None
    keep_labels: np.ndarray
    screening: Screening
    table_names: dict[tuple[int, int], str] | None
    keep_place: np.ndarray
    in_aoi: np.ndarray


def _labels(
    product: Product, grid: PatchGrid, clc_path: Path
) -> tuple[np.ndarray, PatchLabels, np.ndarray]:
    """The tile's CLC codes, the patches' labels and which are labelled enough to keep."""
    clc_spec, nom = specs.clc(), specs.nomenclature()
    polygons = read_clc(Path(clc_path), product.tile, clc_spec)
    codes = rasterize_codes(polygons, product.tile, int(clc_spec.no_polygon_code))
    labels = label_patches(grid.blocks(codes, 10), nom, clc_spec)
    return codes, labels, labels.unlabeled_fraction < nom.max_unlabeled_fraction


def _in_table(grid: PatchGrid, table_names: dict[tuple[int, int], str]) -> np.ndarray:
    """The patches of ``grid`` that v1's table names."""
    in_table = np.zeros(grid.shape, bool)
    for x, y in table_names:
        if 0 <= y < grid.shape[0] and 0 <= x < grid.shape[1]:
            in_table[y, x] = True
    return in_table


def _cut(product: Product, options: Options, out_root: Path, stages: Stages, threads: int) -> Cut:
    """Label, mask and decode the product; its band files are written as the bands decode."""
    band_spec = specs.bands()
    grid = PatchGrid(product.tile, band_spec.patch_size_m)
    order = sorted(band_spec.bands, key=lambda b: b.resolution_m)  # the longest decodes first
    band_threads, per_band = decode_threads(threads, len(order))
    decoders = ThreadPoolExecutor(band_threads, thread_name_prefix="ben-band-decoder")
    stream: BandStream | None = None

    in_aoi = np.ones(grid.shape, bool)
    if options.aoi_wkt:
        in_aoi = patches_in(options.aoi_wkt, grid)
    window = _window_of(grid, in_aoi) if options.aoi_wkt else None

    def start_decoding() -> dict[Future[np.ndarray], specs.Band]:
        return {
            decoders.submit(_decode_band, product, b.name, b.resolution_m, per_band, window): b
            for b in order
        }

    try:
        # with cores to spare, bands decode while the labels and masks are made; on one core
        # they start after them, so no decoded band waits in memory for the labels
        of = start_decoding() if threads > 1 else {}
        codes, labels, keep_labels = None, None, np.ones(grid.shape, bool)
        if options.clc_path is not None:  # labels first: the band files are written as bands decode
            with stages("label"):
                codes, labels, keep_labels = _labels(product, grid, options.clc_path)
        with stages("screen"):
            masks = _masks(product, options.screening, window)
        table_names = (
            bigearthnet.v1_names_of(product.name.name)
            if options.v1_names == "bigearthnet"
            else None
        )
        keep_place = np.ones(grid.shape, bool)
        if options.overlap_tiles:
            keep_place = kept_places(
                product.name.tile_id, product.tile, grid, options.overlap_tiles
            )
        wanted = keep_labels & keep_place & in_aoi
        if table_names is not None:  # v2 is a subset of v1: a patch v1 did not have is not in v2
            wanted &= _in_table(grid, table_names)
        if options.layout != "lmdb":  # the LMDB shard takes a patch's bands together
            writer = BandWriter(
                CRS.from_epsg(product.tile.epsg), band_spec.resolutions_m, band_spec.patch_size_m
            )
            folders, maps = _patch_folders(
                product, grid, wanted, options, table_names, out_root, with_maps=codes is not None
            )
            stream = BandStream(writer, grid, folders, maps, writers=threads)
        bands, nodata = _decode(
            of or start_decoding(), order, grid, stream, codes, wanted, options.screening, stages
        )
        with stages("screen"):
            scr = screen(grid, nodata, masks, options.screening)
        with stages("write"):
            if stream is not None:
                stream.finish(drop=scr.drop_nodata)
    finally:
        decoders.shutdown(wait=True, cancel_futures=True)
        if stream is not None:
            stream.close()
    if stream is not None:
        stages.seconds[WRITE_OVERLAPPED] = stream.busy_s
    return Cut(grid, bands, codes, labels, keep_labels, scr, table_names, keep_place, in_aoi)


def _decode(
    of: dict[Future[np.ndarray], specs.Band],
    order: list[specs.Band],
    grid: PatchGrid,
    stream: BandStream | None,
    codes: np.ndarray | None,
    wanted: np.ndarray,
    screening: specs.ScreeningSpec,
    stages: Stages,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Take each band as it decodes: its no-data share, then its files (or keep it for a shard).

    Returns:
        The bands kept (only without a ``stream``) and each patch's largest no-data share.
    """
    nodata_value = specs.bands().nodata
    bands: dict[str, np.ndarray] = {}
    nodata = np.zeros(grid.shape)
    finished = as_completed(list(of))
    for _ in order:
        with stages("read_bands"):
            fut = next(finished)
            b, arr = of.pop(fut), fut.result()  # held here only: released once written
            del fut
        with stages("screen"):
            nodata = np.maximum(
                nodata, nodata_fraction(grid, [(arr, b.resolution_m)], nodata_value)
            )
        if stream is None:
            bands[b.name] = arr
        else:  # written in the background while other bands decode
            drop_so_far = nodata > screening.nodata_max_fraction
            with stages("write"):
                stream.submit(b.name, b.resolution_m, arr, wanted & ~drop_so_far)
                if codes is not None and not stream.maps_submitted:  # with the first band
                    stream.submit_maps(codes, wanted & ~drop_so_far)
        del arr
    return bands, nodata


TIMINGS_DIR = Path("report") / "timings"


def _timings_path(out_root: Path, stem: str) -> Path:
    """Where a product's stage timings are kept: in the report, not among the archive's files."""
    return out_root / TIMINGS_DIR / f"{stem}.json"


def _verified(path: Path, record: Path) -> dict[str, Any]:
    """Verify a product against its manifest once; reuse the record while its files are unchanged.

    Raises:
        CorruptProductError: a checksum, size or zip CRC does not match.
    """
    from ben_builder.product.verify import stat_fingerprint, verify_product

    fingerprint = stat_fingerprint(path)
    if record.exists():
        with suppress(ValueError, OSError):
            done = json.loads(record.read_text())
            if done.get("fingerprint") == fingerprint:
                log.info("%s: verified before, unchanged since", path.name)
                return dict(done["verification"])
    result = verify_product(path).as_dict()
    record.parent.mkdir(parents=True, exist_ok=True)
    write_json(record, {"fingerprint": fingerprint, "verification": result})
    return result


def _decode_band(
    product: Product, band: str, resolution_m: int, gdal_threads: int, window: Window10m | None
) -> np.ndarray:
    """One band, decoded in a decoder thread with its own OpenJPEG thread count.

    rasterio's settings are per thread: the thread takes all of
    :data:`ben_builder.runtime.GDAL_OPTIONS` (remote retries too), not only its thread count.
    """
    with gdal_env(GDAL_NUM_THREADS=gdal_threads):
        return read_band(product, band, resolution_m, window)


def _window_of(grid: PatchGrid, wanted: np.ndarray) -> Window10m:
    """The 10 m pixels of the smallest rectangle of patches holding every ``wanted`` one.

    With an area of interest only these are read: GDAL fetches and decodes the blocks (COG
    tiles, JP2 tiles) they cover, and the rest of the tile stays 0 (no data).
    """
    rows, cols = np.nonzero(wanted)
    if not len(rows):
        return (0, 0, 0, 0)
    side = grid.patch_size_m // 10  # 10 m pixels per patch side
    return (
        int(rows.min()) * side,
        (int(rows.max()) + 1) * side,
        int(cols.min()) * side,
        (int(cols.max()) + 1) * side,
    )


def _patch_folders(
    product: Product,
    grid: PatchGrid,
    wanted: np.ndarray,
    options: Options,
    table_names: dict[tuple[int, int], str] | None,
    out_root: Path,
    with_maps: bool,
) -> tuple[dict[tuple[int, int], list[tuple[Path, str]]], dict[tuple[int, int], Path]]:
    """Where each wanted patch's files go, by ``(y, x)``.

    Returns:
        ``(folder, file prefix)`` of its band files, per layout; and the path of its reference
        map (v2 layout, ``with_maps``).
    """
    out: dict[tuple[int, int], list[tuple[Path, str]]] = {}
    maps: dict[tuple[int, int], Path] = {}
    for y, x in zip(*np.nonzero(wanted), strict=True):
        p = grid.patch(int(x), int(y))
        targets = []
        if options.layout in ("v2", "both"):
            patch_id = p.name(product.stem)
            targets.append((archive.patch_dir(out_root, product.stem, patch_id), patch_id))
            if with_maps:
                maps[p.y, p.x] = archive.refmap_path(out_root, product.stem, patch_id)
        if options.layout in ("v1", "both"):
            s2v1 = table_names[p.x, p.y] if table_names is not None else v1_name(product, p.x, p.y)
            targets.append((out_root / archive.V1_DIR / s2v1, s2v1))
        out[p.y, p.x] = targets
    return out, maps


def _write_patches(
    product: Product,
    cut: Cut,
    options: Options,
    out_root: Path,
    s: ProductSummary,
    on_patch: Callable[[int], None] | None,
) -> list[dict[str, object]]:
    """Count, write what the band stream did not (v1 JSON, shards) and list the rows.

    ``cut.bands`` holds the decoded bands only for the ``lmdb`` layout; the other layouts' band
    files and reference maps were written by :class:`BandStream`.
    """
    shard_path = archive.shard_path(out_root, product.stem) if options.layout == "lmdb" else None
    extra = _ExtraFiles(product, cut, options, out_root)
    rows: list[dict[str, object]] = []
    with shard_writer(shard_path) as shard:
        for p in cut.grid:
            s.candidates += 1
            if on_patch is not None:
                on_patch(1)
            s2v1 = _kept_name(product, p, cut, s)
            if s2v1 is None:
                continue
            if options.v1_names == "none":
                s2v1 = ""
            row = _row(product, p, cut, s2v1, options)
            s.flagged_cloud_or_shadow += bool(row["contains_cloud_or_shadow"])
            s.flagged_snow += bool(row["contains_seasonal_snow"])
            s.kept += 1
            s.files_written += extra.write(p, row, shard)
            rows.append(row)
    if shard is not None:  # entries, for this layout
        s.files_written += shard.entries
    return rows


def _kept_name(product: Product, p: Patch, cut: Cut, s: ProductSummary) -> str | None:
    """The ``s2v1_name`` of a patch kept, or None for a patch dropped (counted in ``s``)."""
    if not cut.in_aoi[p.y, p.x]:  # first: outside the area nothing was read
        s.dropped_outside_aoi += 1
        return None
    if cut.screening.drop_nodata[p.y, p.x]:
        s.dropped_nodata += 1
        return None
    if not cut.keep_labels[p.y, p.x]:
        s.dropped_unlabeled += 1
        return None
    if not cut.keep_place[p.y, p.x]:
        s.dropped_overlap += 1
        return None
    if cut.table_names is None:
        return v1_name(product, p.x, p.y)
    s2v1 = cut.table_names.get((p.x, p.y))
    if s2v1 is None:  # v2 is a subset of v1: a patch v1 did not have is not in v2
        s.dropped_not_in_v1 += 1
    return s2v1


def _row(product: Product, p: Patch, cut: Cut, s2v1: str, options: Options) -> dict[str, object]:
    """A kept patch's metadata row (the published columns, then the archive's own)."""
    cs = bool(cut.screening.cloud_or_shadow[p.y, p.x])
    sn = bool(cut.screening.snow[p.y, p.x])
    c19, c43 = cut.labels.names_at(p.x, p.y) if cut.labels is not None else ([], [])
    return {
        "patch_id": p.name(product.stem),
        "labels": c19,
        "split": split_for(p, product.tile),
        "country": None,
        "s1_name": None,
        "s2v1_name": s2v1 or None,
        "contains_seasonal_snow": sn,
        "contains_cloud_or_shadow": cs,
        "flagged": (cs or sn) and options.screening.exclude_flagged,
        "labels43": c43,
        "product": product.name.name,
        "tile_id": product.name.tile_id,
        "x": p.x,
        "y": p.y,
        "epsg": product.tile.epsg,
        "ulx_m": p.ulx_m,
        "uly_m": p.uly_m,
    }


class _ExtraFiles:
    """What a kept patch gets beside its band files: shard entries and the v1 label JSON."""

    def __init__(self, product: Product, cut: Cut, options: Options, out_root: Path) -> None:
        band_spec = specs.bands()
        res_of = {b.name: b.resolution_m for b in band_spec.bands}
        self.blocks = {name: cut.grid.blocks(arr, res_of[name]) for name, arr in cut.bands.items()}
        self.code_blocks = cut.grid.blocks(cut.codes, 10) if cut.codes is not None else None
        self.n_bands = len(band_spec.bands)
        self.product, self.layout, self.out_root = product, options.layout, out_root
        self.crs = CRS.from_epsg(product.tile.epsg)
        self.acq_date = product.name.sensing_time.strftime("%Y-%m-%d %H:%M:%S")

    def write(self, p: Patch, row: dict[str, object], shard: ShardWriter | None) -> int:
        """Write them for patch ``p``; return the files it has (the band stream's counted too)."""
        files = 0
        patch_id = str(row["patch_id"])
        if shard is not None:
            shard.put(patch_id, {name: blk[p.y, p.x] for name, blk in self.blocks.items()})
            if self.code_blocks is not None:
                shard.put(f"{patch_id}_reference_map", {"Data": self.code_blocks[p.y, p.x]})
        if self.layout in ("v2", "both"):
            files += self.n_bands  # by the band stream
            files += self.code_blocks is not None  # the map, by the band stream too
        if self.layout in ("v1", "both"):
            files += self.n_bands  # by the band stream
            s2v1 = str(row["s2v1_name"])
            labels43 = cast(list[str], row["labels43"])
            meta = v1_metadata(
                labels43, p.bounds_m, self.crs, self.product.name.name, self.acq_date
            )
            write_json(self.out_root / archive.V1_DIR / s2v1 / f"{s2v1}_labels_metadata.json", meta)
        return files


_PART_COLUMNS = [
    *archive.METADATA_COLUMNS,
    "flagged",
    "labels43",
    "product",
    "tile_id",
    "x",
    "y",
    "epsg",
    "ulx_m",
    "uly_m",
]


def v1_names_for(layout: str, rules: Reproduction) -> Literal["formula", "bigearthnet", "none"]:
    """Where a run's ``s2v1_name`` comes from: v1's table, the v1 folders' names, or nowhere."""
    if rules.v1_names == "bigearthnet":
        return "bigearthnet"
    return "formula" if layout in ("v1", "both") else "none"


def overlap_tiles(products: list[Path], overlap: str, rules: Reproduction) -> tuple[str, ...]:
    """The tiles among which each place is kept once (none: every patch kept)."""
    if overlap == "keep" or rules.keeps_overlaps:
        return ()
    tiles = set()
    for p in products:
        try:
            tiles.add(ProductName.parse(p.name).tile_id)
        except BenBuilderError:
            continue  # not a product name: its task reports it
    return tuple(sorted(tiles)) if len(tiles) > 1 else ()
