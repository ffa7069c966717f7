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
from typing import Any, Literal

import numpy as np
import pandas as pd
import rasterio.features
from rasterio.crs import CRS
from shapely.geometry import Polygon

from ben_builder import archive, bigearthnet, specs
from ben_builder.archive import provenance
from ben_builder.archive.finalize import remove_product
from ben_builder.archive.shards import shard_writer
from ben_builder.archive.writer import BandWriter, v1_metadata
from ben_builder.chain.bandstream import BandStream
from ben_builder.chain.stages import WRITE_OVERLAPPED, Stages
from ben_builder.files import write_json, write_parquet
from ben_builder.patches.clc import rasterize_codes, read_clc
from ben_builder.patches.grid import PatchGrid, split_for
from ben_builder.patches.labels import PatchLabels, label_patches
from ben_builder.patches.screen import (
    MaskSet,
    Screening,
    masks_from_classi,
    masks_from_scl,
    nodata_fraction,
    screen,
)
from ben_builder.patches.screen import summary as summary_line
from ben_builder.product.safe import (
    Product,
    open_product,
    product_info,
    read_band,
    read_classi,
    read_cloud_gml,
    read_scl,
)
from ben_builder.runtime import decode_threads

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
        v1_names: ``s2v1_name`` by ``formula`` (``<mission>_MSIL2A_<sensing>_<x>_<y>``, for new
            archives) or from BigEarthNet v1's own table (``bigearthnet``: the published names;
            a patch v1 did not have is dropped, counted as ``dropped_not_in_v1``).
    """

    clc_path: Path | None = None
    layout: Layout = "v2"
    screening: specs.ScreeningSpec = field(default_factory=specs.screening)
    verify: bool = True
    v1_names: Literal["formula", "bigearthnet"] = "formula"
    force: bool = False
    inputs: provenance.Inputs | None = None

    def output_options(self) -> dict[str, Any]:
        """The options that change what a product writes (part of its fingerprint)."""
        return {"layout": self.layout, "v1_names": self.v1_names,
                "screening": self.screening.model_dump()}  # fmt: skip

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


def _masks(product: Product, spec: specs.ScreeningSpec) -> MaskSet:
    if product.level == "L2A":
        return masks_from_scl(read_scl(product), spec)
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
            ((Polygon(ext, holes), 1) for ext, holes in polys), out_shape=(n, n),
            transform=product.tile.transform(60), fill=0, dtype="uint8",
        ).astype(bool)  # fmt: skip
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
    :func:`stage_of`); nothing of the product is marked finished.

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
    stem = product.stem
    part = archive.part_path(out_root, stem)
    summary_file = part.with_suffix(".json")
    inputs = options.run_inputs(out_root)
    fingerprint = provenance.product_fingerprint(Path(path), inputs)
    if part.exists() and summary_file.exists():
        recorded = json.loads(summary_file.read_text())
        if recorded.get("fingerprint") == fingerprint and not options.force:
            done = ProductSummary(**recorded)
            done.skipped = True
            with suppress(OSError, ValueError):
                done.seconds = json.loads(_timings_path(out_root, stem).read_text())
            log.info("skip %s: already in the archive, made from the same inputs", stem)
            return done
        why = "--force" if options.force else "its inputs changed since it was made"
        log.info("redo %s: %s", stem, why)
    removed = remove_product(out_root, stem)
    if removed:
        log.info("%s: removed %d files of an earlier or interrupted run", stem, removed)

    verification = None
    if options.verify:
        with stages("verify"):
            verification = _verified(Path(path), part.with_suffix(".verified.json"))

    band_spec = specs.bands()
    grid = PatchGrid(product.tile, band_spec.patch_size_m)
    clc_spec, nom = specs.clc(), specs.nomenclature()
    order = sorted(band_spec.bands, key=lambda b: b.resolution_m)  # the longest decodes first
    band_threads, per_band = decode_threads(threads, len(order))
    decoders = ThreadPoolExecutor(band_threads, thread_name_prefix="ben-band-decoder")
    stream: BandStream | None = None

    def start_decoding() -> dict[Future[np.ndarray], specs.Band]:
        return {decoders.submit(_decode_band, product, b.name, b.resolution_m,
                                per_band): b for b in order}  # fmt: skip

    try:
        # with cores to spare, bands decode while the labels and masks are made; on one core
        # they start after them, so no decoded band waits in memory for the labels
        of = start_decoding() if threads > 1 else {}
        codes = None
        labels = None
        keep_labels = np.ones(grid.shape, bool)
        if options.clc_path is not None:  # labels first: the band files are written as bands decode
            with stages("label"):
                polygons = read_clc(Path(options.clc_path), product.tile, clc_spec)
                codes = rasterize_codes(polygons, product.tile, int(clc_spec.no_polygon_code))
                labels = label_patches(grid.blocks(codes, 10), nom, clc_spec)
                keep_labels = labels.unlabeled_fraction < nom.max_unlabeled_fraction
        with stages("screen"):
            masks = _masks(product, options.screening)
        table_names = (
            bigearthnet.v1_names_of(product.name.name)
            if options.v1_names == "bigearthnet"
            else None
        )
        wanted = keep_labels.copy()
        if table_names is not None:  # v2 is a subset of v1: a patch v1 did not have is not in v2
            in_table = np.zeros(grid.shape, bool)
            for x, y in table_names:
                if 0 <= y < grid.shape[0] and 0 <= x < grid.shape[1]:
                    in_table[y, x] = True
            wanted &= in_table
        writer = BandWriter(CRS.from_epsg(product.tile.epsg), band_spec.resolutions_m,
                                    band_spec.patch_size_m)  # fmt: skip
        if options.layout != "lmdb":  # the LMDB shard takes a patch's bands together
            folders, maps = _patch_folders(product, grid, wanted, options, table_names, out_root,
                                           with_maps=codes is not None)  # fmt: skip
            stream = BandStream(writer, grid, folders, maps, writers=threads)
        if not of:
            of = start_decoding()
        bands: dict[str, np.ndarray] = {}
        nodata = np.zeros(grid.shape)
        finished = as_completed(list(of))
        for _ in order:
            with stages("read_bands"):
                fut = next(finished)
                b, arr = of.pop(fut), fut.result()  # held here only: released once written
                del fut
            with stages("screen"):
                nodata = np.maximum(nodata, nodata_fraction(grid, [(arr, b.resolution_m)],
                                                            band_spec.nodata))  # fmt: skip
            if stream is None:
                bands[b.name] = arr
            else:  # written in the background while other bands decode
                drop_so_far = nodata > options.screening.nodata_max_fraction
                with stages("write"):
                    stream.submit(b.name, b.resolution_m, arr, wanted & ~drop_so_far)
                    if codes is not None and not stream.maps_submitted:  # with the first band
                        stream.submit_maps(codes, wanted & ~drop_so_far)
            del arr
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

    s = ProductSummary(product=product.name.name, tile_id=product.name.tile_id, level=product.level,
                       product_info=product_info(product), verification=verification,
                       fingerprint=fingerprint, inputs=asdict(inputs))  # fmt: skip
    uncovered = int(clc_spec.no_polygon_code)
    if codes is not None and not np.any(codes != uncovered):
        s.warnings.append(
            f"no CLC polygon covers tile {product.name.tile_id} in {options.clc_path}; every "
            "patch is unlabeled (is the CLC file the right one for this region?)"
        )
    with stages("write"):
        rows = _write_patches(product, grid, bands, codes, labels, keep_labels, scr, options,
                              out_root, s, on_patch, table_names)  # fmt: skip
    if s.kept == 0:
        s.warnings.append(f"no patch kept of {s.candidates} candidates ({summary_line(asdict(s))})")
    for w in s.warnings:  # data in the summary; the CLI and the run report print them once
        log.info("%s: %s", product.name.name, w)
    s.seconds = {k: round(v, 3) for k, v in stages.seconds.items()}
    part.parent.mkdir(parents=True, exist_ok=True)
    # content files hold no run facts (timings): two runs of the same inputs give the same bytes
    record = {k: v for k, v in asdict(s).items() if k not in ("seconds", "skipped")}
    timings = _timings_path(out_root, stem)
    timings.parent.mkdir(parents=True, exist_ok=True)
    write_json(timings, s.seconds)
    write_json(summary_file, record)  # the summary first: the part marks completion
    write_parquet(part, pd.DataFrame(rows, columns=_PART_COLUMNS))
    log.info(s.line())
    return s


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


def _decode_band(product: Product, band: str, resolution_m: int, gdal_threads: int) -> np.ndarray:
    """One band, decoded in a decoder thread with its own OpenJPEG thread count."""
    with rasterio.Env(GDAL_NUM_THREADS=gdal_threads):
        return read_band(product, band, resolution_m)


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
    grid: PatchGrid,
    bands: dict[str, np.ndarray],
    codes: np.ndarray | None,
    labels: PatchLabels | None,
    keep_labels: np.ndarray,
    scr: Screening,
    options: Options,
    out_root: Path,
    s: ProductSummary,
    on_patch: Callable[[int], None] | None,
    table_names: dict[tuple[int, int], str] | None,
) -> list[dict[str, object]]:
    """Count, write what the band stream did not (v1 JSON, shards) and list the rows.

    ``bands`` holds the decoded bands only for the ``lmdb`` layout; the other layouts' band
    files and reference maps were written by :class:`BandStream`.
    """
    band_spec = specs.bands()
    crs = CRS.from_epsg(product.tile.epsg)
    res_of = {b.name: b.resolution_m for b in band_spec.bands}
    blocks = {name: grid.blocks(arr, res_of[name]) for name, arr in bands.items()}
    code_blocks = grid.blocks(codes, 10) if codes is not None else None
    stem = product.stem
    shard_path = archive.shard_path(out_root, stem) if options.layout == "lmdb" else None
    with shard_writer(shard_path) as shard:
        acq_date = product.name.sensing_time.strftime("%Y-%m-%d %H:%M:%S")
        rows: list[dict[str, object]] = []
        for p in grid:
            s.candidates += 1
            if on_patch is not None:
                on_patch(1)
            if scr.drop_nodata[p.y, p.x]:
                s.dropped_nodata += 1
                continue
            if not keep_labels[p.y, p.x]:
                s.dropped_unlabeled += 1
                continue
            patch_id = p.name(stem)
            if table_names is not None:
                s2v1 = table_names.get((p.x, p.y))
                if s2v1 is None:  # v2 is a subset of v1: a patch v1 did not have is not in v2
                    s.dropped_not_in_v1 += 1
                    continue
            else:
                s2v1 = v1_name(product, p.x, p.y)
            cs, sn = bool(scr.cloud_or_shadow[p.y, p.x]), bool(scr.snow[p.y, p.x])
            s.flagged_cloud_or_shadow += cs
            s.flagged_snow += sn
            s.kept += 1
            c19, c43 = labels.names_at(p.x, p.y) if labels is not None else ([], [])
            if shard is not None:
                shard.put(patch_id, {name: blk[p.y, p.x] for name, blk in blocks.items()})
                if code_blocks is not None:
                    shard.put(f"{patch_id}_reference_map", {"Data": code_blocks[p.y, p.x]})
            if options.layout in ("v2", "both"):
                s.files_written += len(band_spec.bands)  # by the band stream
                s.files_written += code_blocks is not None  # the map, by the band stream too
            if options.layout in ("v1", "both"):
                s.files_written += len(band_spec.bands)  # by the band stream
                folder = out_root / archive.V1_DIR / s2v1
                meta = v1_metadata(c43, p.bounds_m, crs, product.name.name, acq_date)
                write_json(folder / f"{s2v1}_labels_metadata.json", meta)
            rows.append(
                {
                    "patch_id": patch_id,
                    "labels": c19,
                    "split": split_for(p, product.tile),
                    "country": None,
                    "s1_name": None,
                    "s2v1_name": s2v1,
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
            )
    if shard is not None:  # entries, for this layout
        s.files_written += shard.entries
    return rows


_PART_COLUMNS = [
    *archive.METADATA_COLUMNS, "flagged", "labels43", "product", "tile_id", "x", "y", "epsg",
    "ulx_m", "uly_m",
]  # fmt: skip
